"""Time-bucketed health metrics: what each event measures, and per-minute buckets of them.

`measure()` is the one definition of the health series. Order shards pre-aggregate a
batch's measurements (`Partials`); aggregate shards merge the partials of one dimension
value (all of gateway `alipay`, say) and emit a closed minute once event time passes it
(and, provisionally, the minute the input ended in, once the input has ended).
The same partials feed the Prometheus counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from orderwatch.detectors import wait_histogram
from orderwatch.detectors.callback_health import notify_failed
from orderwatch.detectors.lock_contention import lock_family
from orderwatch.detectors.series_limit import DEFAULT_CAP, SeriesLimit
from orderwatch.events import Event

MINUTE = 60
# Counts of rare things, measured from outside `measure()` (a dead letter has no event; a
# duplicate is a detector's verdict; a late event's own minute was final already). For a
# day after such a series counted, a minute without one is a zero, not a gap, so charts
# and `metric_anomaly` see the quiet minutes.
RARE_COUNTS = frozenset({"dead_letters", "duplicate_ship_requests", "late_events"})
ZERO_FILL_MINUTES = 24 * 60
ZERO_FILLED = "zero-filled health series"  # what the series limit's warning names


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One closed minute of one series: `callback_notifications{gateway="alipay"}`."""

    bucket: float  # start of the minute, event time
    metric: str
    dimension: str
    dim_value: str
    value: float


def measure(event: Event) -> Iterator[tuple[str, str, str, float]]:
    """(metric, dimension, dimension value, amount) for one fresh event."""
    data = event.data
    stream = event.stream
    yield "events", "stream", stream, 1.0
    if stream == "callback":
        gateway = data["gateway"]
        if data["kind"] == "notify":
            yield "callback_notifications", "gateway", gateway, 1.0
            if notify_failed(data):
                yield "callback_failures", "gateway", gateway, 1.0
        elif data["trade_status"] == "SUCCESS":
            yield "callback_query_success", "gateway", gateway, 1.0
        return
    if stream != "order":
        yield "carrier_scans", "carrier", data["carrier"], 1.0
        return
    action = data["action"]
    if action == "create":
        yield "orders_created", "channel", data["channel"], 1.0
    elif action == "ship_request":
        yield "ship_requests", "warehouse", data.get("warehouse") or "unknown", 1.0
    elif action == "ship" and data["result"] == "ok":
        yield "shipments", "carrier", data["carrier"], 1.0
    lock = data.get("lock")
    if lock:
        family = lock_family(lock["key"])
        yield "lock_acquisitions", "lock_family", family, 1.0
        if not lock["acquired"]:
            yield "lock_failures", "lock_family", family, 1.0
        elif lock.get("held_ms") is not None and lock["held_ms"] > lock["ttl_ms"]:
            yield "lock_ttl_overruns", "lock_family", family, 1.0
        yield "lock_wait_ms", "lock_family", family, float(lock["wait_ms"])


