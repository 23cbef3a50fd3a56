"""`timezone_skew`: the client's creation time is off by a whole number of hours.

Browsers in UTC+0 or UTC+9 whose local times are stored as server time (UTC+8), or ISO
strings stored without a zone, shift timestamps by whole hours. Later they cancel
orders minutes after creation. Honest clock drift is seconds, never exactly N hours.
"""

from __future__ import annotations

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import ORDERS, Alert, AlertBook, InstantOrderDetector
from orderwatch.detectors.order_book import OrderState
from orderwatch.events import Event, parse_timestamp

HOUR = 3600.0


def whole_hour_offset(server_ts: float, client_ts: float, tolerance_s: float) -> int:
    """The offset in whole hours (0 when under an hour or not close to a whole hour)."""
    diff = server_ts - client_ts
    hours = round(diff / HOUR)
    if hours and abs(diff - hours * HOUR) <= tolerance_s:
        return hours
    return 0


class TimezoneSkew(InstantOrderDetector):
    name = "timezone_skew"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.tolerance = thresholds.timezone_tolerance_s
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        data = event.data
        client = data.get("client_created_at") if event.stream == "order" else None
        if client is None:
            return []
        hours = whole_hour_offset(event.ts, parse_timestamp(client, "client_created_at"),
                                  self.tolerance)
        if hours:
            self.book.propose(
                event.order_no, {"order_no": event.order_no, "offset_hours": f"{hours:+d}"},
                event.ts, float(hours),
                f"client time {client} is exactly {abs(hours)} h "
                f"{'behind' if hours > 0 else 'ahead of'} the server's: a time-zone bug",
                f"客户端时间 {client} 比服务端{'慢' if hours > 0 else '快'}整 {abs(hours)} 小时："
                "时区 bug")
        return []
