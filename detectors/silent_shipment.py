"""`silent_shipment`: shipped, but the carrier has not scanned the waybill within its limit.

Label created is not picked up. SF and JD push pickups in real time (4 h limit); others
are polled and lag (24 h). A scan with an event time before the deadline clears the
waybill even if it arrives out of order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors import flat_records
from orderwatch.detectors.base import ORDERS_AND_LOGISTICS, Alert, AlertBook, Deadlines
from orderwatch.detectors.order_book import OrderState
from orderwatch.events import Event
from orderwatch.timestamps import duration_text


class _Waybill:
    """A waybill's facts as older recovery snapshots hold them (read by `__setstate__`)."""

    __slots__ = ("carrier", "first_scan", "shipped_at", "warehouse")

    def __setstate__(self, state: tuple) -> None:
        if len(state) == 2:  # (None, the slots' dict), in snapshots from before the tuple
            state = tuple(state[1][name] for name in self.__slots__)
        self.carrier, self.first_scan, self.shipped_at, self.warehouse = state


# per waybill in SilentShipment._waybills: number, shipped at, first scan, carrier, warehouse
_FIELDS = 5


class SilentShipment:
    name = "silent_shipment"
    streams = ORDERS_AND_LOGISTICS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.fast = frozenset(thresholds.silent_fast_carriers)
        self.fast_limit = thresholds.silent_fast_limit_s
        self.limit = thresholds.silent_default_limit_s
        self.book = AlertBook(self.name, "warning")
        self._due = Deadlines()  # (order_no, waybill) → ship time + carrier limit
        # order_no → its waybills as one flat tuple, `_FIELDS` values each: a dict per
        # order holding an object per waybill took ~100 bytes more per shipped order
        self._waybills: dict[str, tuple[Any, ...]] = {}
        self._scanned = Deadlines()  # firing waybill → its first scan, resolved once passed

    def __setstate__(self, state: dict) -> None:
        """Snapshots from before the flat tuples hold a dict per order: waybill → _Waybill."""
        waybills = state.get("_waybills", {})
        for order_no, kept in waybills.items():
            if isinstance(kept, dict):
                waybills[order_no] = tuple(
                    x for number, w in kept.items()
                    for x in (number, w.shipped_at, w.first_scan, w.carrier, w.warehouse))
        self.__dict__.update(state)

    def limit_for(self, carrier: str) -> float:
        return self.fast_limit if carrier in self.fast else self.limit

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        data = event.data
        if event.stream == "logistics":
            number = data["waybill_no"]
            kept, at, (_, shipped_at, first_scan, carrier, warehouse) = self._record(
                event.order_no, number)
            if first_scan is None or event.ts < first_scan:
                self._waybills[event.order_no] = flat_records.put(
                    kept, at, (number, shipped_at, event.ts, carrier, warehouse))
                key = (event.order_no, number)
                if self.book.is_firing(key):
                    self._scanned.schedule(key, event.ts)
        elif event.stream == "order" and data["action"] == "ship" and data["result"] == "ok":
            number = data["waybill_no"]
            kept, at, (_, shipped_at, first_scan, _, _) = self._record(event.order_no, number)
            if shipped_at is None or event.ts < shipped_at:
                # the book's shared strings for the ones this event named (a shipped
                # event names both), not the event's own copies
                carrier = order.carrier or data["carrier"]
                self._waybills[event.order_no] = flat_records.put(
                    kept, at, (number, event.ts, first_scan, carrier, order.warehouse or ""))
                self._due.schedule((event.order_no, number),
                                   event.ts + self.limit_for(carrier))
        return []

    def _record(self, order_no: str, number: str
                ) -> tuple[tuple[Any, ...], int, tuple[Any, ...]]:
        """The order's flat tuple, where the waybill's record starts in it (-1: not kept),
        and the record (number, shipped at, first scan, carrier, warehouse), blank if new."""
        kept = self._waybills.get(order_no, ())
        at = flat_records.find(kept, number, _FIELDS)
        record = kept[at:at + _FIELDS] if at >= 0 else (number, None, None, "", "")
        return kept, at, record

    def _facts(self, key: tuple[str, str]) -> tuple[Any, ...]:
        """The record of a waybill with a timer (kept as long as its timers are)."""
        _, at, record = self._record(*key)
        if at < 0:
            raise KeyError(key)
        return record

    def timers(self) -> tuple[Deadlines, ...]:
        return self._due, self._scanned

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        out = []
        for key, due in self._due.due(now):
            _, shipped_at, first, carrier, warehouse = self._facts(key)
            if first is not None and first <= due:
                continue
            silent = due - shipped_at
            alert = self.book.fire(
                key, {"order_no": key[0], "carrier": carrier, "warehouse": warehouse}, due,
                round(silent / 3600, 2),
                f"{carrier} waybill {key[1]} silent for {duration_text(silent)} "
                "since shipping",
                f"{carrier} 运单 {key[1]} 发货后 {duration_text(silent, 'zh')}无揽收/轨迹")
            if alert is not None:
                out.append(alert)
            if first is not None:
                self._scanned.schedule(key, first)
        for key, _ in self._scanned.due(now):
            _, _, first, carrier, _ = self._facts(key)
            alert = self.book.resolve(key, first, f"{carrier} scanned waybill {key[1]}")
            if alert is not None:
                out.append(alert)
        return out

    def forget(self, order_no: str, now: float) -> list[Alert]:
        numbers = self._waybills.pop(order_no, ())[0::_FIELDS]
        keys = [(order_no, number) for number in numbers]
        for key in keys:
            self._due.cancel(key)
            self._scanned.cancel(key)
        return self.book.left_memory(keys, now)
