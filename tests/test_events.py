"""The input contract: our validator agrees with the JSON Schema, and its two readings
of the rules (compiled for JSON text, rule by rule for a reason) agree with each other."""

from __future__ import annotations

import copy
import json
import pickle
import random
from datetime import datetime

import jsonschema
import orjson
import pytest

from orderwatch import events as ev
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.events import _RFC3339, Event, InvalidEvent, decode, parse_timestamp, validate

CONTRACT_EXAMPLES = [
    '{"event_id":"e1","stream":"order","order_no":"ORD20260223001","occurred_at":"2026-02-23T10:00:00+08:00","action":"create","result":"ok","status":"pending_payment","source":"oms","user_id":"U77","channel":"wechat_miniapp","amount":199.00,"items":[{"sku":"SKU-1","qty":1}],"grace_period_s":172800,"client_created_at":"2026-02-23T02:00:00Z"}',
    '{"event_id":"e2","stream":"callback","order_no":"ORD20260223001","occurred_at":"2026-02-23T10:01:05+08:00","gateway":"wechatpay","kind":"notify","trade_status":"SUCCESS","transaction_id":"4200001","amount":199.00,"paid_at":"2026-02-23T10:01:00+08:00","http_status":403,"signature_valid":true,"attempt":1}',
    '{"event_id":"e3","stream":"order","order_no":"ORD20260223001","occurred_at":"2026-02-23T11:00:00+08:00","action":"ship","result":"ok","status":"shipped","prev_status":"awaiting_shipment","source":"wms","warehouse":"WH-EAST","carrier":"ZTO","waybill_no":"ZT123456789012","request_id":"r-9","lock":{"key":"lock:ship:ORD20260223001","acquired":true,"wait_ms":12,"held_ms":32700,"ttl_ms":30000}}',
    '{"event_id":"e4","stream":"logistics","order_no":"ORD20260223001","occurred_at":"2026-02-24T09:30:00+08:00","carrier":"ZTO","waybill_no":"ZT123456789012","event":"picked_up","via":"poll"}',
]


@pytest.fixture(scope="module")
def schema(shared):
    return json.loads((shared / "contract" / "events.schema.json").read_text())


def schema_accepts(schema, data) -> bool:
    checker = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return checker.is_valid(data)


def ours_accepts(data) -> bool:
    try:
        validate(data)
    except InvalidEvent:
        return False
    return True


@pytest.mark.parametrize("line", CONTRACT_EXAMPLES)
def test_contract_examples_are_valid(line, schema):
    event = decode(line)
    assert schema_accepts(schema, json.loads(line))
    assert event.order_no == "ORD20260223001"


def test_unknown_fields_are_kept():
    data = json.loads(CONTRACT_EXAMPLES[3])
    data["x_tenant"] = "shop-9"
    assert validate(data).data["x_tenant"] == "shop-9"


def test_event_time_may_be_any_moment_from_1970_to_2099(schema):
    """The schema takes any date-time; a time no health-metric minute can hold (ClickHouse
    DateTime) is a bad timestamp, rather than an insert failing until Bytewax aborts."""
    for edge, ts in (("1970-01-01T00:00:00Z", 0.0),
                     ("2099-12-31T23:59:59.999Z", 4_102_444_799.999)):
        assert decode(CONTRACT_EXAMPLES[0].replace("2026-02-23T10:00:00+08:00", edge)
                      ).ts == pytest.approx(ts)
    for outside in ("1969-12-31T23:59:59.999Z", "2100-01-01T08:00:00+08:00"):
        data = json.loads(CONTRACT_EXAMPLES[0])
        data["occurred_at"] = outside
        assert schema_accepts(schema, data)
        with pytest.raises(InvalidEvent, match="outside the years 1970 to 2099"):
            validate(data)


def test_occurred_at_is_event_time_with_offset():
    a = decode(CONTRACT_EXAMPLES[0].replace("2026-02-23T10:00:00+08:00", "2026-02-23T02:00:00Z"))
    b = decode(CONTRACT_EXAMPLES[0])
    assert a.ts == b.ts


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda d: d.pop("event_id"), "missing required field 'event_id'"),
    (lambda d: d.update(amount="199"), "field 'amount' must be a number"),
    (lambda d: d.update(status="lost"), "unknown value 'lost' for 'status'"),
    (lambda d: d.update(occurred_at="2026-02-23 10:00"), "bad timestamp in 'occurred_at'"),
    (lambda d: d.update(occurred_at="2026-02-23T10:00:00"), "bad timestamp in 'occurred_at'"),
    (lambda d: d.pop("grace_period_s"), "missing required field 'grace_period_s'"),
    (lambda d: d.update(items=[{"sku": "A", "qty": 0}]), "out of range"),
    (lambda d: d.update(amount=True), "must be a number"),
    (lambda d: d.update(stream="refunds"), "unknown value 'refunds' for 'stream'"),
])
def test_bad_events_say_why(mutate, reason, schema):
    data = json.loads(CONTRACT_EXAMPLES[0])
    mutate(data)
    with pytest.raises(InvalidEvent, match=reason.replace("(", r"\(")):
        validate(data)
    assert not schema_accepts(schema, data)


