"""One shard of aggregate state: per-dimension detectors and health-metric buckets.

Fed by every order shard; its event time is the slowest order shard's watermark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orderwatch.config import Settings
from orderwatch.detectors.base import Alert
from orderwatch.detectors.catalogue import aggregate_detectors
from orderwatch.detectors.health_metrics import MINUTE, HealthMetrics, MetricPoint
from orderwatch.pipelines.order_shard import AggregateInput
from orderwatch.pipelines.watermark import NEVER, MinOfUpstreams


@dataclass(slots=True)
class AggregateOutput:
    shard: str
    watermark: float
    alerts: list[Alert] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)


class AggregateShard:
    def __init__(self, settings: Settings, shard: str = "") -> None:
        self.shard = shard  # set from the first input when built by Bytewax
        self.detectors = aggregate_detectors(settings.thresholds)
        self.metrics = HealthMetrics()
        self.upstreams = MinOfUpstreams(settings.pipeline.order_shards)
        self.now = NEVER

    def process(self, inp: AggregateInput) -> AggregateOutput:
        self.shard = self.shard or inp.shard
        out = AggregateOutput(self.shard, self.now)
        detectors = self.detectors
        for index, key, event in inp.items:
            out.alerts.extend(detectors[index].learn_one(event, key))
        closed_before = int(self.now // MINUTE) if self.now != NEVER else None
        if closed_before is None:
            self.metrics.merge(inp.metric_cells)
        else:  # a minute already emitted is final; later cells only reach Prometheus
            self.metrics.merge({k: v for k, v in inp.metric_cells.items()
                                if k[0] >= closed_before})
        self.upstreams.observe(inp.upstream, inp.watermark)
        mark = self.upstreams.watermark()
        if mark > self.now:
            self.now = mark
            for det in detectors:
                out.alerts.extend(det.advance(mark))
            out.points = self.metrics.close(mark)
        out.watermark = self.now
        return out
