"""Adding what is new to user-owned files without touching what the user wrote (libcst)."""

from __future__ import annotations

from pathlib import Path

from generator.writer import Plan

_NOTES: list[str] = []


def merge_user_files(root: Path, plan: Plan, model) -> Plan:
    return plan