@pytest.mark.parametrize("text", ["not json", '{"a": ', "[1, 2]", '"s"', "null"])
def test_non_objects_are_rejected(text):
    with pytest.raises(InvalidEvent):
        decode(text)


def _mutations(rng: random.Random, data: dict) -> dict:
    """One random corruption of a valid event, in the ways producers get things wrong."""
    out = copy.deepcopy(data)
    key = rng.choice(sorted(out))
    choice = rng.randrange(6)
    if choice == 0:
        out.pop(key)
    elif choice == 1:
        out[key] = rng.choice([None, 1, 1.5, "x", True, [], {}])
    elif choice == 2:
        out[key] = "UNKNOWN_" + str(out[key])
    elif choice == 3:
        out["occurred_at"] = rng.choice(["2026-02-30T00:00:00Z", "2026-02-23", "1700000000",
                                         "2026-02-23T10:00:00+0800"])
    elif choice == 4 and isinstance(out.get("lock"), dict):
        out["lock"].pop(rng.choice(["key", "acquired", "wait_ms", "ttl_ms"]))
    else:
        out[key] = -1
    return out


def test_validator_agrees_with_schema_on_simulated_and_corrupted_events(schema):
    """Every engine event is valid; on thousands of corruptions both validators agree."""
    sim = Simulator(SimConfig(seed=3, orders=300,
                              faults=frozenset(SCENARIOS) - {"malformed_events"}))
    events = list(sim.events())
    rng = random.Random(5)
    disagreements = []
    for data in events[:1500]:
        assert ours_accepts(data), data
        assert schema_accepts(schema, data), data
        for _ in range(4):
            bad = _mutations(rng, data)
            if ours_accepts(bad) != schema_accepts(schema, bad):
                disagreements.append(bad)
    assert not disagreements[:5]


def _reference_parse(value: object) -> float | None:
    """RFC 3339 as the contract reads it, by pattern and datetime alone (None: rejected)."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        return datetime.fromisoformat(value.replace("z", "Z")).timestamp()
    except ValueError:
        return None


def _timestamp_variants(rng: random.Random) -> list[str]:
    date = f"20{rng.randint(20, 39)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    minute = f"{date}{rng.choice('Tt ')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
    zone = rng.choice(["Z", "z", "+08:00", "-05:30", "+00:00", "+14:00", "-12:00"])
    seconds = [f"{rng.randint(0, 59):02d}" + (f".{rng.randint(0, 10**d - 1):0{d}d}" if d else "")
               for d in (0, 1, 3, 6, 7, 9)]
    broken = ["60", "99", "5", "005", "00.", "00.1234567890", "0a", "00.12a", "٠٠", "00.١٢",
              "00,5", "00.5 ", " 00"]
    return [minute + s + zone for s in seconds + broken] + [
        minute + "00" + bad for bad in ("", "+0800", "+08", "+24:00", "Zz", "+08:00Z", "-")]


def test_timestamps_parse_as_the_reference_does_whatever_the_minute_cache_holds():
    """Seconds are parsed by hand once the minute and zone were seen: every variant, seen
    first or second, must give the reference's value to the last bit, or be rejected."""
    rng = random.Random(3339)
    for _ in range(300):
        for text in _timestamp_variants(rng) * 2:  # the second pass finds the minute cached
            expected = _reference_parse(text)
            if expected is None:
                with pytest.raises(InvalidEvent):
                    parse_timestamp(text)
            else:
                assert parse_timestamp(text) == expected, text


_PALETTE = [None, True, False, 0, -1, 1, 1.5, 2.0, 600, 2**63, 1e300, -1e300, "", "x",
            "x" * 200, "é" * 64, "😀" * 65, "ok", "create", "SUCCESS", "notify", "ZTO",
            "picked_up", "push", "CNY", "cny", "2026-02-23T10:00:00Z", "2026-02-23T10:00:00",
            [], [{"sku": "a", "qty": 1}], [{"sku": "a", "qty": 2.0, "extra": None}],
            [{"sku": "a", "qty": 0}], [{"sku": "a", "qty": 1.5}], [{"sku": "a", "qty": "1"}],
            [{"sku": 1, "qty": 1}], [{"qty": 1}], [{"sku": "a", "qty": 1}, 5], ["a"], {},
            {"key": "k", "acquired": True, "wait_ms": 1, "ttl_ms": 2},
            {"key": "k", "acquired": True, "wait_ms": 1, "ttl_ms": 2, "held_ms": -1},
            {"key": "k", "acquired": True, "wait_ms": 1, "ttl_ms": 2, "held_ms": None},
            {"key": "k", "acquired": True, "wait_ms": 1, "ttl_ms": 2, "other": [1]},
            {"key": "k", "acquired": True, "wait_ms": 1},
            {"key": "k", "acquired": 1, "wait_ms": 1, "ttl_ms": 2}]


