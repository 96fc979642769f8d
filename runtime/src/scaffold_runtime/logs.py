"""Structured logs in Cloud Logging's JSON format: one line per event on stdout.

While tracing is on (scaffold_runtime.tracing), every line written inside a span carries its
trace: ``logging.googleapis.com/trace`` (``projects/PROJECT/traces/TRACE_ID`` when
GOOGLE_CLOUD_PROJECT is set), ``…/spanId`` and ``…/trace_sampled``, so Cloud Logging shows
the lines under the trace whichever header (traceparent or x-cloud-trace-context) carried it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from scaffold_runtime import tracing

_LEVELS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
_PROJECT = os.environ.get("GOOGLE_CLOUD_PROJECT", "")


def trace_name(trace_id: str) -> str:
    """A trace id as Cloud Logging wants it: ``projects/PROJECT/traces/ID`` with a project."""
    return f"projects/{_PROJECT}/traces/{trace_id}" if _PROJECT else trace_id


def trace_fields() -> dict:
    """The current span's trace fields for a log entry; empty when tracing is off or no span."""
    ids = tracing.current_ids()
    if ids is None:
        return {}
    return {TRACE_KEY: trace_name(ids[0]), SPAN_KEY: ids[1], SAMPLED_KEY: ids[2]}


def trace_from_metadata(metadata) -> str:
    """The trace id as Cloud Logging wants it, from x-cloud-trace-context or traceparent."""
    trace = ""
    for key, value in metadata or ():
        if key == "x-cloud-trace-context":
            trace = value.split("/", 1)[0]
            break
        if key == "traceparent":  # W3C: version-traceid-spanid-flags
            parts = value.split("-")
            if len(parts) >= 3:
                trace = parts[1]
    if not trace or not trace.isalnum():
        return ""
    return trace_name(trace)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": _LEVELS.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        for key, value in trace_fields().items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str | None = None) -> None:
    """Send every log record to stdout as one JSON line (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL", "INFO")).upper())
