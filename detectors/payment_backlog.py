"""`pending_payment_backlog`: too many orders still pending payment long after creation.

The weekly check "share of pending-payment orders older than 2 h < 5%", made continuous:
of the orders created between `backlog_horizon_s` (24 h) and `backlog_age_s` (2 h) ago,
the share still in `pending_payment`. Abandoned carts with a long grace period keep
the share above zero. A hidden blockage in the payment chain pushes it over.

Order shards send two facts per order: created at t, and left pending payment (with
its creation time). Counts are kept per creation minute, and the window slides at each
minute boundary, so the cost does not grow with the number of orders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import ORDERS, Alert, AlertBook
from orderwatch.detectors.order_book import OrderState
from orderwatch.events import Event

MINUTE = 60
ALL = "all"


class PendingPaymentBacklog:
    name = "pending_payment_backlog"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.age = int(thresholds.backlog_age_s // MINUTE)
        self.horizon = int(thresholds.backlog_horizon_s // MINUTE)
        self.ratio = thresholds.backlog_ratio
        self.min_orders = thresholds.backlog_min_orders
        self.book = AlertBook(self.name, "critical")
        self.created: dict[int, int] = {}  # creation minute → orders created
        self.left: dict[int, int] = {}  # creation minute → of those, no longer pending
        # creation minutes [lo, hi) now in the window; None until the first advance
        self.lo: int | None = None
        self.hi: int | None = None
        self.total = self.pending = 0

    def route(self, event: Event, order: OrderState) -> list[tuple[str, tuple[str, float]]]:
        if event.stream != "order":
            return []
        if event.data["action"] == "create" and event.data["result"] == "ok":
            return [(ALL, ("created", event.ts))]
        if order.left_by == order.events and order.created_at is not None:  # this event
            return [(ALL, ("left", order.created_at))]
        return []

    def learn_one(self, fact: tuple[str, float], key: str) -> list[Alert]:
        kind, created_at = fact
        minute = int(created_at // MINUTE)
        counts = self.created if kind == "created" else self.left
        counts[minute] = counts.get(minute, 0) + 1
        if self.lo is not None and self.lo <= minute < self.hi:
            if kind == "created":
                self.total += 1
                self.pending += 1
            else:
                self.pending -= 1
        return []

    def next_due(self) -> float:
        if self.lo is None:  # its first advance after a creation sets the window
            return -math.inf if self.created else math.inf
        return (self.hi + self.age + 1) * MINUTE  # the next boundary to judge

    def advance(self, now: float) -> list[Alert]:
        out = []
        end = int(now // MINUTE)
        if self.lo is None:
            if not self.created:
                return out
            first = min(self.created) + self.age  # the first boundary with data in reach
            self.lo = self.hi = first - self.age
        else:
            first = self.hi + self.age + 1
        for boundary in self._boundaries(first, end):
            self._slide(boundary - self.horizon, boundary - self.age)
            share = self.pending / self.total if self.total else 0.0
            at = float(boundary * MINUTE)
            if self.total >= self.min_orders and share > self.ratio:
                alert = self.book.fire(
                    ALL, {}, at, round(share, 4),
                    f"{share:.1%} of {self.total} orders created 2–24 h ago still pending "
                    "payment",
                    f"2–24 小时前创建的 {self.total} 单中 {share:.1%} 仍为待支付")
            else:
                alert = self.book.resolve(ALL, at)
            if alert is not None:
                out.append(alert)
        return out

    def _boundaries(self, first: int, end: int) -> Iterable[int]:
        """The minute boundaries to judge, `first` to `end`. Over a gap longer than the
        window (event time jumping ahead: a clock decades off) only those where a creation
        minute enters or leaves the window, as the share changes nowhere else; stepping
        through 30 years of minutes took as long as the whole replay."""
        if end - first <= self.horizon:
            return range(first, end + 1)
        changes = {first, end}  # end: the window ends there, as stepping leaves it
        for minute in self.created.keys() | self.left.keys():
            for at in (minute + self.age + 1, minute + self.horizon + 1):
                if first < at <= end:
                    changes.add(at)
        return sorted(changes)

    def _slide(self, lo: int, hi: int) -> None:
        for minute in _present(self.hi, hi, self.created):  # creation minutes entering
            created = self.created.get(minute, 0)
            self.total += created
            self.pending += created - self.left.get(minute, 0)
        for minute in _present(self.lo, min(lo, hi), self.created, self.left):  # leaving
            created = self.created.pop(minute, 0)
            self.total -= created
            self.pending -= created - self.left.pop(minute, 0)
        self.lo, self.hi = max(self.lo, lo), hi


def _present(lo: int, hi: int, *counts: dict[int, int]) -> Iterable[int]:
    """The minutes in [lo, hi) that may be keys of `counts`: all of them for a range no
    longer than the keys (the usual one minute), else only the keys present."""
    if hi - lo <= sum(len(c) for c in counts):
        return range(lo, hi)
    return sorted({m for c in counts for m in c if lo <= m < hi})
