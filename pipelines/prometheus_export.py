"""The `/metrics` endpoint: `orderwatch_*` series in the Prometheus exposition format.

The dataflow hands over pre-aggregated batches (a shard's counts, a histogram of lock
waits), so the exporter keeps its own totals and exposes them through a custom collector
instead of calling `Counter.inc()` once per event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orderwatch.detectors import wait_histogram
from orderwatch.detectors.series_limit import DEFAULT_CAP, SETTING
from orderwatch.events import STREAMS

log = logging.getLogger(__name__)
OTHER = "other"  # the label value of updates beyond a metric's series limit


@dataclass(frozen=True, slots=True)
class Spec:
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]


# Measurement names of detectors/health_metrics.py → exported series.
FROM_MEASUREMENTS = {
    "events": "orderwatch_events",
    "callback_notifications": "orderwatch_callback_notifications",
    "callback_failures": "orderwatch_callback_failures",
    "callback_query_success": "orderwatch_callback_query_success",
    "orders_created": "orderwatch_orders_created",
    "ship_requests": "orderwatch_ship_requests",
    "shipments": "orderwatch_shipments",
    "carrier_scans": "orderwatch_carrier_scans",
    "lock_acquisitions": "orderwatch_lock_acquisitions",
    "lock_failures": "orderwatch_lock_failures",
    "lock_ttl_overruns": "orderwatch_lock_ttl_overruns",
}

SPECS: dict[str, Spec] = {
    "orderwatch_events": Spec("counter", "Input events processed, redeliveries excluded.",
                              ("stream",)),
    "orderwatch_events_redelivered": Spec("counter", "Events dropped as redeliveries "
                                          "(an event_id seen before).", ("stream",)),
    "orderwatch_events_late": Spec("counter", "Events whose minute of health_metrics was "
                                   "final when they arrived (later than the allowed "
                                   "lateness): in late_events of a later minute.", ("stream",)),
    "orderwatch_dead_letters": Spec("counter", "Bad input records sent to the dead letters.",
                                    ("reason",)),
    "orderwatch_callback_notifications": Spec("counter", "Payment notify callbacks received.",
                                              ("gateway",)),
    "orderwatch_callback_failures": Spec("counter", "Notify callbacks answered non-2xx or "
                                         "failing signature verification.", ("gateway",)),
    "orderwatch_callback_query_success": Spec("counter", "Gateway queries answering SUCCESS.",
                                              ("gateway",)),
    "orderwatch_orders_created": Spec("counter", "Orders created.", ("channel",)),
    "orderwatch_ship_requests": Spec("counter", "Ship requests received.", ("warehouse",)),
    "orderwatch_shipments": Spec("counter", "Waybills created and bound.", ("carrier",)),
    "orderwatch_carrier_scans": Spec("counter", "Carrier tracking events.", ("carrier",)),
    "orderwatch_lock_acquisitions": Spec("counter", "Distributed-lock acquisition attempts.",
                                         ("lock_family",)),
    "orderwatch_lock_failures": Spec("counter", "Failed lock acquisitions.", ("lock_family",)),
    "orderwatch_lock_ttl_overruns": Spec("counter", "Locks held longer than their TTL.",
                                         ("lock_family",)),
    "orderwatch_lock_wait_seconds": Spec("histogram", "Time spent waiting for a lock.",
                                         ("lock_family",)),
    "orderwatch_alerts": Spec("counter", "Alert notifications emitted.", ("alert", "status")),
    "orderwatch_alerts_firing": Spec("gauge", "Alerts currently firing.", ("alert",)),
    "orderwatch_open_orders": Spec("gauge", "Orders held in pipeline state.", ()),
    "orderwatch_event_time_watermark_seconds": Spec(
        "gauge", "Event time the pipeline has surely reached (Unix seconds).", ()),
    "orderwatch_callback_success_ratio": Spec(
        "gauge", "Share of accepted notify callbacks in the last closed minute.", ("gateway",)),
    "orderwatch_clickhouse_rows_written": Spec("counter", "Rows written to ClickHouse.",
                                               ("table",)),
    "orderwatch_clickhouse_write_errors": Spec("counter", "Failed ClickHouse inserts "
                                               "(retried).", ("table",)),
    "orderwatch_clickhouse_write_seconds": Spec("histogram", "ClickHouse insert latency.",
                                                ("table",)),
    "orderwatch_series_folded": Spec(
        "counter", "Updates beyond the metric's series limit (" + SETTING + "): counted "
        f"under label value \"{OTHER}\" (counters, histograms) or dropped (gauges).",
        ("metric",)),
    "orderwatch_alert_latency_seconds": Spec(
        "histogram", "Wall-clock time from the input that made an alert due entering the "
        "pipeline to its notification being written (the alert's own event-time threshold "
        "excluded).", ("alert",)),
    "orderwatch_snapshot_seconds": Spec(
        "histogram", "Time to pickle one shard's state for a Bytewax recovery snapshot "
        "(with a recovery directory only).", ("step",)),
    "orderwatch_snapshot_bytes": Spec(
        "gauge", "Size of every shard's latest recovery snapshot, summed.", ()),
}
WRITE_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SNAPSHOT_BOUNDS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BOUNDS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
                    30.0, 60.0)
# the health metrics' log-spaced buckets: their minute partials are merged in as they are
BOUNDS_S = {"orderwatch_lock_wait_seconds": tuple(b / 1000 for b in wait_histogram.BOUNDS_MS),
            "orderwatch_clickhouse_write_seconds": WRITE_BOUNDS_S,
            "orderwatch_alert_latency_seconds": LATENCY_BOUNDS_S,
            "orderwatch_snapshot_seconds": SNAPSHOT_BOUNDS_S}


class Exporter(Collector):
    """Totals of everything OrderWatch exposes; thread-safe; a prometheus_client collector."""

    def __init__(self, max_series: int = DEFAULT_CAP) -> None:
        self.max_series = max_series  # per metric; beyond it, label values become "other"
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {n: {} for n in SPECS}
        self._hists: dict[str, dict[tuple[str, ...], list[float]]] = {}
        self._per_shard: dict[str, dict[str, float]] = {}
        self._firing: dict[str, set[str]] = {}
        for stream in STREAMS:  # rare but known in advance: 0 from the start, so rate() works
            self._values["orderwatch_events_late"][(stream,)] = 0.0

    # --- updates --------------------------------------------------------------------------

    def inc(self, name: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        with self._lock:
            series = self._values[name]
            labels = self._bounded(name, series, labels)
            series[labels] = series.get(labels, 0.0) + amount

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            series = self._values[name]
            # beyond the limit a gauge is dropped: one "other" would show the last value
            if self._bounded(name, series, labels) == labels:
                series[labels] = value

    def _bounded(self, name: str, series: dict, labels: tuple[str, ...]) -> tuple[str, ...]:
        """`labels`, or all "other" if they would be a new series beyond the limit (a
        feed putting ids in a dimension would otherwise grow /metrics without end)."""
        if not labels or labels in series or len(series) < self.max_series:
            return labels
        folded = self._values["orderwatch_series_folded"]
        if (name,) not in folded:
            log.warning("%s has %d series (%s); further label values are counted as %r "
                        "(gauges: dropped)", name, len(series), SETTING, OTHER)
        folded[(name,)] = folded.get((name,), 0.0) + 1
        return (OTHER,) * len(labels)

    def set_per_shard(self, name: str, shard: str, value: float, combine: str = "sum") -> None:
        with self._lock:
            shards = self._per_shard.setdefault(name, {})
            shards[shard] = value
            values = shards.values()
            self._values[name][()] = sum(values) if combine == "sum" else min(values)

    def observe_histogram(self, name: str, labels: tuple[str, ...], bucket_counts: list[float],
                          total: float) -> None:
        """Add pre-bucketed observations: one count per bound, then +Inf, and their sum."""
        with self._lock:
            series = self._hists.setdefault(name, {})
            labels = self._bounded(name, series, labels)
            hist = series.get(labels)
            if hist is None:
                hist = series[labels] = [0.0] * (len(bucket_counts) + 1)
            for i, count in enumerate(bucket_counts):
                hist[i] += count
            hist[-1] += total

    def observe_seconds(self, name: str, labels: tuple[str, ...], seconds: float) -> None:
        """One observation of a histogram in seconds, bucketed by its `BOUNDS_S`."""
        self.observe_histogram(name, labels, buckets(seconds, BOUNDS_S[name]), seconds)

    def alert_transition(self, alert: str, fingerprint: str, status: str) -> None:
        with self._lock:
            firing = self._firing.setdefault(alert, set())
            if status == "firing":
                firing.add(fingerprint)
            else:
                firing.discard(fingerprint)
            self._values["orderwatch_alerts_firing"][(alert,)] = float(len(firing))
            key = (alert, status)
            series = self._values["orderwatch_alerts"]
            series[key] = series.get(key, 0.0) + 1

    def add_measurements(self, cells: dict) -> None:
        """Merge a batch of health-metric partials (see detectors/health_metrics.Partials)."""
        for (_, metric, _, value), amounts in cells.items():
            if metric == "lock_wait_ms":
                self.observe_histogram("orderwatch_lock_wait_seconds", (value,),
                                       amounts[:-1], amounts[-1] / 1000)
            else:
                name = FROM_MEASUREMENTS.get(metric)
                if name is not None:
                    self.inc(name, (value,), amounts[0])

    def value(self, name: str, labels: tuple[str, ...] = ()) -> float:
        with self._lock:
            return self._values[name].get(labels, 0.0)

    def histogram_totals(self, name: str) -> tuple[float, float]:
        """(observations, their sum) over every series of a histogram."""
        with self._lock:
            series = self._hists.get(name, {}).values()
            return sum(sum(h[:-1]) for h in series), sum(h[-1] for h in series)

    def total(self, name: str) -> float:
        with self._lock:
            return sum(self._values[name].values())

    def series(self, name: str) -> dict[tuple[str, ...], float]:
        with self._lock:
            return dict(self._values[name])

    # --- collection -----------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = {n: dict(v) for n, v in self._values.items()}
            hists = {n: {k: list(v) for k, v in h.items()} for n, h in self._hists.items()}
        for name, spec in SPECS.items():
            if spec.kind == "histogram":
                yield self._histogram(name, spec, hists.get(name, {}))
                continue
            family_type = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = family_type(name, spec.help, labels=spec.labels)
            for labels, value in sorted(values[name].items()):
                family.add_metric(list(labels), value)
            yield family

    @staticmethod
    def _histogram(name: str, spec: Spec, series: dict[tuple[str, ...], list[float]]) -> Metric:
        bounds = BOUNDS_S[name]
        family = HistogramMetricFamily(name, spec.help, labels=spec.labels)
        for labels, counts in sorted(series.items()):
            cumulative, running = [], 0.0
            for bound, count in zip((*bounds, float("inf")), counts[:-1], strict=True):
                running += count
                cumulative.append((_le(bound), running))
            family.add_metric(list(labels), cumulative, sum_value=counts[-1])
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def buckets(seconds: float, bounds: tuple[float, ...]) -> list[float]:
    """One observation as per-bucket counts (non-cumulative, then +Inf)."""
    counts = [0.0] * (len(bounds) + 1)
    for i, bound in enumerate(bounds):
        if seconds <= bound:
            counts[i] = 1.0
            return counts
    counts[-1] = 1.0
    return counts


def make_registry(exporter: Exporter) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    return registry
