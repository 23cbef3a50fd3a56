"""`settlement_missing`: an order marked completed without a successful settlement.

"Finance is short 3–5 orders every day": the order is completed before the settlement or
split succeeds (bank API time-outs), so the books never see it.
"""

from __future__ import annotations

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import ORDERS, Alert, AlertBook, InstantOrderDetector
from orderwatch.detectors.order_book import OrderState
from orderwatch.engine import state_machine as sm
from orderwatch.events import Event


class SettlementMissing(InstantOrderDetector):
    name = "settlement_missing"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.book = AlertBook(self.name, "critical", hold_s=thresholds.instant_alert_hold_s)
        self._settled: set[str] = set()

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        data = event.data
        if event.stream != "order":
            return []
        if data["action"] == "settle" and data["result"] == "ok":
            self._settled.add(event.order_no)
        if (data["status"] == sm.COMPLETED and order.prev_status != sm.COMPLETED
                and event.order_no not in self._settled):
            how = (f"settle {data['result']}" if data["action"] == "settle"
                   else f"{data['source']} {data['action']}")
            self.book.propose(event.order_no, {"order_no": event.order_no}, event.ts, 1.0,
                              f"marked completed by {how} without a successful settlement",
                              f"由 {how} 标记为已完成，但没有成功的结算")
        return []

    def forget(self, order_no: str, now: float) -> list[Alert]:
        self._settled.discard(order_no)
        return []  # its alerts mark an instant and resolve on their own
