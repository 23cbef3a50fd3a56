"""The tracked state of every open order: what detectors read, what `order_state` stores.

The book also drops redeliveries (an `event_id` seen before for the order) and lets
orders leave memory: a finished order after `finished_retention_s` of quiet event time
(long enough to absorb late redeliveries), any order after `max_idle_s` of silence.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import operator
import sys
from itertools import chain

from orderwatch.detectors.base import mostly_stale
from orderwatch.engine import state_machine as sm
from orderwatch.events import Event, parse_timestamp

HOUR = 3600.0
DIGEST = 8  # bytes per event id in OrderState.seen


class OrderState:
    __slots__ = (
        "amount",
        "carrier",
        "channel",
        "created_at",
        "events",
        "finished_at",
        "first_scan_at",
        "gateway",
        "grace_s",
        "last_event_at",
        "left_by",
        "left_pending_at",
        "order_no",
        "paid_at",
        "prev_status",
        "risk_fired",
        "risk_max",
        "risk_written",
        "seen",
        "shipped_at",
        "status",
        "status_at",
        "user_id",
        "warehouse",
        "waybill_no",
    )

    def __init__(self, order_no: str) -> None:
        self.order_no = order_no
        self.status: str | None = None
        # status before the latest in-order event (None before the first, or for a late one)
        self.prev_status: str | None = None
        self.status_at = -float("inf")
        self.created_at: float | None = None
        self.left_pending_at: float | None = None  # first event time in a later status
        # which of its events (1 for the first applied) first left pending payment: a count,
        # not the event's id, which took ~70 bytes per paid order (memory, issue #8);
        # snapshots from before hold the id, which no later event matches, as it should
        self.left_by: int | str | None = None
        self.finished_at: float | None = None
        self.last_event_at = -float("inf")
        self.events = 0
        self.user_id: str | None = None
        self.channel: str | None = None
        self.gateway: str | None = None
        self.warehouse: str | None = None
        self.carrier: str | None = None
        self.waybill_no: str | None = None
        self.amount: float | None = None
        self.grace_s: float | None = None
        self.paid_at: float | None = None  # the gateway's paid_at of its first SUCCESS
        self.shipped_at: float | None = None
        self.first_scan_at: float | None = None
        # the events applied, as 8-byte digests of their ids end to end: a dozen ids as
        # strings in a tuple take ~900 bytes, their digests ~130 (memory, issue #8)
        self.seen = b""
        # the risk scorer's memory of the order, kept here rather than in a dict of its
        # own: one object and one dict entry fewer per open order (issue #8)
        self.risk_fired = 0  # bit i: ORDER_ALERTS[i] fired for this order
        self.risk_max = 0.0
        self.risk_written = -1.0  # the risk last written to order_risk

    def apply(self, event: Event) -> None:
        ts = event.ts
        self.events += 1
        if ts > self.last_event_at:
            self.last_event_at = ts
        data = event.data
        stream = event.stream
        if stream == "order":
            if data["action"] == "create":
                self.created_at = ts
                self.user_id = data.get("user_id")
                self.channel = intern_value(data.get("channel"))
                self.amount = data.get("amount")
                self.grace_s = _shared(data.get("grace_period_s"))
            status = intern_value(data["status"])
            if ts >= self.status_at:
                self.prev_status = self.status
                self.status, self.status_at = status, ts
            else:
                self.prev_status = None
            if status != sm.PENDING_PAYMENT and (
                    self.left_pending_at is None or ts < self.left_pending_at):
                if self.left_pending_at is None:
                    self.left_by = self.events
                self.left_pending_at = ts
            if data["action"] == "ship" and data["result"] == "ok" and self.shipped_at is None:
                self.shipped_at = ts
            if "warehouse" in data:
                self.warehouse = intern_value(data["warehouse"])
            if "carrier" in data:
                self.carrier = intern_value(data["carrier"])
            if "waybill_no" in data:
                self.waybill_no = data["waybill_no"]
            self.finished_at = self.status_at if sm.is_finished(self.status) else None
        elif stream == "callback":
            if self.gateway is None:
                self.gateway = intern_value(data["gateway"])
            if data["trade_status"] == "SUCCESS" and self.paid_at is None:
                self.paid_at = parse_timestamp(data["paid_at"], "paid_at")
        else:
            if self.carrier is None:
                self.carrier = intern_value(data["carrier"])
            if self.first_scan_at is None or ts < self.first_scan_at:
                self.first_scan_at = ts


def event_digest(event_id: str) -> bytes:
    """8 bytes standing for an event id: stable across processes (recovery snapshots),
    and two ids of one order share one with odds of about 1 in 10^18."""
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST).digest()


def has_digest(seen: bytes, digest: bytes) -> bool:
    """Whether `digest` is one of the 8-byte records in `seen` (not merely a substring
    straddling two of them)."""
    at = seen.find(digest)
    while at != -1:
        if at % DIGEST == 0:
            return True
        at = seen.find(digest, at + 1)
    return False


def intern_value(value: str | None) -> str | None:
    """One copy of each low-cardinality value (status, channel, carrier) for all orders,
    rather than the copy each parsed event brings (memory per open order, issue #8)."""
    return sys.intern(value) if isinstance(value, str) else value


_NUMBERS: dict[tuple[type, object], object] = {}


def _shared(value: object) -> object:
    """One object for each of the first few hundred distinct values (a grace period is one
    of a handful; as an int above 256 each parsed copy takes 28 bytes per open order)."""
    key = (type(value), value)  # by type too: 1, 1.0 and True are equal dict keys
    if len(_NUMBERS) < 512:
        return _NUMBERS.setdefault(key, value)
    return _NUMBERS.get(key, value)


class ExpiryBuckets:
    """Order numbers filed by when they may leave, in buckets of `width` seconds.

    A bucket begun is scanned whole at every `take`, so a bucket holds what leaves in a
    minute; at ten orders a minute a bucket's own overhead is ~20 bytes per order.

    The bucket says when to look and the order says whether it is done with, so no time is
    kept per entry: a list slot (8 bytes) where a heap of (time, order_no) tuples took 88
    per open order (memory, issue #8).
    """

    __slots__ = ("_buckets", "_entries", "_starts", "width")

    def __init__(self, width: float = 60.0) -> None:
        self.width = width
        self._buckets: dict[int, list[str]] = {}
        self._starts: list[int] = []  # a heap of the buckets' indexes
        self._entries = 0

    def add(self, at: float, order_no: str) -> None:
        index = math.floor(at / self.width)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = []
            heapq.heappush(self._starts, index)
        bucket.append(order_no)
        self._entries += 1

    def take(self, now: float) -> list[str]:
        """Remove and return the entries of every bucket begun by `now`: some may be due
        only later in their bucket, and are filed again by the caller."""
        taken: list[str] = []
        while self._starts and self._starts[0] * self.width <= now:
            taken.extend(self._buckets.pop(heapq.heappop(self._starts)))
        self._entries -= len(taken)
        return taken

    def __len__(self) -> int:
        return self._entries


ORDER_FIELDS = OrderState.__slots__
_order_fields = operator.attrgetter(*ORDER_FIELDS)


def _orders_from_fields(fields: tuple[str, ...], values: list) -> dict[str, OrderState]:
    """A field the snapshot lacks (one added since) keeps its default; one it has that
    OrderState no longer has is dropped."""
    kept = [(i, field) for i, field in enumerate(fields) if field in ORDER_FIELDS]
    orders = {}
    for start in range(0, len(values), len(fields)):
        order = OrderState("")
        for i, field in kept:
            setattr(order, field, values[start + i])
        orders[order.order_no] = order
    return orders


class OrderBook:
    def __init__(self, finished_retention_s: float = 1 * HOUR,
                 max_idle_s: float = 14 * 24 * HOUR) -> None:
        self.orders: dict[str, OrderState] = {}
        self.retention = finished_retention_s
        self.max_idle = max_idle_s
        self._expiry = ExpiryBuckets()
        self._dirty: dict[str, OrderState] = {}

    def apply(self, event: Event) -> tuple[OrderState, bool]:
        """Apply one event; returns the order and False when the event is a redelivery."""
        order = self.orders.get(event.order_no)
        digest = event_digest(event.event_id)
        if order is None:
            order = self.orders[event.order_no] = OrderState(event.order_no)
            self._schedule(event.order_no, event.ts + self.max_idle)
        elif has_digest(order.seen, digest):
            return order, False
        else:
            # the book's copy of the order number: detectors key their state by
            # event.order_no, and one string per open order where each kept its own event's
            # copy saves ~180 bytes per order in a shop (memory, issue #8)
            event.order_no = order.order_no
        order.seen += digest
        was_finished = order.finished_at is not None
        order.apply(event)
        if order.finished_at is not None and not was_finished:
            self._schedule(order.order_no, order.finished_at + self.retention)
        self._dirty[order.order_no] = order
        return order, True

    def expire(self, now: float) -> list[str]:
        """Remove orders that are done with; returns their numbers, by when they went quiet."""
        gone: list[tuple[float, str]] = []
        for order_no in self._expiry.take(now):
            order = self.orders.get(order_no)
            if order is None:  # left already: the entry was stale
                continue
            quiet_until = self._quiet_until(order)
            if quiet_until > now:
                self._schedule(order_no, quiet_until)
                continue
            del self.orders[order_no]
            gone.append((quiet_until, order_no))
        self._compact_if_stale()
        gone.sort()
        return [order_no for _, order_no in gone]

    def _quiet_until(self, order: OrderState) -> float:
        return order.last_event_at + (
            self.retention if order.finished_at is not None else self.max_idle)

    def _schedule(self, order_no: str, at: float) -> None:
        self._expiry.add(at, order_no)
        self._compact_if_stale()

    def _compact_if_stale(self) -> None:
        if mostly_stale(self._expiry, len(self.orders)):
            # mostly stale entries (orders that finished, or left): one per order is enough
            self._expiry = ExpiryBuckets()
            for order_no, order in self.orders.items():
                self._expiry.add(self._quiet_until(order), order_no)

    def __getstate__(self) -> dict:
        """The orders as one flat list of their fields: a recovery snapshot pickles every
        open order, and one list pickles about twice as fast as the objects (issue #8)."""
        state = dict(self.__dict__)
        state["orders"] = (ORDER_FIELDS, list(chain.from_iterable(
            map(_order_fields, self.orders.values()))))
        return state

    def __setstate__(self, state: dict) -> None:
        """Also reads older snapshots: orders as objects (before the flat list), expiry as
        a heap of (time, order_no) (before the buckets)."""
        if isinstance(state["orders"], tuple):
            state["orders"] = _orders_from_fields(*state["orders"])
            state["_dirty"] = {order_no: state["orders"].get(order_no, order)
                               for order_no, order in state["_dirty"].items()}
        if isinstance(state.get("_expiry"), list):
            expiry = ExpiryBuckets()
            for at, order_no in state["_expiry"]:
                expiry.add(at, order_no)
            state["_expiry"] = expiry
        self.__dict__.update(state)

    def drain_changed(self) -> list[OrderState]:
        changed = list(self._dirty.values())
        self._dirty.clear()
        return changed

    def __len__(self) -> int:
        return len(self.orders)
