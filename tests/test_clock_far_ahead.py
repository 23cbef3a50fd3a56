"""A file or the engine keeps time of its own, so the wall clock alone cannot tell a clock
fault there: a simulated week may lie ahead of it. An event is refused when it is more
than `max_ahead_of_neighbours_s` ahead of the wall clock and past the time of the records
read with it (its chunk): from their median up, as far as no gap exceeds that bound.
Kafka, live, is held to the wall clock alone (`tests/test_kafka.py`)."""

from __future__ import annotations

import orjson

from orderwatch.pipelines.decoding import NEVER, Chunk, decode_chunk, reach
from orderwatch.timestamps import to_rfc3339

from conftest import HOUR, T0, order_event, orderwatch

DAY = 24 * HOUR
YEARS_30 = 30 * 365 * DAY


def lines(start: float, n: int, step_s: float = 60.0) -> list[bytes]:
    return [orjson.dumps(order_event(f"O{k}", start - T0 + k * step_s, "create",
                                     "pending_payment").data) for k in range(n)]


def moved(record: bytes, event_id: str, occurred_at: str) -> bytes:
    return orjson.dumps(dict(orjson.loads(record), event_id=event_id, occurred_at=occurred_at))


def file_chunk(records: list[bytes], wall_clock: float, bound: float = DAY) -> Chunk:
    return Chunk("f.jsonl", 1, records, ingested_at=wall_clock, max_ahead_s=bound,
                 own_time=True)


def test_one_event_decades_ahead_of_its_chunk_and_the_wall_clock_is_a_dead_letter():
    records = lines(T0, 100)
    records.insert(41, moved(records[40], "future", "2056-02-23T10:00:00+08:00"))
    records.insert(42, b"not json")
    decoded = decode_chunk(file_chunk(records, wall_clock=T0 + 30 * DAY))
    assert [e.event_id for e in decoded.events] == [orjson.loads(r)["event_id"]
                                                    for r in records if r[:1] == b"{"
                                                    and b"future" not in r]
    assert decoded.max_ts == T0 + 99 * 60  # the neighbours' time, not 2056's
    far, not_json = sorted(decoded.dead, key=lambda d: d.position)
    assert (far.position, far.payload) == (42, records[41])  # kept whole, line number kept
    assert far.reason.startswith(
        "occurred_at far ahead of the events read with it: 2056-02-23T02:00:00Z is ")
    assert "ORDERWATCH_PIPELINE_MAX_AHEAD_OF_NEIGHBOURS_S" in far.reason
    assert far.reason_class() == "occurred_at_far_ahead_of_the_events_read_with_it"
    # each dead letter counts in the minute of the last good event before it, not in 2056
    assert far.read_after == not_json.read_after == T0 + 40 * 60


def test_a_simulated_week_ahead_of_the_wall_clock_is_its_own_time():
    start = T0 + 3 * DAY  # the wall clock is at T0: every event is days ahead of it
    records = lines(start, 2000, step_s=5.0)  # a chunk of 2.8 hours
    decoded = decode_chunk(file_chunk(records, wall_clock=T0))
    assert decoded.dead == []
    assert len(decoded.events) == 2000
    assert decoded.max_ts == start + 1999 * 5.0


def test_a_sparse_stretch_ahead_of_the_wall_clock_moves_on_from_event_to_event():
    """The end of a simulated file: few orders still open, 2,000 lines span days. Its last
    lines are days past the chunk's median, but each only minutes past the one before."""
    start = T0 + 3 * DAY
    records = lines(start, 2000, step_s=150.0)  # 3.5 days in one chunk
    decoded = decode_chunk(file_chunk(records, wall_clock=T0))
    assert decoded.dead == []
    assert decoded.max_ts == start + 1999 * 150.0
    records.insert(1500, moved(records[1499], "future", "2056-02-23T10:00:00+08:00"))
    decoded = decode_chunk(file_chunk(records, wall_clock=T0))
    assert [d.position for d in decoded.dead] == [1501]
    assert (f" past them (they run to {to_rfc3339(start + 1999 * 150.0)} from their median"
            in decoded.dead[0].reason)
    assert decoded.max_ts == start + 1999 * 150.0


def test_a_file_in_order_number_order_runs_on_through_each_orders_days():
    """Exported by order rather than by time: each order's events span a week (its scans
    six hours apart), so its last ones lie days past the order before it and past the
    chunk's median, and every order starts back at its creation."""
    start = T0 + 3 * DAY  # ahead of the wall clock
    records = []
    for k in range(80):  # two orders a minute
        created = start - T0 + k * 30.0
        for i, after in enumerate((0, 600, *(h * 6 * HOUR for h in range(1, 28)))):
            records.append(orjson.dumps(order_event(f"O{k}", created + after, "create",
                                                    "pending_payment",
                                                    event_id=f"O{k}-{i}").data))
    decoded = decode_chunk(file_chunk(records, wall_clock=T0))
    assert decoded.dead == []
    assert len(decoded.events) == len(records)


