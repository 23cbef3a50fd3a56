"""`metric_anomaly`: a health-metric series leaves its usual shape.

One `SeriesAnomaly` per series (metric, dimension, value), fed the series' closed minutes
in event-time order. A minute fires when the detector scores it a range or gap anomaly
(a level never seen, or never visited) *and* it lies at least `metric_anomaly_min_z`
noise units from the series' slow baseline: a new record by a hair is not an incident.
The baseline is a mean over about a day (so a creep of an hour does not drag it along)
and the noise is measured on minute-to-minute differences (so the creep does not inflate
it either). The alert resolves after `metric_anomaly_resolve_points` calm minutes.

Not yet wired into the dataflow (issue #4): the class is tested on lists of points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import Alert, AlertBook
from orderwatch.detectors.health_metrics import MINUTE, MetricPoint
from orderwatch.detectors.series_anomaly import GAP, SeriesAnomaly

# The series watched, after the issue: callback health per gateway, lock waits per
# family, traffic per stream and channel, carrier activity.
WATCHED = frozenset({"callback_success_ratio", "lock_wait_p95_ms", "events",
                     "orders_created", "carrier_scans", "shipments"})


class Baseline:
    """A slow mean, and the noise of the series from its minute-to-minute steps."""

    __slots__ = ("last", "mean", "n", "noise", "slow")

    def __init__(self, slow: float = 1 / 1440) -> None:
        self.slow = slow
        self.mean: float | None = None
        self.n = 0
        self.last = 0.0
        self.noise = 0.0  # EW mean of |x_t - x_(t-1)|, about 1.13 σ for white noise

    def deviation(self, x: float) -> float:
        if self.mean is None:
            return 0.0
        sigma = self.noise / 1.128 + 1e-9 + 1e-4 * abs(self.mean)
        return abs(x - self.mean) / sigma

    def learn(self, x: float) -> None:
        self.n += 1
        if self.mean is None:
            self.mean = self.last = x
            return
        self.noise += 0.02 * (abs(x - self.last) - self.noise)
        self.last = x
        self.mean += max(self.slow, 1 / self.n) * (x - self.mean)  # a plain mean at first


class MetricAnomaly:
    name = "metric_anomaly"

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.warmup = thresholds.metric_anomaly_warmup_points
        self.min_z = thresholds.metric_anomaly_min_z
        self.resolve_after = thresholds.metric_anomaly_resolve_points
        self.series: dict[tuple[str, str, str], SeriesAnomaly] = {}
        self.baselines: dict[tuple[str, str, str], Baseline] = {}
        self.calm: dict[tuple[str, str, str], int] = {}
        self.book = AlertBook(self.name, "warning")

    def learn_one(self, point: MetricPoint) -> list[Alert]:
        if point.metric not in WATCHED or math.isnan(point.value) or math.isinf(point.value):
            return []
        key = (point.metric, point.dimension, point.dim_value)
        detector = self.series.get(key)
        if detector is None:
            detector = self.series[key] = SeriesAnomaly(warmup=self.warmup)
            self.baselines[key] = Baseline()
        baseline = self.baselines[key]
        expected = baseline.mean if baseline.mean is not None else point.value
        z = baseline.deviation(point.value)
        score = detector.score_one(point.value)  # no rest period: the alert's lifecycle
        detector.learn_one(point.value)  # keeps one incident to one notification
        baseline.learn(point.value)
        end = point.bucket + MINUTE
        if score >= GAP and z >= self.min_z:
            self.calm[key] = 0
            series = f'{point.metric}{{{point.dimension}="{point.dim_value}"}}'
            alert = self.book.fire(
                key, {"metric": point.metric, point.dimension: point.dim_value,
                      "series": series}, end, round(score, 3),
                f"{series} = {point.value:.4g}, expected about {expected:.4g} "
                f"({z:.1f} σ; a level this series has not seen)")
            return [alert] if alert is not None else []
        if not self.book.is_firing(key):
            return []
        self.calm[key] = self.calm.get(key, 0) + 1
        if self.calm[key] < self.resolve_after:
            return []
        del self.calm[key]
        alert = self.book.resolve(key, end)
        return [alert] if alert is not None else []

    def learn_many(self, points: Iterable[MetricPoint]) -> list[Alert]:
        return [a for p in points for a in self.learn_one(p)]
