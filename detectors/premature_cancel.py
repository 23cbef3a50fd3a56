"""`premature_timeout_cancel`: a timeout cancellation before the payment grace period ended.

"Cancelled 5 minutes after ordering despite a 48 h grace period": usually a time-zone
shift in the scheduler's arithmetic. Schedulers run late, never early, so anything
noticeably before `created_at + grace_period_s` is a bug.
"""

from __future__ import annotations

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import ORDERS, Alert, AlertBook, InstantOrderDetector
from orderwatch.detectors.order_book import OrderState
from orderwatch.events import Event
from orderwatch.timestamps import duration_text


class PrematureTimeoutCancel(InstantOrderDetector):
    name = "premature_timeout_cancel"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.tolerance = thresholds.premature_cancel_tolerance_s
        self.book = AlertBook(self.name, "critical", hold_s=thresholds.instant_alert_hold_s)

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        data = event.data
        if event.stream != "order" or data["action"] != "timeout_cancel" or \
                data["result"] != "ok" or order.created_at is None or order.grace_s is None:
            return []
        waited = event.ts - order.created_at
        if waited < order.grace_s - self.tolerance:
            self.book.propose(
                event.order_no, {"order_no": event.order_no}, event.ts, round(waited / 60, 2),
                f"timeout-cancelled {duration_text(waited)} after creation; the grace period "
                f"is {duration_text(order.grace_s)}",
                f"创建后 {duration_text(waited, 'zh')}即被超时取消，支付宽限期为 "
                f"{duration_text(order.grace_s, 'zh')}")
        return []
