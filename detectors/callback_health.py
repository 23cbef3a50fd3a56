"""Payment-callback health: `callback_lost` (per order) and `callback_failure_rate` (per gateway).

"Customer paid but the order stays pending": the gateway reports SUCCESS, by notify or by
an active query, yet the order has not left `pending_payment` N minutes after `paid_at`.
The per-gateway rate catches the cause (a WAF answering 403, broken signatures) early.
"""

from __future__ import annotations

from collections.abc import Mapping

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import (
    CALLBACKS,
    ORDERS_AND_CALLBACKS,
    Alert,
    AlertBook,
    Deadlines,
    earliest_due,
)
from orderwatch.detectors.order_book import OrderState
from orderwatch.detectors.sliding_window import SlidingCounts
from orderwatch.events import Event, parse_timestamp
from orderwatch.timestamps import duration_text


class CallbackLost:
    name = "callback_lost"
    streams = ORDERS_AND_CALLBACKS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.after = thresholds.callback_lost_after_s
        self.book = AlertBook(self.name, "critical")
        self._due = Deadlines()  # order_no → paid_at + after
        self._gateway: dict[str, str] = {}
        self._alerted: set[str] = set()  # orders alerted once already: later retries add nothing
        self._recovered = Deadlines()  # firing order → when it left pending payment

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        order_no = event.order_no
        if event.stream == "callback":
            if (event.data["trade_status"] == "SUCCESS" and order_no not in self._due
                    and order_no not in self._alerted):
                due = parse_timestamp(event.data["paid_at"], "paid_at") + self.after
                if order.left_pending_at is None or order.left_pending_at > due:
                    self._due.schedule(order_no, due)
                    self._gateway[order_no] = event.data["gateway"]
            return []
        if (event.stream == "order" and order.left_pending_at is not None
                and self.book.is_firing(order_no)):
            # resolve once event time passes the earliest event that left pending payment
            self._recovered.schedule(order_no, order.left_pending_at)
        return []

    def _resolve(self, order_no: str, left_at: float) -> Alert | None:
        return self.book.resolve(order_no, left_at, "order left pending payment")

    def timers(self) -> tuple[Deadlines, ...]:
        return self._due, self._recovered

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        out = []
        for order_no, due in self._due.due(now):
            gateway = self._gateway.pop(order_no, "")
            order = orders.get(order_no)
            left = order.left_pending_at if order is not None else None
            if left is not None and left <= due:
                continue
            self._alerted.add(order_no)
            alert = self.book.fire(
                order_no, {"order_no": order_no, "gateway": gateway}, due, self.after / 60,
                f"paid at {gateway} {duration_text(self.after)} ago, order still pending payment",
                f"已在 {gateway} 支付 {duration_text(self.after, 'zh')}，订单仍为待支付")
            if alert is not None:
                out.append(alert)
            if left is not None:  # already fixed, later than the deadline
                self._recovered.schedule(order_no, left)
        for order_no, _ in self._recovered.due(now):
            order = orders.get(order_no)
            left = order.left_pending_at if order is not None else now
            alert = self._resolve(order_no, left if left is not None else now)
            if alert is not None:
                out.append(alert)
        return out

    def forget(self, order_no: str, now: float) -> list[Alert]:
        self._due.cancel(order_no)
        self._gateway.pop(order_no, None)
        self._alerted.discard(order_no)
        self._recovered.cancel(order_no)
        return self.book.left_memory([order_no], now)


def notify_failed(data: Mapping) -> bool:
    """A notify the order service did not accept: non-2xx answer or a failed signature."""
    return not 200 <= data["http_status"] < 300 or not data["signature_valid"]


class CallbackFailureRate:
    name = "callback_failure_rate"
    streams = CALLBACKS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.ratio = thresholds.callback_failure_ratio
        self.min_count = thresholds.callback_failure_min_count
        self.window = thresholds.callback_failure_window_s
        self.counts = SlidingCounts(self.window, 2)  # [notifies, failed]
        self.book = AlertBook(self.name, "critical")

    def route(self, event: Event, order: OrderState) -> list[tuple[str, Event]]:
        if event.stream == "callback" and event.data["kind"] == "notify":
            return [(event.data["gateway"], event)]
        return []

    def learn_one(self, event: Event, key: str) -> list[Alert]:
        self.counts.add(key, event.ts, [1.0, 1.0 if notify_failed(event.data) else 0.0])
        return []

    def next_due(self) -> float:
        return self.counts.next_due()

    def advance(self, now: float) -> list[Alert]:
        out = []
        for gateway, at, (total, failed) in self.counts.windows(now):
            share = failed / total if total else 0.0
            if total >= self.min_count and share > self.ratio:
                alert = self.book.fire(
                    gateway, {"gateway": gateway}, at, round(share, 4),
                    f"{gateway}: {share:.1%} of {total:.0f} notify callbacks failed "
                    f"over {duration_text(self.window)}",
                    f"{gateway}：{duration_text(self.window, 'zh')}内 {total:.0f} 次回调通知"
                    f"失败 {share:.1%}")
            else:
                alert = self.book.resolve(gateway, at)
            if alert is not None:
                out.append(alert)
        return out


class CallbackCertExpired:
    """`callback_cert_expired`: a gateway's notify failed on an expired platform certificate.

    One is enough: every later notification of that gateway will fail the same way until
    the certificate is replaced (WeChat Pay v3 retired its v2 certificates). Resolves
    after a quiet period without the error.
    """

    name = "callback_cert_expired"
    streams = CALLBACKS
    ERR_CODE = "CERTIFICATE_EXPIRED"

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.book = AlertBook(self.name, "critical", hold_s=thresholds.cert_expired_quiet_s)

    def route(self, event: Event, order: OrderState) -> list[tuple[str, Event]]:
        data = event.data
        if event.stream == "callback" and data["kind"] == "notify" and \
                data.get("err_code") == self.ERR_CODE:
            return [(data["gateway"], event)]
        return []

    def learn_one(self, event: Event, key: str) -> list[Alert]:
        self.book.propose(key, {"gateway": key}, event.ts, 1.0,
                          f"{key}: notify failed with {self.ERR_CODE}; replace the platform "
                          "certificate",
                          f"{key}：回调通知因 {self.ERR_CODE} 失败，请更换平台证书")
        return []

    def next_due(self) -> float:
        return earliest_due(self.book.timers())

    def advance(self, now: float) -> list[Alert]:
        return self.book.release(now)
