"""`channel_degraded`: a whole sales channel is broken, not one order.

The seeds' rule: ten orders in a row of one channel at risk ≥ 60 mean the channel itself
is broken, and it is escalated. Each order of a channel gets a verdict
`channel_verdict_after_s` after its creation: did its risk reach `risk_high` by then?
Verdicts come in creation order. The alert fires when the last `channel_streak` verdicts
are all high, and resolves when fewer than half of them are (so one abandoned cart
inside an outage does not flap it).
"""

from __future__ import annotations

import math
from collections import deque

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import NO_STREAMS, Alert, AlertBook
from orderwatch.detectors.order_book import OrderState
from orderwatch.detectors.series_limit import DEFAULT_CAP, SeriesLimit
from orderwatch.events import Event

Verdict = tuple[float, str, bool]  # (verdict time, order_no, risk reached the threshold)


class ChannelDegraded:
    name = "channel_degraded"
    streams = NO_STREAMS
    limit: SeriesLimit | None = None  # class default: older snapshots get one when used

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 max_series_per_dimension: int = DEFAULT_CAP) -> None:
        self.streak = thresholds.channel_streak
        self.book = AlertBook(self.name, "critical")
        self._recent: dict[str, deque[bool]] = {}
        self.limit = SeriesLimit(max_series_per_dimension, self.name)

    def route(self, event: Event, order: OrderState) -> list:
        return []  # fed verdicts by the risk scorer, not events

    def learn_one(self, verdict: Verdict, channel: str) -> list[Alert]:
        at, order_no, high = verdict
        if self.limit is None:
            self.limit = SeriesLimit(what=self.name, kept=(("channel", c) for c in self._recent))
        if not self.limit.admits("channel", channel):
            return []
        recent = self._recent.setdefault(channel, deque(maxlen=self.streak))
        recent.append(high)
        highs = sum(recent)
        if highs == self.streak:
            alert = self.book.fire(
                channel, {"channel": channel}, at, float(highs),
                f"{channel}: the last {self.streak} orders all reached high risk "
                f"(latest {order_no}); the channel itself looks broken",
                f"{channel}：最近 {self.streak} 单全部高风险（最新 {order_no}），渠道本身疑似故障")
        elif highs * 2 < len(recent):
            alert = self.book.resolve(channel, at)
        else:
            alert = None
        return [alert] if alert is not None else []

    def next_due(self) -> float:
        return math.inf  # it judges as verdicts arrive

    def advance(self, now: float) -> list[Alert]:
        return []


def degraded_runs(verdicts: list[Verdict], streak: int) -> list[tuple[float, float | None]]:
    """(start, end) of each degraded period of one channel: the same rule, on the truth."""
    recent: deque[bool] = deque(maxlen=streak)
    runs: list[tuple[float, float | None]] = []
    opened: float | None = None
    for at, _, high in verdicts:
        recent.append(high)
        if opened is None and sum(recent) == streak:
            opened = at
        elif opened is not None and sum(recent) * 2 < len(recent):
            runs.append((opened, at))
            opened = None
    if opened is not None:
        runs.append((opened, None))
    return runs
