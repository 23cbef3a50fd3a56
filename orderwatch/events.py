"""The input contract (`shared/contract/events.md`): parsing and validation of one event.

The JSON Schema beside the contract is the reference; this module checks the same rules by
hand because a generic schema validator costs tens of microseconds per event. A test
cross-checks both on good and broken events.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

STREAMS = ("order", "callback", "logistics")
STATUSES = frozenset({
    "pending_payment", "paid", "pending_review", "awaiting_shipment", "shipped", "delivered",
    "pending_settlement", "completed", "cancelled", "refunding", "refunded",
})
ACTIONS = frozenset({
    "create", "pay", "review", "approve", "reserve_stock", "ship_request", "ship", "deliver",
    "confirm", "settle", "cancel", "timeout_cancel", "refund", "status_sync",
})
RESULTS = frozenset({"ok", "rejected", "failed"})
SOURCES = frozenset({"oms", "erp", "wms", "admin", "scheduler", "payment_handler"})
CARRIERS = frozenset({"SF", "JD", "ZTO", "YTO", "STO", "YUNDA", "EMS", "DBL", "OTHER"})
TRADE_STATUSES = frozenset({"SUCCESS", "NOTPAY", "CLOSED", "PAYERROR", "REFUND"})
CALLBACK_KINDS = frozenset({"notify", "query"})
TRACKING_EVENTS = frozenset({
    "picked_up", "in_transit", "out_for_delivery", "delivered", "exception", "returned",
})
VIA = frozenset({"push", "poll"})

# RFC 3339 date-time: full date, 'T' (or space, as RFC 3339 allows), time, mandatory offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z"
)


# The times OrderWatch can store: ClickHouse's DateTime (the health metrics' minute) holds
# 1970 to 2106, and an event from 1960 failed every insert of its minute until Bytewax
# aborted. 2100 leaves room for timers set days after an event.
EARLIEST_TS = 0.0  # 1970-01-01T00:00:00Z
LATEST_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z, excluded


class InvalidEvent(ValueError):
    """A bad input event; the message is the dead-letter reason."""


class Event:
    """One validated input event. `data` is the whole JSON object, unknown fields included."""

    __slots__ = ("data", "event_id", "order_no", "stream", "ts")

    def __init__(self, data: dict[str, Any], ts: float) -> None:
        self.data = data
        self.event_id: str = data["event_id"]
        self.stream: str = data["stream"]
        self.order_no: str = data["order_no"]
        self.ts = ts  # occurred_at as POSIX seconds: event time

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def __repr__(self) -> str:
        return f"Event({self.data!r})"


def parse_timestamp(value: object, name: str = "occurred_at") -> float:
    """RFC 3339 with an offset → POSIX seconds. Naive times are rejected: their zone is a guess.

    Nearly every timestamp shares its minute and zone with one parsed before, so those are
    checked and converted once per minute (`_parse_full`) and only the seconds here.
    """
    if type(value) is str and len(value) >= 20:
        minute, zone = _minute_key(value)
        base = _minutes.get((minute, zone))
        if base is not None:
            seconds = value[17:len(value) - len(zone)]  # "SS" or "SS.fraction"
            if (seconds.isascii() and seconds[:2].isdigit() and seconds[:2] < "60"
                    and (len(seconds) == 2 or (3 < len(seconds) <= 12 and seconds[2] == "."
                                               and seconds[3:].isdigit()))):
                # as datetime does: the fraction truncated to microseconds, then µs / 10⁶
                micros = int(seconds[3:9].ljust(6, "0")) if len(seconds) > 2 else 0
                return (base + int(seconds[:2]) * 1_000_000 + micros) / 1_000_000
    return _parse_full(value, name)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_minutes: dict[tuple[str, str], int] = {}  # ("2026-02-23T08:15:", "+08:00") → its µs


def _minute_key(value: str) -> tuple[str, str]:
    """("YYYY-MM-DDTHH:MM:", zone) of a timestamp: what `_minutes` files a minute under."""
    return value[:17], value[-6:] if value[-6] in "+-" else value[-1]


def _parse_full(value: object, name: str) -> float:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise InvalidEvent(f"bad timestamp in '{name}': {str(value)[:64]!r} is not RFC 3339 "
                           "with an offset")
    try:
        ts = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        raise InvalidEvent(f"bad timestamp in '{name}': {value!r} ({exc})") from None
    seconds = ts.timestamp()
    if not EARLIEST_TS <= seconds < LATEST_TS:  # before its minute is trusted below
        raise InvalidEvent(f"bad timestamp in '{name}': {value!r} is outside the years "
                           "1970 to 2099 that OrderWatch stores")
    if len(_minutes) >= 4096:
        _minutes.clear()
    minute = ts.replace(second=0, microsecond=0) - _EPOCH
    _minutes[_minute_key(value)] = (minute.days * 86_400 + minute.seconds) * 1_000_000
    return seconds


# --- field checkers -----------------------------------------------------------------------

Checker = Callable[[str, object], None]


def _string(min_len: int = 0, max_len: int | None = None) -> Checker:
    def check(name: str, value: object) -> None:
        if not isinstance(value, str):
            raise InvalidEvent(f"field '{name}' must be a string, got {_type(value)}")
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            raise InvalidEvent(f"field '{name}' must be {min_len}..{max_len or '∞'} characters")
    return check


def _enum(allowed: frozenset[str], nullable: bool = False) -> Checker:
    def check(name: str, value: object) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, str) or value not in allowed:
            raise InvalidEvent(f"unknown value {str(value)[:64]!r} for '{name}'")
    return check


def _number(minimum: float | None = None, maximum: float | None = None,
            integer: bool = False) -> Checker:
    def check(name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "an integer" if integer else "a number"
            raise InvalidEvent(f"field '{name}' must be {kind}, got {_type(value)}")
        if integer and isinstance(value, float) and not value.is_integer():
            raise InvalidEvent(f"field '{name}' must be an integer, got {value!r}")
        if value != value or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            raise InvalidEvent(f"field '{name}' is out of range: {value!r}")
    return check


def _boolean(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidEvent(f"field '{name}' must be a boolean, got {_type(value)}")


def _timestamp(name: str, value: object) -> None:
    parse_timestamp(value, name)


def _currency(name: str, value: object) -> None:
    if not isinstance(value, str) or len(value) != 3 or not value.isascii() or not value.isupper():
        raise InvalidEvent(f"field '{name}' must be an ISO 4217 code, got {str(value)[:16]!r}")


_SKU = _string()
_QTY = _number(minimum=1, integer=True)


def _items(name: str, value: object) -> None:
    if not isinstance(value, list):
        raise InvalidEvent(f"field '{name}' must be an array, got {_type(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidEvent(f"field '{name}[{i}]' must be an object")
        for key, checker in (("sku", _SKU), ("qty", _QTY)):
            if key not in item:
                raise InvalidEvent(f"missing required field '{name}[{i}].{key}'")
            checker(f"{name}[{i}].{key}", item[key])


_LOCK_FIELDS: dict[str, Checker] = {
    "key": _string(), "acquired": _boolean, "wait_ms": _number(minimum=0),
    "held_ms": _number(minimum=0), "ttl_ms": _number(minimum=0),
}


def _lock(name: str, value: object) -> None:
    if not isinstance(value, dict):
        raise InvalidEvent(f"field '{name}' must be an object, got {_type(value)}")
    for key in ("key", "acquired", "wait_ms", "ttl_ms"):
        if key not in value:
            raise InvalidEvent(f"missing required field '{name}.{key}'")
    for key, checker in _LOCK_FIELDS.items():
        if key in value:
            checker(f"{name}.{key}", value[key])


def _type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


_COMMON: dict[str, Checker] = {
    "event_id": _string(1, 128),
    "stream": _enum(frozenset(STREAMS)),
    "order_no": _string(1, 64),
}

_FIELDS: dict[str, dict[str, Checker]] = {
    "order": {
        "action": _enum(ACTIONS), "result": _enum(RESULTS), "status": _enum(STATUSES),
        "prev_status": _enum(STATUSES, nullable=True), "source": _enum(SOURCES),
        "request_id": _string(), "user_id": _string(), "channel": _string(),
        "amount": _number(minimum=0), "currency": _currency, "items": _items,
        "warehouse": _string(), "carrier": _enum(CARRIERS), "waybill_no": _string(),
        "client_created_at": _timestamp, "grace_period_s": _number(minimum=0, integer=True),
        "lock": _lock,
    },
    "callback": {
        "gateway": _string(1), "kind": _enum(CALLBACK_KINDS), "trade_status": _enum(TRADE_STATUSES),
        "transaction_id": _string(), "amount": _number(minimum=0), "paid_at": _timestamp,
        "http_status": _number(100, 599, integer=True), "signature_valid": _boolean,
        "err_code": _string(), "attempt": _number(minimum=1, integer=True),
        "latency_ms": _number(minimum=0),
    },
    "logistics": {
        "carrier": _enum(CARRIERS), "waybill_no": _string(1), "event": _enum(TRACKING_EVENTS),
        "via": _enum(VIA), "location": _string(),
    },
}

_REQUIRED: dict[str, tuple[str, ...]] = {
    "order": ("action", "result", "status", "source"),
    "callback": ("gateway", "kind", "trade_status"),
    "logistics": ("carrier", "waybill_no", "event"),
}


def _conditional_required(stream: str, data: dict[str, Any]) -> tuple[str, ...]:
    if stream == "order":
        if data["action"] == "create":
            return ("user_id", "channel", "amount", "items", "grace_period_s")
        if data["action"] == "ship" and data["result"] == "ok":
            return ("warehouse", "carrier", "waybill_no")
    elif stream == "callback":
        need: tuple[str, ...] = ()
        if data["kind"] == "notify":
            need += ("http_status", "signature_valid")
        if data["trade_status"] == "SUCCESS":
            need += ("paid_at",)
        return need
    return ()


def validate(data: object) -> Event:
    """Check one decoded JSON value against the contract; raise InvalidEvent with the reason."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"not a JSON object but {_type(data)}")
    for name in ("event_id", "stream", "order_no", "occurred_at"):
        if name not in data:
            raise InvalidEvent(f"missing required field '{name}'")
    for name, checker in _COMMON.items():
        checker(name, data[name])
    ts = parse_timestamp(data["occurred_at"])
    stream = data["stream"]
    for name in _REQUIRED[stream]:
        if name not in data:
            raise InvalidEvent(f"missing required field '{name}' for stream '{stream}'")
    checkers = _FIELDS[stream]
    for name, value in data.items():
        checker = checkers.get(name)
        if checker is not None:
            checker(name, value)
    for name in _conditional_required(stream, data):
        if name not in data:
            raise InvalidEvent(f"missing required field '{name}' for this {stream} event")
    return Event(data, ts)


def decode(raw: bytes | str) -> Event:
    """One JSON text → validated Event."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    return validate(data)


def dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)
