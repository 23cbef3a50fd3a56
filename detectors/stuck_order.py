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
        # order → when its wait runs out. Nothing else is kept per order: the status it
        # waits in is the order's own (every change of it comes through `learn_one`), and
        # it has waited that status's limit when the time comes (memory, issue #8)
        self._due = Deadlines()

    def __setstate__(self, state: dict) -> None:
        state.pop("_waiting", None)  # snapshots before kept (status, since) per order
        self.__dict__.update(state)

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        if event.stream != "order" or order.status_at != event.ts:
            return []  # not an in-order status update
        status = order.status
        order_no = event.order_no
        # waiting: its time is still to come, or came and the alert fires
        waiting = order_no in self._due or self.book.is_firing(order_no)
        if waiting and order.prev_status == status:
            return []
        out = []
        if waiting:
            self._due.cancel(order_no)
            alert = self.book.resolve(order_no, event.ts,
                                      f"left {order.prev_status} for {status}")
            if alert is not None:
                out.append(alert)
        limit = self.limits.get(status)  # type: ignore[arg-type]
        if limit is not None:
            self._due.schedule(order_no, event.ts + limit)
        return out

    def timers(self) -> tuple[Deadlines, ...]:
        return (self._due,)

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        out = []
        for order_no, due in self._due.due(now):
            status = orders[order_no].status
            waited = self.limits[status]  # type: ignore[index]
            alert = self.book.fire(
                order_no, {"order_no": order_no, "status": status}, due,
                round(waited / 3600, 2),
                f"in {status} for {duration_text(waited)}, waiting for "
                f"{sm.WAITS[status].waits_for}",
                f"处于{sm.status_text(status, 'zh')}已 {duration_text(waited, 'zh')}，等待"
                f"{sm.WAITS[status].waits_for_zh}")
            if alert is not None:
                out.append(alert)
        return out

    def forget(self, order_no: str, now: float) -> list[Alert]:
        self._due.cancel(order_no)
        return self.book.left_memory([order_no], now)
