"""`metric_anomaly`: a health-metric series leaves its usual shape.

Each closed minute of a watched series (metric, dimension, value) goes through three steps:

1. **A noise-stabilising transform**, so that a distance means the same on every series:
   a count becomes √(x + 3/8) (Anscombe: Poisson noise of σ 1/2 whatever the rate, so
   three scans where one is usual is not five sigma), a success ratio over n
   notifications asin(√x) (binomial noise of σ 1/(2·√n)), a wait log(1 + x).
2. **An EWMA control chart**: the weighted mean of the point's distance from a slow
   baseline forecast (Brown's double exponential smoothing over about four hours, so
   traffic that grows all day is forecast, not flagged), each distance in units of that
   point's noise, the mean in units of its own standard deviation. One bad minute does
   not move it; a creep over an hour does, minute after minute, long before it reaches a
   fixed threshold. The noise is the larger of the transform's and the series' measured
   minute-to-minute noise (a p95 is not a count).
3. **`SeriesAnomaly`**, the detector scored on NAB, on the smoothed level: the minute
   fires only if that level is one the series has not seen (range) or never visits (gap).
   Traffic that rises every morning has been seen before; a gateway failing more every
   minute has not. The detector's shape signal (a block-to-block move never made) does
   not fire the alert: it learns a series' moves over hundreds of blocks, and a series
   armed after a few hours has seen a few dozen, so it would call ordinary moves new.

A series arms only after `metric_anomaly_warmup_points` minutes in a row within the
chart's limits, and `SeriesAnomaly` knows only those minutes: the two phases of
statistical process control, first establish what in-control looks like, then monitor.
A shop's series are in control from the start; a series that is still ramping up (a
pipeline started on an empty system, a carrier added this morning) is not, and learns
until it settles instead of alerting on every step.

A minute fires when the series is armed, the chart is at least `metric_anomaly_min_z`
out and the level is new. The alert resolves after `metric_anomaly_resolve_points` calm
minutes in a row, calm meaning the minute itself is back within half that distance of
the baseline: a series still climbing stays one incident instead of a notification per
new record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import Alert, AlertBook
from orderwatch.detectors.health_metrics import MINUTE, MetricPoint
from orderwatch.detectors.series_anomaly import GAP, SeriesAnomaly
from orderwatch.detectors.series_limit import DEFAULT_CAP, SeriesLimit

COUNTS = frozenset({"events", "orders_created", "carrier_scans", "shipments", "dead_letters",
                    "duplicate_ship_requests"})
# a ratio, and the count of trials it is a share of (emitted for the same minute, before it)
RATIOS = {"callback_success_ratio": "callback_notifications"}
WAITS = frozenset({"lock_wait_p95_ms"})
WATCHED = COUNTS | RATIOS.keys() | WAITS
TRIALS = frozenset(RATIOS.values())

Series = tuple[str, str, str]


def stabilise(metric: str, value: float, trials: float | None) -> tuple[float, float]:
    """The value on a scale where its noise is even, and that noise (0: unknown).

    A count's square root has a standard deviation of 1/2 whatever the rate; the arcsine
    of a ratio's square root, 1/(2·√n) for n trials; a wait's noise is measured.
    """
    if metric in COUNTS:
        return math.sqrt(max(value, 0.0) + 0.375), 0.5
    if metric in RATIOS:
        level = math.asin(math.sqrt(min(max(value, 0.0), 1.0)))
        return level, 0.5 / math.sqrt(trials) if trials else 0.0
    return math.log1p(max(value, 0.0)), 0.0


class Chart:
    """EWMA control chart of a series against its slow baseline.

    Each point's distance from the baseline is divided by the point's own noise, so a
    minute of 50 notifications weighs less than a minute of 5,000; `spread` measures how
    much wider than that the series really is (overdispersion, or an unknown noise).
    """

    __slots__ = ("lam", "last", "mean", "n", "offset", "slow", "spread", "trend")

    def __init__(self, lam: float = 0.1, slow: float = 1 / 240) -> None:
        self.lam = lam
        self.slow = slow
        self.mean: float | None = None
        self.n = 0
        self.last = 0.0
        self.spread = 0.0  # EW mean of |r_t - r_(t-1)| / 1.128: r's standard deviation
        self.offset = 0.0  # EWMA of r, the normalized distance from the baseline
        self.trend = 0.0  # the baseline's slope per point (Brown's double smoothing)

    def update(self, level: float, noise: float) -> tuple[float, float, float]:
        """Learn a point; return the chart's z, this point's own z and the smoothed level."""
        self.n += 1
        if self.mean is None:
            self.mean = level
            return 0.0, 0.0, level
        known = noise > 0
        unit = noise if known else 1.0
        r = (level - self.mean) / unit  # `mean` is already this point's forecast
        self.offset += self.lam * (r - self.offset)
        sigma = max(1.0 if known else 1e-9, self.spread, 1e-4 * abs(self.mean) / unit)
        z = abs(self.offset) / (sigma * math.sqrt(self.lam / (2 - self.lam)))
        z_point = abs(r) / sigma
        smoothed = self.mean + self.offset * unit
        self.spread += 0.02 * (abs(r - self.last) / 1.128 - self.spread)
        self.last = r
        error = level - self.mean
        self.mean += max(2 * self.slow, 1 / self.n) * error + self.trend  # a plain mean at first
        self.trend += self.slow * self.slow * error  # learnt over hours: a creep is not a trend
        return z, z_point, smoothed


class MetricAnomaly:
    name = "metric_anomaly"
    limit: SeriesLimit | None = None  # class default: older snapshots get one when used

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 max_series_per_dimension: int = DEFAULT_CAP) -> None:
        self.limit = SeriesLimit(max_series_per_dimension, self.name)
        self.warmup = thresholds.metric_anomaly_warmup_points
        self.min_z = thresholds.metric_anomaly_min_z
        self.resolve_after = thresholds.metric_anomaly_resolve_points
        self.series: dict[Series, tuple[SeriesAnomaly, Chart]] = {}
        self.trials: dict[tuple[str, str], tuple[float, float]] = {}  # → (bucket, n)
        self.calm: dict[Series, int] = {}
        self.in_control: dict[Series, int] = {}  # consecutive points, until armed
        self.armed: set[Series] = set()
        self.book = AlertBook(self.name, "warning")

    def learn_one(self, point: MetricPoint) -> list[Alert]:
        if not self._admits(point):
            return []
        if point.metric in TRIALS:
            self.trials[(point.dimension, point.dim_value)] = (point.bucket, point.value)
        if point.metric not in WATCHED or not math.isfinite(point.value):
            return []
        key = (point.metric, point.dimension, point.dim_value)
        state = self.series.get(key)
        if state is None:
            state = self.series[key] = (SeriesAnomaly(warmup=self.warmup), Chart())
        detector, chart = state
        expected = chart.mean
        level, noise = stabilise(point.metric, point.value, self._trials(point))
        z, z_point, level = chart.update(level, noise)
        if key not in self.armed:
            if z >= self.min_z:  # not settled: what was learnt so far is no reference
                self.in_control[key] = 0
                self.series[key] = (SeriesAnomaly(warmup=self.warmup), chart)
                return []
            detector.learn_one(level)
            run = self.in_control[key] = self.in_control.get(key, 0) + 1
            if run >= self.warmup:
                self.armed.add(key)
                del self.in_control[key]
            return []
        score = detector.score_one(level)  # no rest period: the alert's lifecycle
        detector.learn_one(level)  # keeps one incident to one notification
        end = point.bucket + MINUTE
        if score >= GAP and z >= self.min_z and expected is not None:
            self.calm[key] = 0
            series = f'{point.metric}{{{point.dimension}="{point.dim_value}"}}'
            alert = self.book.fire(
                key, {"metric": point.metric, point.dimension: point.dim_value,
                      "series": series}, end, round(score, 3),
                f"{series} = {point.value:.4g}, usually about "
                f"{self._natural(point, expected):.4g} ({z:.1f} σ over the last minutes; "
                "a level this series has not seen)",
                f"{series} = {point.value:.4g}，通常约 {self._natural(point, expected):.4g}"
                f"（近几分钟偏离 {z:.1f} σ，该序列未见过的水平）")
            return [alert] if alert is not None else []
        if not self.book.is_firing(key):
            return []
        if z_point >= self.min_z / 2:
            self.calm[key] = 0
            return []
        self.calm[key] = self.calm.get(key, 0) + 1
        if self.calm[key] < self.resolve_after:
            return []
        del self.calm[key]
        alert = self.book.resolve(key, end)
        return [alert] if alert is not None else []

    def _admits(self, point: MetricPoint) -> bool:
        if self.limit is None:
            self.limit = SeriesLimit(what=self.name,
                                     kept=((d, v) for _, d, v in self.series))
        return self.limit.admits(point.dimension, point.dim_value)

    def learn_many(self, points: Iterable[MetricPoint]) -> list[Alert]:
        return [a for p in points for a in self.learn_one(p)]

    def _trials(self, point: MetricPoint) -> float | None:
        if point.metric not in RATIOS:
            return None
        bucket, n = self.trials.get((point.dimension, point.dim_value), (None, None))
        return n if bucket == point.bucket else None

    @staticmethod
    def _natural(point: MetricPoint, level: float) -> float:
        """The baseline back in the series' own unit."""
        if point.metric in COUNTS:
            return max(level, 0.0) ** 2 - 0.375
        if point.metric in RATIOS:
            return math.sin(min(max(level, 0.0), math.pi / 2)) ** 2
        return math.expm1(level)
