"""Duplicate submissions: `duplicate_ship_request` (per order) and `duplicate_order` (per user).

Double clicks and browser retries without an idempotency key ship the same order twice,
or create the same order twice. A ship call counts once per distinct `request_id`; an
order is a duplicate when the same user created one with the same items and amount
within the window (in either arrival order: the later-created order is the duplicate).
"""

from __future__ import annotations

from collections.abc import Mapping

from orderwatch.config import Thresholds
from orderwatch.detectors.base import Alert, AlertBook, Deadlines
from orderwatch.detectors.order_book import OrderState
from orderwatch.events import Event

SHIP_ACTIONS = frozenset({"ship_request", "ship"})


class DuplicateShipRequest:
    name = "duplicate_ship_request"

    def __init__(self, thresholds: Thresholds = Thresholds()) -> None:
        self.min_requests = thresholds.duplicate_ship_min_requests
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)
        self._requests: dict[str, set[str]] = {}

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        if event.stream != "order" or event.data["action"] not in SHIP_ACTIONS:
            return []
        requests = self._requests.setdefault(event.order_no, set())
        requests.add(event.data.get("request_id") or "")
        if len(requests) < self.min_requests:
            return []
        labels = {"order_no": event.order_no}
        if order.warehouse:
            labels["warehouse"] = order.warehouse
        alert = self.book.fire(
            event.order_no, labels, event.ts, float(len(requests)),
            f"{len(requests)} ship requests with distinct request ids")
        return [alert] if alert is not None else []

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        return self.book.expire_holds(now)

    def forget(self, order_no: str) -> None:
        self._requests.pop(order_no, None)


class DuplicateOrder:
    name = "duplicate_order"

    def __init__(self, thresholds: Thresholds = Thresholds()) -> None:
        self.window = thresholds.duplicate_order_window_s
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)
        # user → recent creates: (created_at, order_no, fingerprint)
        self._recent: dict[str, list[tuple[float, str, tuple]]] = {}
        self._duplicates: set[str] = set()
        self._expiry = Deadlines()  # user → when their newest create leaves the window

    def keys(self, event: Event) -> tuple[str, ...]:
        data = event.data
        if event.stream == "order" and data["action"] == "create" and data["result"] == "ok":
            return (data["user_id"],)
        return ()

    def learn_one(self, event: Event, key: str) -> list[Alert]:
        data = event.data
        items = tuple(sorted((item["sku"], item["qty"]) for item in data["items"]))
        fp = (items, round(float(data["amount"]), 2))
        recent = self._recent.setdefault(key, [])
        out = []
        for ts, order_no, other_fp in recent:
            if other_fp != fp or order_no == event.order_no or abs(ts - event.ts) > self.window:
                continue
            # the later-created order is the duplicate of the earlier one
            if (event.ts, event.order_no) > (ts, order_no):
                dup, dup_at, original = event.order_no, event.ts, order_no
            else:
                dup, dup_at, original = order_no, ts, event.order_no
            if dup in self._duplicates:
                continue
            self._duplicates.add(dup)
            alert = self.book.fire(
                dup, {"order_no": dup, "user_id": key}, dup_at, 1.0,
                f"same user, items and amount as {original}, created "
                f"{abs(dup_at - min(ts, event.ts)):.0f} s apart")
            if alert is not None:
                out.append(alert)
        recent.append((event.ts, event.order_no, fp))
        latest = self._expiry.when(key)
        if latest is None or event.ts + self.window > latest:
            self._expiry.schedule(key, event.ts + self.window)
        return out

    def advance(self, now: float) -> list[Alert]:
        for user, _ in list(self._expiry.due(now)):
            kept = [entry for entry in self._recent[user] if entry[0] + self.window > now]
            if kept:
                self._recent[user] = kept
                self._expiry.schedule(user, max(entry[0] for entry in kept) + self.window)
            else:
                del self._recent[user]
        resolved = self.book.expire_holds(now)
        for alert in resolved:
            self._duplicates.discard(alert.labels["order_no"])
        return resolved
