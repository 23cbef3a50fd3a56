"""The weekly health check (`shared/domain.md`), computed from ClickHouse.

Four checks over an ISO week in the display time zone, judged as of the latest event time
in the data (a replayed week is judged as it would have been on its own Monday):

- pending payment over 2 h: of the orders created in the week and at least 2 h old, the
  share that stayed in `pending_payment` for more than 2 h (healthy below 5%);
- no tracking after 24 h: orders shipped in the week, at least 24 h ago, with no carrier
  scan within 24 h of shipping (healthy: 0);
- settlement failed: of the orders completed in the week, the share without a successful
  `settle` (healthy: 0%);
- ship requests per order: the most distinct ship requests one order received, for orders
  whose first ship request fell in the week (healthy: below 2), and how many had 2 or more.

Each check is one query grouped by local day over both weeks, so the same rows give the
week's figure, the week before and the daily trend. Values in the SQL are our own numbers
(epoch seconds) and the checked database name, never user text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.engine.state_machine import FINISHED
from orderwatch.timestamps import zone

Query = Callable[[str], tuple[list[str], list[tuple]]]
HOUR = 3600.0
DIMENSIONS = ("gateway", "carrier", "channel", "warehouse")
CHECKS = ("pending_payment_over_2h", "no_tracking_after_24h", "settlement_failed",
          "ship_requests_per_order")


@dataclass(frozen=True, slots=True)
class Week:
    year: int
    number: int
    tz: str

    @classmethod
    def parse(cls, text: str, tz: str) -> Week:
        """'2026-W08' (ISO 8601 week) from 1971 to 2098: the week and the one before it
        (the report's comparison) lie in the years OrderWatch stores, 1970 to 2099."""
        found = re.fullmatch(r"(\d{4})-W(\d{2})", text.strip(), re.IGNORECASE)
        if found is None:
            raise ValueError(f"week must look like 2026-W08, got {text!r}")
        year, number = int(found[1]), int(found[2])
        if not 1971 <= year <= 2098:
            raise ValueError(f"week must lie in the years 1971 to 2098, got {text!r}")
        try:
            week = cls(year, number, tz)
            week.first_day  # noqa: B018  (validates the week number)
        except ValueError:
            last = date(year, 12, 28).isocalendar()[1]  # the 28th is in the year's last week
            raise ValueError(f"{year} has weeks W01 to W{last}, got {text!r}") from None
        return week

    @classmethod
    def containing(cls, ts: float, tz: str) -> Week:
        year, number, _ = datetime.fromtimestamp(ts, zone(tz)).isocalendar()
        return cls(year, number, tz)

    @property
    def first_day(self) -> date:
        return date.fromisocalendar(self.year, self.number, 1)

    @property
    def start(self) -> float:
        d = self.first_day
        return datetime(d.year, d.month, d.day, tzinfo=zone(self.tz)).timestamp()

    @property
    def end(self) -> float:
        return self.following().start

    def previous(self) -> Week:
        year, number, _ = (self.first_day - timedelta(days=7)).isocalendar()
        return Week(year, number, self.tz)

    def following(self) -> Week:
        year, number, _ = (self.first_day + timedelta(days=7)).isocalendar()
        return Week(year, number, self.tz)

    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(7)]

    def __str__(self) -> str:
        return f"{self.year}-W{self.number:02d}"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    value: float  # the share (0–1), the count or the maximum the threshold applies to
    healthy: bool | None  # None: no order to judge (no data is not a healthy week)
    count: int  # orders over the line
    judged: int  # orders the check could judge
    extra: float = 0.0  # ship requests: the mean per order


@dataclass(frozen=True, slots=True)
class DimensionRow:
    dimension: str
    value: str
    orders: int
    problem_orders: int  # orders of the week with at least one alert
    aggregate_alerts: int  # alerts on the dimension itself (a gateway's failure rate…)

    @property
    def share(self) -> float:
        return self.problem_orders / self.orders if self.orders else 0.0


@dataclass(frozen=True, slots=True)
class RiskyOrder:
    order_no: str
    risk: float
    status: str
    channel: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DailyFigures:
    day: date
    values: dict[str, float]  # check name → the day's value


