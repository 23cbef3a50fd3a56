"""Bytewax sinks: rows to ClickHouse in batches, alert notifications, Prometheus totals.

ClickHouse rows and alerts go through a single-partition sink owned by the leader process
(process 0), so in a cluster only that process opens ClickHouse (chDB allows one process
per data path) and writes the alert log. The ClickHouse partition flushes in `snapshot()`,
which Bytewax calls at the end of every epoch before it commits the epoch's recovery
snapshot: everything the sources consumed up to a snapshot is in ClickHouse by then, so a
resume from that snapshot loses nothing (replayed rows collapse in ReplacingMergeTree).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from clickhouse_connect.driver.insert import InsertContext

from orderwatch.alerts.outputs import Notifier
from orderwatch.detectors.base import Alert
from orderwatch.pipelines.clickhouse_client import Target, connect, write_lock
from orderwatch.pipelines.clickhouse_schema import COLUMNS
from orderwatch.pipelines.prometheus_export import Exporter

log = logging.getLogger(__name__)
Rows = tuple[str, list[list[Any]]]


class _ClickHousePartition(StatefulSinkPartition[Rows, None]):
    RETRIES = 6

    def __init__(self, target: Target, batch_rows: int, flush_s: float,
                 exporter: Exporter) -> None:
        self.client = connect(target)
        self.database = target.database
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self.exporter = exporter
        self.buffers: dict[str, list[list[Any]]] = {t: [] for t in COLUMNS}
        # One reusable insert context per table (clickhouse-connect's documented reuse).
        # A fresh context per insert asked the server for the column types every time,
        # and each one is a reference cycle holding its rows: only Python's full
        # collections freed them, which then took a quarter of a long replay.
        self.contexts: dict[str, InsertContext] = {}
        self.buffered = 0
        self.last_flush = time.monotonic()

    def write_batch(self, items: list[Rows]) -> None:
        for table, rows in items:
            self.buffers[table].extend(rows)
            self.buffered += len(rows)
        if self.buffered >= self.batch_rows or time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        for table, rows in self.buffers.items():
            if rows:
                self._insert(table, rows)
                self.buffers[table] = []
        self.buffered = 0
        self.last_flush = time.monotonic()

    def _insert(self, table: str, rows: list[list[Any]]) -> None:
        for attempt in range(self.RETRIES):
            started = time.perf_counter()
            try:
                with write_lock:
                    context = self.contexts.get(table)
                    if context is None:
                        context = self.contexts[table] = self.client.create_insert_context(
                            f"{self.database}.{table}", column_names=list(COLUMNS[table]))
                    self.client.insert(data=rows, context=context)
            except Exception as exc:  # the server may be restarting: back off and retry
                self.exporter.inc("orderwatch_clickhouse_write_errors", (table,))
                if attempt == self.RETRIES - 1:
                    raise RuntimeError(f"ClickHouse insert into {table} failed "
                                       f"{self.RETRIES} times: {exc}") from exc
                log.warning("ClickHouse insert into %s failed (%s); retrying", table, exc)
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
            elapsed = time.perf_counter() - started
            self.exporter.observe_seconds("orderwatch_clickhouse_write_seconds", (table,),
                                          elapsed)
            self.exporter.inc("orderwatch_clickhouse_rows_written", (table,), len(rows))
            return

    def snapshot(self) -> None:
        self.flush()

    def close(self) -> None:
        self.flush()


class _LeaderSink(FixedPartitionedSink):
    """One partition, listed only where `leader` is true; feed it `(PART, item)` pairs."""

    PART = "leader"

    def __init__(self, leader: bool) -> None:
        self.leader = leader

    def list_parts(self) -> list[str]:
        return [self.PART] if self.leader else []


class ClickHouseSink(_LeaderSink):
    def __init__(self, target: Target, exporter: Exporter, batch_rows: int = 20_000,
                 flush_s: float = 1.0, leader: bool = True) -> None:
        super().__init__(leader)
        self.target = target
        self.exporter = exporter
        self.batch_rows = batch_rows
        self.flush_s = flush_s

    def build_part(self, step_id: str, for_part: str, resume_state: None
                   ) -> _ClickHousePartition:
        return _ClickHousePartition(self.target, self.batch_rows, self.flush_s, self.exporter)


# An alert and the wall-clock time the input that produced it entered the pipeline.
Notification = tuple[Alert, float]


class _AlertPartition(StatefulSinkPartition[Notification, None]):
    def __init__(self, notifiers: list[Notifier], exporter: Exporter,
                 on_alert: Callable[[Alert], None] | None) -> None:
        self.notifiers = notifiers
        self.exporter = exporter
        self.on_alert = on_alert

    def write_batch(self, items: list[Notification]) -> None:
        for alert, _ in items:
            self.exporter.alert_transition(alert.alert, alert.fingerprint, alert.status)
            for notifier in self.notifiers:
                notifier.send(alert)
            if self.on_alert is not None:
                self.on_alert(alert)
        for notifier in self.notifiers:
            notifier.flush()
        emitted = time.time()
        for alert, ingested_at in items:
            self.exporter.observe_seconds("orderwatch_alert_latency_seconds", (alert.alert,),
                                          emitted - ingested_at)

    def snapshot(self) -> None:
        """Notifiers flush after every batch; at-least-once, so nothing to remember."""

    def close(self) -> None:
        """The runner closes the notifiers."""


class AlertSink(_LeaderSink):
    def __init__(self, notifiers: list[Notifier], exporter: Exporter,
                 on_alert: Callable[[Alert], None] | None = None, leader: bool = True) -> None:
        super().__init__(leader)
        self.notifiers = notifiers
        self.exporter = exporter
        self.on_alert = on_alert

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _AlertPartition:
        return _AlertPartition(self.notifiers, self.exporter, self.on_alert)


class _MetricsPartition(StatelessSinkPartition[Any]):
    def __init__(self, update: Callable[[Any], None]) -> None:
        self.update = update

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            self.update(item)


class MetricsSink(DynamicSink[Any]):
    """Hands pipeline summaries (shard outputs, decoded chunks) to an update function."""

    def __init__(self, update: Callable[[Any], None]) -> None:
        self.update = update

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MetricsPartition:
        return _MetricsPartition(self.update)
