"""`silent_shipment`: shipped, but the carrier has not scanned the waybill within its limit.

Label created is not picked up. SF and JD push pickups in real time (4 h limit); others
are polled and lag (24 h). A scan with an event time before the deadline clears the
waybill even if it arrives out of order.
"""

from __future__ import annotations

from collections.abc import Mapping

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import ORDERS_AND_LOGISTICS, Alert, AlertBook, Deadlines
from orderwatch.detectors.order_book import OrderState
from orderwatch.events import Event
from orderwatch.timestamps import duration_text


class _Waybill:
    __slots__ = ("carrier", "first_scan", "shipped_at", "warehouse")

    def __init__(self) -> None:
        self.shipped_at: float | None = None
        self.first_scan: float | None = None
        self.carrier = self.warehouse = ""

    # a tuple pickles in 0.6 of the time of the slots' dict (recovery snapshots)
    def __getstate__(self) -> tuple:
        return self.carrier, self.first_scan, self.shipped_at, self.warehouse

    def __setstate__(self, state: tuple) -> None:
        if len(state) == 2:  # (None, the slots' dict), in snapshots from before the tuple
            state = tuple(state[1][name] for name in self.__slots__)
        self.carrier, self.first_scan, self.shipped_at, self.warehouse = state


class SilentShipment:
    name = "silent_shipment"
    streams = ORDERS_AND_LOGISTICS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.fast = frozenset(thresholds.silent_fast_carriers)
        self.fast_limit = thresholds.silent_fast_limit_s
        self.limit = thresholds.silent_default_limit_s
        self.book = AlertBook(self.name, "warning")
        self._due = Deadlines()  # (order_no, waybill) → ship time + carrier limit
        self._waybills: dict[str, dict[str, _Waybill]] = {}  # order_no → waybill → facts
        self._scanned = Deadlines()  # firing waybill → its first scan, resolved once passed

    def limit_for(self, carrier: str) -> float:
        return self.fast_limit if carrier in self.fast else self.limit

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        data = event.data
        if event.stream == "logistics":
            waybill = self._waybill(event.order_no, data["waybill_no"])
            if waybill.first_scan is None or event.ts < waybill.first_scan:
                waybill.first_scan = event.ts
                key = (event.order_no, data["waybill_no"])
                if self.book.is_firing(key):
                    self._scanned.schedule(key, event.ts)
        elif event.stream == "order" and data["action"] == "ship" and data["result"] == "ok":
            waybill = self._waybill(event.order_no, data["waybill_no"])
            if waybill.shipped_at is None or event.ts < waybill.shipped_at:
                waybill.shipped_at = event.ts
                # the book's shared strings for the ones this event named (a shipped
                # event names both), not the event's own copies
                waybill.carrier = order.carrier or data["carrier"]
                waybill.warehouse = order.warehouse or ""
                self._due.schedule((event.order_no, data["waybill_no"]),
                                   event.ts + self.limit_for(waybill.carrier))
        return []

    def timers(self) -> tuple[Deadlines, ...]:
        return self._due, self._scanned

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        out = []
        for key, due in self._due.due(now):
            waybill = self._waybills[key[0]][key[1]]
            first = waybill.first_scan
            if first is not None and first <= due:
                continue
            silent = due - waybill.shipped_at
            alert = self.book.fire(
                key, {"order_no": key[0], "carrier": waybill.carrier,
                      "warehouse": waybill.warehouse}, due, round(silent / 3600, 2),
                f"{waybill.carrier} waybill {key[1]} silent for {duration_text(silent)} "
                "since shipping",
                f"{waybill.carrier} 运单 {key[1]} 发货后 {duration_text(silent, 'zh')}无揽收/轨迹")
            if alert is not None:
                out.append(alert)
            if first is not None:
                self._scanned.schedule(key, first)
        for key, _ in self._scanned.due(now):
            waybill = self._waybills[key[0]][key[1]]
            alert = self._resolve(key, waybill)
            if alert is not None:
                out.append(alert)
        return out

    def _resolve(self, key: tuple[str, str], waybill: _Waybill) -> Alert | None:
        return self.book.resolve(key, waybill.first_scan,
                                 f"{waybill.carrier} scanned waybill {key[1]}")

    def forget(self, order_no: str, now: float) -> list[Alert]:
        keys = [(order_no, waybill_no) for waybill_no in self._waybills.pop(order_no, {})]
        for key in keys:
            self._due.cancel(key)
            self._scanned.cancel(key)
        return self.book.left_memory(keys, now)

    def _waybill(self, order_no: str, waybill_no: str) -> _Waybill:
        waybills = self._waybills.setdefault(order_no, {})
        waybill = waybills.get(waybill_no)
        if waybill is None:
            waybill = waybills[waybill_no] = _Waybill()
        return waybill
