"""What Bytewax recovery snapshots cost, measured where they are made.

At the end of every epoch (the snapshot interval) Bytewax asks every shard for its whole
state, which we pickle: the cost grows with the open orders, not with the traffic. Each
shard's pickling goes to /metrics (`orderwatch_snapshot_seconds{step}`,
`orderwatch_snapshot_bytes`), and a warning says once when snapshots took more than half
of a minute of wall clock: throughput is then mostly spent on them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orderwatch.pipelines.prometheus_export import Exporter

log = logging.getLogger(__name__)


class SnapshotCost:
    WINDOW_S = 60.0
    WARN_SHARE = 0.5

    def __init__(self, exporter: Exporter, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.exporter = exporter
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()  # worker threads of one process snapshot together
        self._since = clock()
        self._spent = 0.0
        self._warned = False

    def record(self, step: str, shard: str, seconds: float, size: int) -> None:
        """One shard's state pickled: `step` is "orders" or "aggregates"."""
        self.exporter.observe_seconds("orderwatch_snapshot_seconds", (step,), seconds)
        self.exporter.set_per_shard("orderwatch_snapshot_bytes", f"{step}/{shard}", size)
        with self._lock:
            now = self.clock()
            self._spent += seconds
            elapsed = now - self._since
            if elapsed < self.WINDOW_S:
                return
            share, self._since, self._spent = self._spent / elapsed, now, 0.0
            if share <= self.WARN_SHARE or self._warned:
                return
            self._warned = True
        every = f"every {self.interval_s:g} s " if self.interval_s else ""
        log.warning("recovery snapshots %stook %.0f%% of the last %.0f s (pickling the state "
                    "of %s open orders): the pipeline spends most of its time on them; "
                    "snapshot less often (--snapshot-interval, BYTEWAX_SNAPSHOT_INTERVAL)",
                    every, share * 100, elapsed,
                    f"{self.exporter.value('orderwatch_open_orders'):,.0f}")
