"""`stuck_order`: an order waits in one state longer than that state allows.

"Stuck in 待审核 for hours": the workflow engine never fires the next step. The waiting
states and what they wait for are the state machine's (`WAITS`); the limits are
thresholds (review 2 h, awaiting shipment 48 h, pending settlement 72 h).
"""

from __future__ import annotations

from collections.abc import Mapping

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import ORDERS, Alert, AlertBook, Deadlines
from orderwatch.detectors.order_book import OrderState
from orderwatch.engine import state_machine as sm
from orderwatch.events import Event
from orderwatch.timestamps import duration_text


class StuckOrder:
    name = "stuck_order"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.limits = {sm.PENDING_REVIEW: thresholds.stuck_review_s,
                       sm.AWAITING_SHIPMENT: thresholds.stuck_shipment_s,
                       sm.PENDING_SETTLEMENT: thresholds.stuck_settlement_s}
        self.book = AlertBook(self.name, "warning")
        self._waiting: dict[str, tuple[str, float]] = {}  # order → (status, since)
        self._due = Deadlines()

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        if event.stream != "order" or order.status_at != event.ts:
            return []  # not an in-order status update
        status = order.status
        current = self._waiting.get(event.order_no)
        if current is not None and current[0] == status:
            return []
        out = []
        if current is not None:
            del self._waiting[event.order_no]
            self._due.cancel(event.order_no)
            alert = self.book.resolve(event.order_no, event.ts,
                                      f"left {current[0]} for {status}")
            if alert is not None:
                out.append(alert)
        limit = self.limits.get(status)  # type: ignore[arg-type]
        if limit is not None:
            self._waiting[event.order_no] = (status, event.ts)  # type: ignore[assignment]
            self._due.schedule(event.order_no, event.ts + limit)
        return out

    def timers(self) -> tuple[Deadlines, ...]:
        return (self._due,)

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        out = []
        for order_no, due in self._due.due(now):
            status, since = self._waiting[order_no]
            alert = self.book.fire(
                order_no, {"order_no": order_no, "status": status}, due,
                round((due - since) / 3600, 2),
                f"in {status} for {duration_text(due - since)}, waiting for "
                f"{sm.WAITS[status].waits_for}",
                f"处于{sm.status_text(status, 'zh')}已 {duration_text(due - since, 'zh')}，等待"
                f"{sm.WAITS[status].waits_for_zh}")
            if alert is not None:
                out.append(alert)
        return out

    def forget(self, order_no: str, now: float) -> list[Alert]:
        self._waiting.pop(order_no, None)
        self._due.cancel(order_no)
        return self.book.left_memory([order_no], now)
