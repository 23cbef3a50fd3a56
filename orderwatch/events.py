"""The input contract (`shared/contract/events.md`): parsing and validation of one event.

The JSON Schema beside the contract is the reference; this module checks the same rules
itself because a generic schema validator costs tens of microseconds per event. A test
cross-checks both on good and broken events.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

import msgspec
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

    def __reduce__(self) -> tuple[type[Event], tuple[dict[str, Any], float]]:
        """Pickled as its data and time. Events cross between a cluster's processes (to
        their order and aggregate shards) and pickle's default for slots built a dict of
        them per event: 7.5 µs a round trip, 3.7 this way (round 12)."""
        return Event, (self.data, self.ts)

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
    if type(value) is not str or len(value) < 20:  # never valid if shorter; a str
        return _parse_full(value, name, None)  # subclass is checked, its minute not kept
    zone_len = 1 if value[-1] in "Zz" else 6
    minute_key = value[:17] + value[-zone_len:]  # "2026-02-23T08:15:+08:00"
    base = _minutes.get(minute_key)
    if base is not None:
        end = len(value) - zone_len  # "SS" or "SS.fraction" in [17:end]
        seconds = value[17:19]
        if seconds.isdigit() and seconds < "60" and value.isascii():
            if end == 19:
                return (base + int(seconds) * 1_000_000) / 1_000_000
            fraction = value[20:end]
            if 21 <= end <= 29 and value[19] == "." and fraction.isdigit():
                # as datetime does: the fraction truncated to microseconds, then µs / 10⁶
                micros = int(fraction[:6].ljust(6, "0"))
                return (base + int(seconds) * 1_000_000 + micros) / 1_000_000
    return _parse_full(value, name, minute_key)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_minutes: dict[str, int] = {}  # "2026-02-23T08:15:+08:00" (minute and zone) → its µs


def _parse_full(value: object, name: str, minute_key: str | None) -> float:
    """Check and convert a timestamp in full; file its minute under `minute_key`."""
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
    if minute_key is not None:
        if len(_minutes) >= 4096:
            _minutes.clear()
        minute = ts.replace(second=0, microsecond=0) - _EPOCH
        _minutes[minute_key] = (minute.days * 86_400 + minute.seconds) * 1_000_000
    return seconds


# --- field rules --------------------------------------------------------------------------
#
# A rule is a tuple (kind, a, b, c) read two ways: `_shape` turns it into a msgspec type,
# so `decode` checks a whole JSON text in C and learns only yes or no (about a microsecond
# an event), and `_check` raises the dead-letter reason. `decode` asks `validate` (rule by
# rule through `_check`) only of an event that did not pass, so each reason is worded in
# one place; a decoded dict (the engine's events) goes to `validate` directly.

Rule = tuple[int, Any, Any, Any]
Checker = Callable[[str, object], None]

_STRING, _ENUM, _NUMBER, _BOOLEAN, _OBJECT, _ARRAY, _CALL = range(7)
_NO_LIMIT = float("inf")


def _string(min_len: int = 0, max_len: int | None = None) -> Rule:
    return (_STRING, min_len, _NO_LIMIT if max_len is None else max_len, None)


def _enum(allowed: frozenset[str], nullable: bool = False) -> Rule:
    return (_ENUM, allowed, nullable, None)


def _number(minimum: float | None = None, maximum: float | None = None,
            integer: bool = False) -> Rule:
    return (_NUMBER, -_NO_LIMIT if minimum is None else minimum,
            _NO_LIMIT if maximum is None else maximum, integer)


def _object(rules: dict[str, Rule], required: tuple[str, ...]) -> Rule:
    """A nested object: its fields' rules and the fields it must have (others allowed)."""
    _compiled_whole(*rules.values())
    return (_OBJECT, rules, required, None)


def _array(item: Rule) -> Rule:
    _compiled_whole(item)
    return (_ARRAY, item, None, None)


def _compiled_whole(*rules: Rule) -> None:
    """`decode` runs the `_call` checkers of an event's top-level fields only: nested in an
    object or array, one would go unchecked."""
    if any(rule[0] == _CALL for rule in rules):
        raise TypeError("a _call rule cannot be nested in an object or array")


def _call(checker: Checker) -> Rule:
    """A rule of its own (timestamps, currencies): the checker raises."""
    return (_CALL, checker, None, None)


_BOOL: Rule = (_BOOLEAN, None, None, None)


