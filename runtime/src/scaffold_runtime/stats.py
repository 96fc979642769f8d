"""RPC statistics: per method and status code, a count and latency percentiles.

Latencies go into fixed log-spaced buckets (about 12% wide), so recording a call is a bisect
and two increments, and percentiles come out within a bucket's width.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import NamedTuple

log = logging.getLogger("grpc.stats")
# Bucket upper bounds in seconds: 50 µs to ~2 min.
BOUNDS = tuple(50e-6 * 1.12**i for i in range(130))


class MethodStats(NamedTuple):
    method: str
    code: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float


class RpcStats:
    def __init__(self) -> None:
        self._data: dict[tuple[str, str], list[int]] = {}
        self._lock = threading.Lock()
        self.since = time.time()

    def record(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        bucket = bisect.bisect_left(BOUNDS, seconds)
        counts = self._data.get(key)
        if counts is None:
            with self._lock:
                counts = self._data.setdefault(key, [0] * (len(BOUNDS) + 1))
        counts[bucket] += 1  # a lost increment under a race is acceptable for statistics

    def snapshot(self) -> list[MethodStats]:
        out = []
        for (method, code), counts in sorted(self._data.items()):
            total = sum(counts)
            if not total:
                continue
            out.append(MethodStats(method, code, total, *(self._quantile(counts, total, q) for q in (0.5, 0.9, 0.99))))
        return out

    @staticmethod
    def _quantile(counts: list[int], total: int, q: float) -> float:
        target = q * total
        seen = 0
        for i, c in enumerate(counts):
            seen += c
            if seen >= target:
                return round((BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1]) * 1000, 3)
        return round(BOUNDS[-1] * 1000, 3)

    def log_snapshot(self) -> None:
        for s in self.snapshot():
            log.info("%s %s: %d calls, p50 %.2f ms, p99 %.2f ms", s.method, s.code, s.count, s.p50_ms, s.p99_ms,
                     extra={"fields": {"grpc.method": s.method, "grpc.code": s.code, "count": s.count,
                                       "p50_ms": s.p50_ms, "p90_ms": s.p90_ms, "p99_ms": s.p99_ms}})

    def log_every(self, seconds: float, stop: threading.Event) -> None:
        """Log a snapshot every ``seconds`` until ``stop`` is set (runs in a daemon thread)."""
        def loop() -> None:
            while not stop.wait(seconds):
                self.log_snapshot()

        threading.Thread(target=loop, name="rpc-stats", daemon=True).start()
