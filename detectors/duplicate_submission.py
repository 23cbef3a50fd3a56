"""Duplicate submissions: `duplicate_ship_request` (per order) and `duplicate_order` (per user).

Double clicks and browser retries without an idempotency key ship the same order twice,
or create the same order twice. A ship call counts once per distinct `request_id`; an
order is a duplicate when the same user created one with the same items and amount
within the window (in either arrival order: the later-created order is the duplicate).
"""

from __future__ import annotations

from typing import Any

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors import flat_records
from orderwatch.detectors.base import (
    ORDERS,
    Alert,
    AlertBook,
    Deadlines,
    InstantOrderDetector,
    earliest_due,
)
from orderwatch.detectors.order_book import OrderState, intern_value
from orderwatch.events import Event

SHIP_ACTIONS = frozenset({"ship_request", "ship"})


class DuplicateShipRequest(InstantOrderDetector):
    name = "duplicate_ship_request"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.min_requests = thresholds.duplicate_ship_min_requests
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)
        # order → its ship requests as one flat tuple: request id, earliest event time,
        # warehouse named by that event, then the next request's. Most orders have one,
        # which a dict per order kept in ~170 bytes and a tuple of three keeps in 64
        self._requests: dict[str, tuple[Any, ...]] = {}

    def __setstate__(self, state: dict) -> None:
        """Snapshots from before the flat tuples hold a dict per order: id → (time, warehouse)."""
        requests = state.get("_requests", {})
        for order_no, kept in requests.items():
            if isinstance(kept, dict):
                requests[order_no] = tuple(x for rid, (ts, warehouse) in kept.items()
                                           for x in (rid, ts, warehouse))
        self.__dict__.update(state)

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        data = event.data
        if event.stream != "order" or data["action"] not in SHIP_ACTIONS:
            return []
        rid = data.get("request_id") or ""
        kept = self._requests.get(event.order_no, ())
        at = flat_records.find(kept, rid, 3)
        if at < 0 or event.ts < kept[at + 1]:
            kept = self._requests[event.order_no] = flat_records.put(
                kept, at, (rid, event.ts, intern_value(data.get("warehouse")) or ""))
        if len(kept) < 3 * self.min_requests:
            return []
        first = sorted(zip(kept[1::3], kept[2::3], strict=True))[: self.min_requests]
        labels = {"order_no": event.order_no}
        warehouse = next((w for _, w in first if w), "")
        if warehouse:
            labels["warehouse"] = warehouse
        self.book.propose(
            event.order_no, labels, first[-1][0], float(self.min_requests),
            f"{self.min_requests} ship requests with distinct request ids within "
            f"{first[-1][0] - first[0][0]:.1f} s",
            f"{first[-1][0] - first[0][0]:.1f} 秒内 {self.min_requests} 次发货请求，"
            "request_id 各不相同")
        return []

    def forget(self, order_no: str, now: float) -> list[Alert]:
        self._requests.pop(order_no, None)
        return []  # its alerts mark an instant and resolve on their own


class DuplicateOrder:
    name = "duplicate_order"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.window = thresholds.duplicate_order_window_s
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)
        # user → recent creates: (created_at, order_no, fingerprint)
        self._recent: dict[str, list[tuple[float, str, tuple]]] = {}
        self._expiry = Deadlines()  # user → when their newest create leaves the window

    def route(self, event: Event, order: OrderState) -> list[tuple[str, Event]]:
        data = event.data
        if event.stream == "order" and data["action"] == "create" and data["result"] == "ok":
            return [(data["user_id"], event)]
        return []

    def learn_one(self, event: Event, key: str) -> list[Alert]:
        data = event.data
        items = tuple(sorted((item["sku"], item["qty"]) for item in data["items"]))
        fp = (items, round(float(data["amount"]), 2))
        recent = self._recent.setdefault(key, [])
        mine = (event.ts, event.order_no)
        for ts, order_no, other_fp in recent:
            if other_fp != fp or order_no == event.order_no or abs(ts - event.ts) > self.window:
                continue
            # the later-created order is the duplicate of the earlier one
            (first_at, original), (dup_at, dup) = sorted([mine, (ts, order_no)])
            self.book.propose(dup, {"order_no": dup, "user_id": key}, dup_at, 1.0,
                              f"same user, items and amount as {original}, created "
                              f"{dup_at - first_at:.0f} s later",
                              f"与 {original} 用户、商品、金额相同，晚 {dup_at - first_at:.0f} 秒"
                              "创建")
        recent.append((event.ts, event.order_no, fp))
        latest = self._expiry.when(key)
        if latest is None or event.ts + self.window > latest:
            self._expiry.schedule(key, event.ts + self.window)
        return []

    def next_due(self) -> float:
        return earliest_due((self._expiry, *self.book.timers()))

    def advance(self, now: float) -> list[Alert]:
        for user, _ in self._expiry.due(now):
            kept = [entry for entry in self._recent[user] if entry[0] + self.window > now]
            if kept:
                self._recent[user] = kept
                self._expiry.schedule(user, max(entry[0] for entry in kept) + self.window)
            else:
                del self._recent[user]
        return self.book.release(now)
