"""Typed errors. The CLI turns each into one readable message and an exit code."""

from __future__ import annotations


class ScaffoldError(Exception):
    """A problem the user can fix. ``hint`` says how."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(ScaffoldError):
    """A wrong name, option or argument."""

    exit_code = 2


class WorkspaceError(ScaffoldError):
    """No workspace, or a broken scaffold.toml."""


class ProtoError(ScaffoldError):
    """protoc rejected a proto; ``message`` carries its file:line:col lines."""


class ConflictError(ScaffoldError):
    """Writing would overwrite something the user owns."""


class ToolError(ScaffoldError):
    """An external tool is missing or failed."""


class LintFailed(ScaffoldError):
    """``proto lint`` found problems (already printed)."""


class StaleError(ScaffoldError):
    """``neuron check`` found neurons behind their proto or scaffold, or hand-edited."""