def test_the_chunks_own_time_is_reached_from_its_median_in_steps_of_at_most_the_bound():
    assert reach([1.0, 2.0, 3.0, 50.0], gap=10.0) == 3.0
    assert reach([1.0, 2.0, 3.0, 12.0, 21.0, 40.0], gap=10.0) == 21.0
    assert reach([-500.0, 100.0, 101.0, 102.0], gap=10.0) == 102.0  # far behind: no anchor
    assert reach([5.0, 5000.0], gap=10.0) == 5.0  # the lower median: two lines, one wrong
    assert reach([7.0], gap=10.0) == 7.0
    records = lines(T0, 10)
    for event_id in ("future-1", "future-2"):  # two lines of the same broken clock
        records.append(moved(records[0], event_id, "2056-02-23T10:00:00+08:00"))
    decoded = decode_chunk(file_chunk(records, wall_clock=T0 + 30 * DAY))
    assert [d.position for d in decoded.dead] == [11, 12]


def test_an_event_ahead_of_its_chunk_but_not_of_the_wall_clock_is_history():
    records = lines(T0, 100)
    later = moved(records[50], "days-later", "2026-03-01T10:00:00+08:00")  # 6 days after
    records.append(later)
    decoded = decode_chunk(file_chunk(records, wall_clock=T0 + 30 * DAY))
    assert decoded.dead == []
    assert decoded.events[-1].event_id == "days-later"
    # and when a clock fault in the same chunk has it judged against its neighbours
    records.append(moved(later, "future", "2056-02-23T10:00:00+08:00"))
    decoded = decode_chunk(file_chunk(records, wall_clock=T0 + 30 * DAY))
    assert [d.position for d in decoded.dead] == [102]
    assert decoded.events[-1].event_id == "days-later"


def test_ahead_of_the_wall_clock_by_less_than_the_bound_from_its_chunk_is_kept():
    """Ahead of the wall clock by days, and of its chunk by less than the bound."""
    records = lines(T0 + 5 * DAY, 100)
    records.append(moved(records[0], "next-day", "2026-02-28T20:00:00+08:00"))
    decoded = decode_chunk(file_chunk(records, wall_clock=T0))
    assert decoded.dead == []
    assert decoded.events[-1].event_id == "next-day"
    too_far = [*records[:-1], moved(records[0], "too-far", "2026-03-01T20:00:00+08:00")]
    decoded = decode_chunk(file_chunk(too_far, wall_clock=T0))
    assert [d.position for d in decoded.dead] == [101]


def test_without_a_bound_or_for_a_live_feed_the_rules_are_as_before():
    records = lines(T0, 10)
    records.append(moved(records[0], "future", "2056-02-23T10:00:00+08:00"))
    unbounded = decode_chunk(file_chunk(records, wall_clock=T0, bound=float("inf")))
    assert unbounded.dead == [] and unbounded.events[-1].event_id == "future"
    live = decode_chunk(Chunk("orders/0", 1, records, ingested_at=T0 + 30 * DAY,
                              max_ahead_s=HOUR))
    assert [d.reason.split(":")[0] for d in live.dead] == ["occurred_at ahead of the wall clock"]
    assert decode_chunk(file_chunk([], wall_clock=T0)).max_ts == NEVER


def test_a_replay_refuses_an_event_thirty_years_ahead_and_alerts_as_without_it(tmp_path):
    """One event 30 years ahead in a clean shop's file used to move the replay's event time
    to 2056: every open order timed out, 3,266 alerts fired and resolved."""
    clean = tmp_path / "clean.jsonl"
    result = orderwatch("simulate", "--out", str(clean), "--orders", "300", "--seed", "5",
                        "--faults", "double_click_ship,silent_carrier,stuck_review")
    assert result.returncode == 0, result.stderr
    records = clean.read_bytes().splitlines()
    at = len(records) // 2
    records.insert(at, moved(records[at], "future-1", "2056-02-23T10:00:00+08:00"))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(records) + b"\n")
    out = {}
    for name, path in (("clean", clean), ("bad", bad)):
        alerts = tmp_path / f"{name}.alerts.jsonl"
        result = orderwatch("replay", str(path), "--data", str(tmp_path / name),
                            "--alerts-out", str(alerts), timeout=300)
        assert result.returncode == 0, result.stderr
        out[name] = result.stdout, alerts.read_text()
    assert "2056" not in out["bad"][0]
    assert "dead letters       1" in out["bad"][0] and "dead letters       0" in out["clean"][0]
    assert out["clean"][1].count("\n") >= 5  # the faults' alerts
    assert out["bad"][1] == out["clean"][1]
    result = orderwatch("sql", "--data", str(tmp_path / "bad"),
                        "SELECT position, reason FROM dead_letters")
    position, reason = result.stdout.splitlines()[1].split("\t")
    assert int(position) == at + 1  # its line number
    assert reason.startswith("occurred_at far ahead of the events read with it: 2056-")
