"""One shard of aggregate state: per-dimension detectors and health-metric buckets.

Fed by every order shard; its event time is the slowest order shard's watermark. Each
closed minute of the series this shard owns also goes to `metric_anomaly`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orderwatch.config import Settings
from orderwatch.detectors.base import Alert
from orderwatch.detectors.catalogue import aggregate_detectors
from orderwatch.detectors.event_time import ReorderBuffer
from orderwatch.detectors.health_metrics import HealthMetrics, MetricPoint
from orderwatch.detectors.metric_anomaly import MetricAnomaly
from orderwatch.pipelines.order_shard import AggregateInput
from orderwatch.pipelines.watermark import NEVER, MinOfUpstreams


@dataclass(slots=True)
class AggregateOutput:
    shard: str
    watermark: float
    alerts: list[Alert] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)
    late: dict[str, float] = field(default_factory=dict)  # events after their minute closed
    ingested_at: float = 0.0  # of the input that produced it


class AggregateShard:
    # event time at which the open minute was last written provisionally; a class default,
    # so that snapshots from before it existed load too
    provisional_at = NEVER
    # the earliest next_due() of the detectors: before it no advance has anything to do.
    # NEVER (advance at once, then ask) is also what snapshots from before it resume with
    _wake = NEVER

    def __init__(self, settings: Settings, shard: str = "") -> None:
        self.shard = shard  # set from the first input when built by Bytewax
        cap = settings.pipeline.max_series_per_dimension
        self.detectors = aggregate_detectors(settings.thresholds, cap)
        self.metrics = HealthMetrics(cap)
        self.anomaly = MetricAnomaly(settings.thresholds, cap)
        self.upstreams = MinOfUpstreams(settings.pipeline.order_shards)
        self.buffer: ReorderBuffer[tuple[int, str, Any]] = ReorderBuffer()
        self.now = NEVER

    def process(self, inp: AggregateInput) -> AggregateOutput:
        """Merge the order shards' streams and apply them oldest first, like an order shard."""
        self.shard = self.shard or inp.shard
        out = AggregateOutput(self.shard, self.now, ingested_at=inp.ingested_at)
        detectors = self.detectors
        for index, key, ts, tiebreak, payload in inp.items:
            if not self.buffer.push(ts, (tiebreak, index, key), (index, key, payload)):
                self._learn(detectors[index], payload, key, out)
        out.late = self.metrics.merge(inp.metric_cells)
        self.upstreams.observe(inp.upstream, inp.watermark, inp.finished)
        mark = self.upstreams.watermark()
        if mark > self.now:
            for ts, (index, key, payload) in self.buffer.release_timed(mark):
                self._advance(ts, out)
                self._learn(detectors[index], payload, key, out)
            self._advance(mark, out)
            out.points = self.metrics.close(mark)
            out.alerts.extend(self.anomaly.learn_many(out.points))
        if self.upstreams.finished and self.now > self.provisional_at:
            # The input has ended: the minute it ended in is written as it stands, but not
            # judged (a minute cut short is no drop in traffic), and stays open.
            self.provisional_at = self.now
            out.points.extend(self.metrics.provisional(self.now))
        out.watermark = self.now
        return out

    def _learn(self, det: Any, payload: Any, key: str, out: AggregateOutput) -> None:
        out.alerts.extend(det.learn_one(payload, key))
        due = det.next_due()
        if due < self._wake:
            self._wake = due

    def _advance(self, now: float, out: AggregateOutput) -> None:
        if now <= self.now:
            return
        self.now = now
        if now >= self._wake:  # for most items, no detector has anything due
            self._advance_detectors(now, out)

    def _advance_detectors(self, now: float, out: AggregateOutput) -> None:
        for det in self.detectors:
            out.alerts.extend(det.advance(now))
        self._wake = min(det.next_due() for det in self.detectors)