@dataclass
class WeeklyReport:
    week: Week
    as_of: float
    checks: list[Check]
    previous: list[Check]
    worst: dict[str, list[DimensionRow]] = field(default_factory=dict)
    riskiest: list[RiskyOrder] = field(default_factory=list)
    daily: list[DailyFigures] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Every check judged, and healthy."""
        return all(c.healthy for c in self.checks)


def weekly_report(query: Query, database: str, week: Week,
                  thresholds: Thresholds = DEFAULT_THRESHOLDS, top: int = 3,
                  riskiest: int = 10) -> WeeklyReport:
    sql = _Sql(database, week, query)
    as_of = sql.as_of()
    per_day = {name: sql.daily(name, as_of) for name in CHECKS}
    report = WeeklyReport(
        week, as_of,
        [_check(name, per_day[name], week, thresholds) for name in CHECKS],
        [_check(name, per_day[name], week.previous(), thresholds) for name in CHECKS])
    report.worst = {dim: sql.worst(dim, top) for dim in DIMENSIONS}
    report.riskiest = sql.riskiest(thresholds.risk_review, riskiest)
    report.daily = [DailyFigures(day, {name: _day_value(name, per_day[name].get(day))
                                       for name in CHECKS})
                    for day in week.previous().days() + week.days()]
    return report


# --- figures from the per-day rows ------------------------------------------------------


def _check(name: str, days: dict[date, tuple], week: Week, t: Thresholds) -> Check:
    rows = [days[d] for d in week.days() if d in days]
    judged = sum(r[0] for r in rows)
    count = sum(r[1] for r in rows)

    def judge(healthy: bool) -> bool | None:
        return healthy if judged else None

    if name == "pending_payment_over_2h":
        share = count / judged if judged else 0.0
        return Check(name, share, judge(share < t.backlog_ratio), count, judged)
    if name == "no_tracking_after_24h":
        return Check(name, float(count), judge(count == 0), count, judged)
    if name == "settlement_failed":
        share = count / judged if judged else 0.0
        return Check(name, share, judge(count == 0), count, judged)
    most = max((r[2] for r in rows), default=0)
    total = sum(r[3] for r in rows)
    return Check(name, float(most), judge(most < t.duplicate_ship_min_requests), count,
                 judged, total / judged if judged else 0.0)


def _day_value(name: str, row: tuple | None) -> float:
    if row is None:
        return 0.0
    judged, count = row[0], row[1]
    if name in ("pending_payment_over_2h", "settlement_failed"):
        return count / judged if judged else 0.0
    return float(count)


# --- the queries --------------------------------------------------------------------------


class _Sql:
    def __init__(self, database: str, week: Week, query: Query) -> None:
        self.db = database
        self.week = week
        self.query = query
        self.tz = week.tz
        self.lo = _t(week.previous().start)
        self.hi = _t(week.end)

    def rows(self, sql: str) -> list[tuple]:
        return self.query(sql)[1]

    def as_of(self) -> float:
        """The latest event time in the data, but never after the week's end plus a week."""
        latest = latest_event_time(self.query, self.db)
        return min(latest, self.week.end + 7 * 24 * HOUR) if latest else self.week.end

    def _day(self, column: str) -> str:
        return f"toDate({column}, '{self.tz}')"

    def daily(self, name: str, as_of: float) -> dict[date, tuple]:
        sql = getattr(self, name)(_t(as_of))
        return {_date(r[0]): tuple(r[1:]) for r in self.rows(sql)}

    def pending_payment_over_2h(self, as_of: str) -> str:
        return self._overdue("created_at", "left_pending_at", 2, as_of)

    def no_tracking_after_24h(self, as_of: str) -> str:
        return self._overdue("shipped_at", "first_scan_at", 24, as_of)

    def _overdue(self, began: str, ended: str, hours: int, as_of: str) -> str:
        """Per day of `began`: orders at least `hours` old, and those of them whose `ended`
        came more than `hours` later or not yet."""
        judge = f"{began} <= {as_of} - INTERVAL {hours} HOUR"
        return (f"SELECT {self._day(began)} AS day, countIf({judge}) AS judged, "
                f"countIf({judge} AND ({ended} IS NULL OR {ended} > {began} + INTERVAL "
                f"{hours} HOUR)) AS late FROM {self.db}.order_state FINAL "
                f"WHERE {began} >= {self.lo} AND {began} < {self.hi} GROUP BY day")

    def settlement_failed(self, as_of: str) -> str:
        completed = (f"SELECT order_no, min(occurred_at) AS at FROM {self.db}.events "
                     "WHERE stream = 'order' AND JSONExtractString(payload, 'status') = "
                     f"'completed' AND occurred_at <= {as_of} GROUP BY order_no "
                     f"HAVING at >= {self.lo} AND at < {self.hi}")
        settled = (f"SELECT DISTINCT order_no FROM {self.db}.events WHERE kind = 'settle' "
                   "AND JSONExtractString(payload, 'result') = 'ok'")
        return (f"SELECT {self._day('at')} AS day, count() AS judged, "
                f"countIf(order_no NOT IN ({settled})) AS failed FROM ({completed}) "
                "GROUP BY day")

    def ship_requests_per_order(self, as_of: str) -> str:
        per_order = (f"SELECT order_no, min(occurred_at) AS first, "
                     "uniqExact(JSONExtractString(payload, 'request_id')) AS requests "
                     f"FROM {self.db}.events WHERE stream = 'order' AND kind = 'ship_request' "
                     f"AND occurred_at <= {as_of} GROUP BY order_no "
                     f"HAVING first >= {self.lo} AND first < {self.hi}")
        return (f"SELECT {self._day('first')} AS day, count() AS judged, "
                "countIf(requests >= 2) AS repeated, max(requests) AS most, "
                f"sum(requests) AS total FROM ({per_order}) GROUP BY day")

    def worst(self, dim: str, top: int) -> list[DimensionRow]:
        start, end = _t(self.week.start), _t(self.week.end)
        alerted = (f"SELECT DISTINCT order_no FROM {self.db}.alerts WHERE status = 'firing' "
                   "AND order_no != ''")
        orders = self.rows(
            f"SELECT {dim} AS value, count() AS orders, countIf(order_no IN ({alerted})) "
            f"AS problems FROM {self.db}.order_state FINAL WHERE created_at >= {start} AND "
            f"created_at < {end} AND {dim} != '' GROUP BY value")
        aggregate = dict(self.rows(
            f"SELECT labels['{dim}'] AS value, count() FROM {self.db}.alerts FINAL "
            f"WHERE status = 'firing' AND order_no = '' AND mapContains(labels, '{dim}') "
            f"AND starts_at >= {start} AND starts_at < {end} GROUP BY value"))
        rows = [DimensionRow(dim, v, int(n), int(p), int(aggregate.get(v, 0)))
                for v, n, p in orders]
        rows.sort(key=lambda r: (-r.aggregate_alerts, -r.share, -r.problem_orders, r.value))
        return rows[:top]

    def riskiest(self, min_risk: float, limit: int) -> list[RiskyOrder]:
        finished = ", ".join(f"'{s}'" for s in sorted(FINISHED))
        rows = self.rows(
            f"SELECT r.order_no, r.risk, s.status, s.channel, r.reasons "
            f"FROM {self.db}.order_risk AS r FINAL INNER JOIN (SELECT order_no, status, "
            f"channel FROM {self.db}.order_state FINAL) AS s ON s.order_no = r.order_no "
            f"WHERE s.status NOT IN ({finished}) AND r.risk >= {float(min_risk)} "
            f"ORDER BY r.risk DESC, r.order_no LIMIT {int(limit)}")
        return [RiskyOrder(o, float(risk), status, channel, tuple(reasons))
                for o, risk, status, channel, reasons in rows]


def latest_event_time(query: Query, database: str) -> float | None:
    (row,) = query(f"SELECT toUnixTimestamp64Milli(max(last_event_at)) "
                   f"FROM {database}.order_state")[1]
    return row[0] / 1000 if row[0] else None


def _t(ts: float) -> str:
    return f"toDateTime64({ts:.3f}, 3, 'UTC')"


def _date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def checks_by_name(checks: Sequence[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}