class Partials:
    """A batch's measurements summed per (minute, metric, dimension, value).

    Counts add up; `lock_wait_ms` keeps a histogram so p95 survives merging.
    """

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: dict[tuple[int, str, str, str], list[float]] = {}

    def add(self, event: Event) -> None:
        minute = int(event.ts // MINUTE)
        cells = self.cells
        for metric, dim, value, amount in measure(event):
            key = (minute, metric, dim, value)
            if metric == "lock_wait_ms":  # bucket counts, then the sum of waits
                hist = cells.get(key)
                if hist is None:
                    hist = cells[key] = [0.0] * (wait_histogram.WIDTH + 1)
                hist[wait_histogram.bucket(amount)] += 1
                hist[-1] += amount
            else:
                cell = cells.get(key)
                if cell is None:
                    cells[key] = [0.0 + amount]  # a float, as the sum of counts would be
                else:
                    cell[0] += amount

    def count(self, ts: float, metric: str, dim: str, value: str, amount: float = 1.0) -> None:
        """Add to a plain count at event time `ts` (for the `RARE_COUNTS`)."""
        key = (int(ts // MINUTE), metric, dim, value)
        cell = self.cells.get(key)
        if cell is None:
            self.cells[key] = [amount]
        else:
            cell[0] += amount

    def merge(self, other_cells: dict[tuple[int, str, str, str], list[float]]) -> None:
        for key, values in other_cells.items():
            mine = self.cells.get(key)
            if mine is None:
                self.cells[key] = list(values)
            else:
                for i, v in enumerate(values):
                    mine[i] += v

    def split_by_dimension(self) -> dict[tuple[str, str], dict]:
        """Cells grouped by (dimension, value): the unit an aggregate shard owns."""
        out: dict[tuple[str, str], dict] = {}
        for key, values in self.cells.items():
            out.setdefault((key[2], key[3]), {})[key] = values
        return out


class HealthMetrics:
    """Merges partials of the dimensions routed to it; emits minutes event time has passed."""

    # class defaults: snapshots from before these existed get them when first used
    limit: SeriesLimit | None = None
    rare_counted: dict[tuple[str, str, str], int] | None = None

    def __init__(self, max_series_per_dimension: int = DEFAULT_CAP) -> None:
        self.open = Partials()
        self.rare: dict[tuple[str, str, str], int] = {}  # rare count series → last minute
        self.rare_counted: dict[tuple[str, str, str], int] = {}  # → last minute counted
        # rare series zero-filled for a day after each count: a bounded number of them
        self.limit = SeriesLimit(max_series_per_dimension, ZERO_FILLED)
        self.closed_before: int | None = None  # minutes before this one were emitted

    def merge(self, cells: dict) -> dict[str, float]:
        """Add cells of order shards. A minute already emitted is final: later cells for
        it are dropped here (they still reached Prometheus), and the events among them
        are counted as `late_events` in the first open minute. Returns those, by stream."""
        late: dict[str, float] = {}
        if self.closed_before is not None:
            kept = {}
            for key, values in cells.items():
                if key[0] >= self.closed_before:
                    kept[key] = values
                elif key[1] == "events":
                    late[key[3]] = late.get(key[3], 0.0) + values[0]
            cells = kept
            for stream, n in late.items():
                self.open.count(self.closed_before * MINUTE, "late_events", "stream", stream, n)
        self.open.merge(cells)
        return late

    def close(self, now: float) -> list[MetricPoint]:
        """Emit every minute that ended at or before `now`, with derived ratios and p95s.

        Called whenever the watermark moves, many times a minute; only a new minute
        boundary has anything to emit, so the open cells are not scanned otherwise."""
        last_closed = int(now // MINUTE)  # minutes < this index are complete
        if self.closed_before is not None and last_closed <= self.closed_before:
            return []
        self.closed_before = last_closed
        return self._points(last_closed, keep=False)

    def provisional(self, now: float) -> list[MetricPoint]:
        """The minutes still open up to the one `now` falls in, as they stand, left open.

        At the end of input the last minute never closes, yet it is all there will be.
        Should input resume (a file that grew), the minute closes later with all of its
        cells, and its rows replace these (ReplacingMergeTree)."""
        return self._points(int(now // MINUTE) + 1, keep=True)

    def _points(self, before: int, keep: bool) -> list[MetricPoint]:
        self._zero_fill(before)
        cells = self.open.cells
        done: dict[tuple[int, str, str], dict[str, list[float]]] = {}
        for key in [k for k in cells if k[0] < before]:
            minute, metric, dim, value = key
            done.setdefault((minute, dim, value), {})[metric] = (
                cells[key] if keep else cells.pop(key))
        points = []
        for (minute, dim, value), metrics in sorted(done.items()):
            at = float(minute * MINUTE)
            for metric, values in metrics.items():
                if metric == "lock_wait_ms":
                    points.append(MetricPoint(at, "lock_wait_p95_ms", dim, value,
                                              wait_histogram.quantile(values[:-1], 0.95)))
                else:
                    points.append(MetricPoint(at, metric, dim, value, values[0]))
            sent = metrics.get("callback_notifications")
            if sent:
                failed = metrics.get("callback_failures", [0.0])[0]
                points.append(MetricPoint(at, "callback_success_ratio", dim, value,
                                          round(1 - failed / sent[0], 6)))
        return points

    def _zero_fill(self, last_closed: int) -> None:
        cells = self.open.cells
        if self.rare_counted is None:  # a snapshot from before it: as if counted when filled
            self.rare_counted = dict(self.rare)
        first: dict[tuple[str, str, str], int] = {}  # of series never seen before
        counted: dict[tuple[str, str, str], int] = {}  # latest minute with a count
        for (minute, metric, dim, value), amounts in cells.items():
            if metric not in RARE_COUNTS or minute >= last_closed:
                continue
            series = (metric, dim, value)
            if series not in self.rare:
                first[series] = min(first.get(series, minute), minute)
            if amounts[0] and minute > counted.get(series, -1):
                counted[series] = minute
        if self.limit is None:
            self.limit = SeriesLimit(what=ZERO_FILLED, kept=((d, v) for _, d, v in self.rare))
        for series, minute in first.items():
            if self.limit.admits(series[1], series[2]):
                self.rare[series] = minute - 1
        for series, minute in counted.items():
            if series in self.rare:
                self.rare_counted[series] = max(minute, self.rare_counted.get(series, minute))
        for series, last in list(self.rare.items()):
            # zeros for a day after the last count, not for ever: event time jumping 30
            # years ahead (a clock that far off) made 15 million cells per series
            until = min(last_closed, self.rare_counted[series] + ZERO_FILL_MINUTES + 1)
            for minute in range(last + 1, until):
                cells.setdefault((minute, *series), [0.0])
            if until < last_closed:  # quiet for a day: a gap until it counts again
                del self.rare[series], self.rare_counted[series]
            else:
                self.rare[series] = max(last, last_closed - 1)