def _shapes_of_every_kind() -> list[dict]:
    """One simulated event of each shape (stream, action, kind, trade status)."""
    sim = Simulator(SimConfig(seed=4, orders=40,
                              faults=frozenset(SCENARIOS) - {"malformed_events"}))
    shapes = {}
    for data in sim.events():
        key = (data["stream"], data.get("action"), data.get("kind"), data.get("trade_status"))
        shapes.setdefault(key, data)
    return list(shapes.values())


def test_the_compiled_pass_accepts_exactly_what_the_rule_by_rule_check_does():
    """`decode` checks the JSON text with msgspec types built from the rules and words a
    reason (`validate`, rule by rule) only for events that fail there: both readings must
    accept the same events, whatever the field, and give them the same event time."""
    events = _shapes_of_every_kind()
    passed = failed = 0
    for data in events:
        fields = set(data) | set(ev._ALL_RULES[data["stream"]]) | {"occurred_at"}
        for name in sorted(fields):
            for value in [..., *_PALETTE]:  # Ellipsis: the field removed
                bad = copy.deepcopy(data)
                if value is ...:
                    bad.pop(name, None)
                else:
                    bad[name] = copy.deepcopy(value)
                raw = orjson.dumps(bad)
                event = ev._passes_all(raw, orjson.loads(raw))
                if event is None:
                    failed += 1
                    with pytest.raises(InvalidEvent):
                        validate(orjson.loads(raw))
                else:
                    passed += 1
                    assert validate(orjson.loads(raw)).ts == event.ts
    assert len(events) >= 12 and passed > 1000 and failed > 1000, (len(events), passed, failed)


def test_a_key_given_twice_is_checked_in_every_copy():
    """JSON allows a key twice and orjson keeps the last copy: the compiled pass must not
    let through a bad copy it did not read, wherever it stands."""
    for data in _shapes_of_every_kind():
        text = orjson.dumps(data).decode()
        for name in data:
            for bad in ("-1", "null", '"UNKNOWN"', "[]"):
                for raw in ('{"%s":%s,%s' % (name, bad, text[1:]),  # noqa: UP031
                            '%s,"%s":%s}' % (text[:-1], name, bad)):  # noqa: UP031
                    kept = orjson.loads(raw)
                    if ev._passes_all(raw, kept) is not None:
                        assert ours_accepts(kept), raw
                    assert ours_accepts(kept) == _decodes(raw), raw


def _decodes(raw: str) -> bool:
    try:
        decode(raw)
    except InvalidEvent:
        return False
    return True


@pytest.mark.parametrize("depth", [10, 1000])
def test_an_unknown_field_nested_deeper_than_msgspec_reads_is_still_an_event(depth):
    """orjson reads 1,000 levels of nesting and msgspec stops short of that with a
    RecursionError: the event is valid (unknown fields are kept) and must decode, not
    crash the dataflow."""
    data = orjson.loads(CONTRACT_EXAMPLES[3])
    raw = orjson.dumps(data)[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"
    event = decode(raw)
    assert event.ts == validate(orjson.loads(raw)).ts and "extra" in event.data


def test_a_checker_of_its_own_cannot_be_nested_where_decode_would_not_run_it():
    with pytest.raises(TypeError, match="cannot be nested"):
        ev._object({"at": ev._TIMESTAMP}, required=())
    with pytest.raises(TypeError, match="cannot be nested"):
        ev._array(ev._TIMESTAMP)


# An Event pickled before Event.__reduce__ (at cc0a5d8): pickle's default for slots.
_EVENT_PICKLED_BY_SLOTS = (
    b"\x80\x05\x95\xa5\x00\x00\x00\x00\x00\x00\x00\x8c\x11orderwatch.events\x94\x8c\x05"
    b"Event\x94\x93\x94)\x81\x94N}\x94(\x8c\x04data\x94}\x94(\x8c\x08event_id\x94\x8c\x02"
    b"E1\x94\x8c\x06stream\x94\x8c\x05order\x94\x8c\x08order_no\x94\x8c\x02O1\x94\x8c\x0b"
    b"occurred_at\x94\x8c\x142026-02-23T00:00:00Z\x94uh\x07h\x08h\x0bh\x0ch\th\n\x8c\x02ts"
    b"\x94GA\xdaf\xe6 \x00\x00\x00u\x86\x94b.")


def test_an_event_crosses_processes_as_its_data_and_time_and_old_snapshots_still_load():
    data = {"event_id": "E1", "stream": "order", "order_no": "O1",
            "occurred_at": "2026-02-23T00:00:00Z"}
    for event in (pickle.loads(pickle.dumps(Event(data, 1771804800.0), protocol=5)),
                  pickle.loads(_EVENT_PICKLED_BY_SLOTS)):
        assert type(event) is Event
        assert (event.data, event.ts) == (data, 1771804800.0)
        assert (event.event_id, event.stream, event.order_no) == ("E1", "order", "O1")
    assert Event(data, 1.0).__reduce__() == (Event, (data, 1.0))