def _check(rule: Rule, name: str, value: object) -> None:
    """Raise the reason `value` breaks `rule`, if it does."""
    kind, a, b, c = rule
    if kind == _STRING:
        if not isinstance(value, str):
            raise InvalidEvent(f"field '{name}' must be a string, got {_type(value)}")
        if not a <= len(value) <= b:
            limit = "∞" if b == _NO_LIMIT else b
            raise InvalidEvent(f"field '{name}' must be {a}..{limit} characters")
    elif kind == _ENUM:
        if not (value is None and b) and (not isinstance(value, str) or value not in a):
            raise InvalidEvent(f"unknown value {str(value)[:64]!r} for '{name}'")
    elif kind == _NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "an integer" if c else "a number"
            raise InvalidEvent(f"field '{name}' must be {what}, got {_type(value)}")
        if c and isinstance(value, float) and not value.is_integer():
            raise InvalidEvent(f"field '{name}' must be an integer, got {value!r}")
        if not a <= value <= b:  # NaN too
            raise InvalidEvent(f"field '{name}' is out of range: {value!r}")
    elif kind == _BOOLEAN:
        if not isinstance(value, bool):
            raise InvalidEvent(f"field '{name}' must be a boolean, got {_type(value)}")
    elif kind == _OBJECT:
        if not isinstance(value, dict):
            raise InvalidEvent(f"field '{name}' must be an object, got {_type(value)}")
        _check_fields(a, b, value, f"{name}.")
    elif kind == _ARRAY:
        if not isinstance(value, list):
            raise InvalidEvent(f"field '{name}' must be an array, got {_type(value)}")
        for i, item in enumerate(value):
            _check(a, f"{name}[{i}]", item)
    else:
        a(name, value)


def _timestamp(name: str, value: object) -> None:
    parse_timestamp(value, name)


def _check_fields(rules: dict[str, Rule], required: tuple[str, ...], value: dict[str, Any],
                  prefix: str = "") -> None:
    """A JSON object's fields (an event's own, or a nested object's under `prefix`): first
    those it must have, then the rule of each field it has."""
    for key in required:
        if key not in value:
            raise InvalidEvent(f"missing required field '{prefix}{key}'")
    for key, rule in rules.items():
        if key in value:
            _check(rule, prefix + key, value[key])


def _currency(name: str, value: object) -> None:
    if not isinstance(value, str) or len(value) != 3 or not value.isascii() or not value.isupper():
        raise InvalidEvent(f"field '{name}' must be an ISO 4217 code, got {str(value)[:16]!r}")


def _type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


_TIMESTAMP = _call(_timestamp)
_ITEMS = _array(_object({"sku": _string(), "qty": _number(minimum=1, integer=True)},
                        required=("sku", "qty")))
_LOCK = _object({"key": _string(), "acquired": _BOOL, "wait_ms": _number(minimum=0),
                 "held_ms": _number(minimum=0), "ttl_ms": _number(minimum=0)},
                required=("key", "acquired", "wait_ms", "ttl_ms"))
_COMMON: dict[str, Rule] = {
    "event_id": _string(1, 128),
    "stream": _enum(frozenset(STREAMS)),
    "order_no": _string(1, 64),
}

_FIELDS: dict[str, dict[str, Rule]] = {
    "order": {
        "action": _enum(ACTIONS), "result": _enum(RESULTS), "status": _enum(STATUSES),
        "prev_status": _enum(STATUSES, nullable=True), "source": _enum(SOURCES),
        "request_id": _string(), "user_id": _string(), "channel": _string(),
        "amount": _number(minimum=0), "currency": _call(_currency), "items": _ITEMS,
        "warehouse": _string(), "carrier": _enum(CARRIERS), "waybill_no": _string(),
        "client_created_at": _TIMESTAMP, "grace_period_s": _number(minimum=0, integer=True),
        "lock": _LOCK,
    },
    "callback": {
        "gateway": _string(1), "kind": _enum(CALLBACK_KINDS), "trade_status": _enum(TRADE_STATUSES),
        "transaction_id": _string(), "amount": _number(minimum=0), "paid_at": _TIMESTAMP,
        "http_status": _number(100, 599, integer=True), "signature_valid": _BOOL,
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
_ALWAYS = ("event_id", "stream", "order_no", "occurred_at")
# what `_shapes` compiles per stream: every field's rule (the common ones too) and the
# fields it must have
_ALL_RULES = {stream: {**_COMMON, **fields} for stream, fields in _FIELDS.items()}
_ALL_REQUIRED = {stream: frozenset(_ALWAYS + _REQUIRED[stream]) for stream in _FIELDS}


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


def _shape(rule: Rule, name: str) -> Any:
    """The msgspec type that accepts what `rule` accepts, for JSON input. A `_call` rule's
    value is kept raw here and checked by its checker afterwards."""
    kind, a, b, c = rule
    if kind == _STRING:
        return Annotated[str, msgspec.Meta(min_length=a, max_length=_limit(b))]
    if kind == _ENUM:
        allowed = Literal[tuple(sorted(a))]  # type: ignore[valid-type]
        return allowed | None if b else allowed
    if kind == _NUMBER:  # float takes JSON integers too; finite bounds, as msgspec wants
        return Annotated[float, msgspec.Meta(ge=max(a, -sys.float_info.max),
                                             le=min(b, sys.float_info.max),
                                             multiple_of=1 if c else None)]
    if kind == _BOOLEAN:
        return bool
    if kind == _OBJECT:
        return _struct(name, a, b)
    if kind == _ARRAY:
        return list[_shape(a, name)]  # type: ignore[misc]
    return msgspec.Raw


def _limit(bound: float) -> int | None:
    return None if bound == _NO_LIMIT else int(bound)


def _struct(name: str, rules: dict[str, Rule], required: Collection[str],
            **options: Any) -> type[msgspec.Struct]:
    """A msgspec struct with a field per rule; unknown fields are allowed, as in the rules."""
    fields = [(key, _shape(rule, key)) if key in required
              else (key, _shape(rule, key), msgspec.UNSET)
              for key, rule in rules.items()]
    return msgspec.defstruct(f"_{name.title()}Shape", fields, kw_only=True, **options)


def _shapes() -> msgspec.json.Decoder:
    """One msgspec struct per stream, tagged by `stream`, built from the same rules."""
    structs = []
    for stream, rules in _ALL_RULES.items():
        fields = {key: rule for key, rule in rules.items() if key != "stream"}
        fields["occurred_at"] = _TIMESTAMP  # parsed by parse_timestamp, not a `_CALLS` one
        structs.append(_struct(stream, fields, _ALL_REQUIRED[stream], tag_field="stream",
                               tag=stream))
    return msgspec.json.Decoder(Union[tuple(structs)])  # noqa: UP007 (a runtime tuple)


_SHAPES = _shapes()
_CALLS = {stream: tuple((name, rule[1]) for name, rule in rules.items() if rule[0] == _CALL)
          for stream, rules in _ALL_RULES.items()}


def _passes_all(raw: bytes | str, data: Any) -> Event | None:
    """The event if it keeps every rule, else None (then `validate` says why).

    msgspec checks the JSON text against types compiled from the rules (strings, enums,
    numbers, booleans, required fields) in C, about a microsecond, then the few `_call`
    rules, the timestamp and the conditionally required fields run here. A duplicated key
    is checked in every copy, so the value orjson kept was checked too. What msgspec
    cannot read (an unknown field nested deeper than its recursion limit, which orjson
    reads) goes to `validate` like an event that failed.
    """
    try:
        _SHAPES.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nesting orjson allows
        return None
    stream = data["stream"]
    try:
        ts = parse_timestamp(data["occurred_at"])
        for name, checker in _CALLS[stream]:
            if name in data:
                checker(name, data[name])
    except InvalidEvent:
        return None
    for name in _conditional_required(stream, data):
        if name not in data:
            return None
    return Event(data, ts)


def validate(data: object) -> Event:
    """Check one decoded JSON value against the contract, rule by rule in the contract's
    order; raise InvalidEvent with the first reason found."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"not a JSON object but {_type(data)}")
    _check_fields(_COMMON, _ALWAYS, data)
    ts = parse_timestamp(data["occurred_at"])
    stream = data["stream"]
    for name in _REQUIRED[stream]:
        if name not in data:
            raise InvalidEvent(f"missing required field '{name}' for stream '{stream}'")
    rules = _FIELDS[stream]
    for name, value in data.items():
        rule = rules.get(name)
        if rule is not None:
            _check(rule, name, value)
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
    event = _passes_all(raw, data)
    return event if event is not None else validate(data)


def dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)
