from __future__ import annotations

import contextlib
import pickle
import random

import pytest

from orderwatch.config import PipelineSettings, Settings
from orderwatch.detectors import base
from orderwatch.detectors.base import LEFT_MEMORY, STALE_SLACK, Deadlines
from orderwatch.detectors.order_book import OrderBook, has_digest
from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.events import Event, InvalidEvent, validate
from orderwatch.pipelines.aggregate_shard import AggregateShard
from orderwatch.pipelines.order_shard import OrderShard, ShardInput, ShardOutput
from orderwatch.pipelines.watermark import (
    DRAIN_STEPS,
    NEVER,
    MinOfUpstreams,
    WatermarkTracker,
)

from conftest import HOUR, MIN, T0, callback, order_event, ship


def test_watermark_waits_for_every_partition_and_follows_the_slowest():
    wm = WatermarkTracker(lateness_s=60, expected_partitions=2)
    wm.observe("orders.jsonl", 1000.0, False, 2)
    assert wm.watermark() == NEVER  # callbacks.jsonl has not reported yet
    wm.observe("callbacks.jsonl", 5000.0, False, 2)
    assert wm.watermark() == 1000.0 - 60
    wm.observe("orders.jsonl", 2000.0, True, 2)  # orders ended: no longer holds back
    assert wm.watermark() == 5000.0 - 60
    wm.observe("callbacks.jsonl", 6000.0, True, 2)
    assert wm.all_ended and wm.watermark() == 6000.0  # the end: no lateness left


def test_watermark_never_goes_back():
    wm = WatermarkTracker(lateness_s=0)
    wm.observe("p", 100.0, False, 1)
    wm.observe("p", 50.0, False, 1)
    assert wm.watermark() == 100.0


def test_min_of_upstreams():
    m = MinOfUpstreams(expected=2)
    m.observe("a", 10.0)
    assert m.watermark() == NEVER
    m.observe("b", 5.0)
    m.observe("a", 3.0)
    assert m.watermark() == 5.0


def test_book_drops_redeliveries_and_tracks_status_by_event_time():
    book = OrderBook()
    create = order_event("B1", 0, "create", "pending_payment")
    pay = order_event("B1", 60, "pay", "paid", prev_status="pending_payment")
    assert book.apply(create)[1] and book.apply(pay)[1]
    assert book.apply(create)[1] is False  # same event_id again
    late = order_event("B1", 30, "status_sync", "pending_payment")
    order, fresh = book.apply(late)
    assert fresh and order.status == "paid" and order.left_pending_at == T0 + 60


def test_a_seen_digest_must_be_one_whole_record():
    seen = b"AAAAAAAA" + b"BBBBBBBB"
    assert has_digest(seen, b"BBBBBBBB") and has_digest(seen, b"AAAAAAAA")
    assert not has_digest(seen, b"AAAABBBB")  # straddles the two records
    assert not has_digest(b"xAAAAAAAA" + b"yyyyyyy", b"AAAAAAAA")


def test_finished_orders_leave_memory_after_retention_idle_ones_after_max_idle():
    book = OrderBook(finished_retention_s=HOUR, max_idle_s=48 * HOUR)
    book.apply(order_event("F1", 0, "create", "pending_payment"))
    book.apply(order_event("F1", 60, "cancel", "cancelled"))
    book.apply(ship("S1", 0))
    assert book.expire(T0 + 30 * 60) == []
    assert book.expire(T0 + 60 + HOUR) == ["F1"]
    assert book.expire(T0 + 47 * HOUR) == []
    assert book.expire(T0 + 48 * HOUR) == ["S1"]
    assert len(book) == 0


def test_rescheduled_and_cancelled_timers_do_not_pile_up():
    # every finished order is rescheduled once (idle limit → retention); the entries it
    # leaves behind must not wait in the heap for the idle limit
    d = Deadlines()
    for i in range(20_000):
        d.schedule(f"O{i:05d}", 14 * 24 * HOUR + i)
        d.schedule(f"O{i:05d}", HOUR + i)
        if i % 2:
            d.cancel(f"O{i:05d}")
    assert len(d) == 10_000
    assert len(d._heap) <= 2 * len(d) + STALE_SLACK
    due = d.due(HOUR + 100)
    assert due == [(f"O{i:05d}", HOUR + i) for i in range(0, 101, 2)]
    assert d.due(14 * 24 * HOUR + 30_000) == [(f"O{i:05d}", HOUR + i)
                                               for i in range(102, 20_000, 2)]
    assert len(d) == 0


@pytest.mark.parametrize("slack", [STALE_SLACK, 8])
def test_orders_leave_when_they_went_quiet_whatever_the_expiry_calls(slack, monkeypatch):
    # a model of the rule (quiet for the retention once finished, for the idle limit
    # otherwise) against the book, with expiry checked at irregular times; a small
    # slack makes the book rebuild its heap often
    monkeypatch.setattr(base, "STALE_SLACK", slack)
    rng = random.Random(11)
    idle = 48 * HOUR  # long beside the retention: finished orders leave stale entries
    book = OrderBook(finished_retention_s=HOUR, max_idle_s=idle)
    last: dict[str, tuple[float, bool]] = {}  # order → (last event offset, finished)
    now = 0.0
    for step in range(4000):
        now += rng.uniform(0, 120)
        no = f"Q{rng.randrange(600):03d}"
        if no not in book.orders:
            book.apply(order_event(no, now, "create", "pending_payment"))
            last[no] = (now, False)
        elif not last[no][1]:
            done = rng.random() < 0.5
            book.apply(order_event(no, now, "cancel" if done else "status_sync",
                                   "cancelled" if done else "pending_payment"))
            last[no] = (now, done)
        if step % rng.choice((1, 7, 50)) == 0:
            due = sorted((t + (HOUR if done else idle), n)
                         for n, (t, done) in last.items() if t + (HOUR if done else idle)
                         <= now)
            assert book.expire(T0 + now) == [n for _, n in due]
            for _, n in due:
                del last[n]
        assert len(book._expiry) <= 2 * len(book) + slack
    assert set(book.orders) == set(last)


def test_an_order_finished_and_expired_in_one_step_still_reports_its_last_state():
    book = OrderBook(finished_retention_s=HOUR)
    book.apply(order_event("F2", 0, "create", "pending_payment"))
    assert [o.status for o in book.drain_changed()] == ["pending_payment"]
    book.apply(order_event("F2", 60, "cancel", "cancelled"))
    assert book.expire(T0 + 2 * HOUR) == ["F2"]
    assert [(o.order_no, o.status) for o in book.drain_changed()] == [("F2", "cancelled")]


def test_reorder_buffer_releases_oldest_first_and_flags_late_items():
    from orderwatch.detectors.event_time import ReorderBuffer

    buf: ReorderBuffer[str] = ReorderBuffer()
    for ts, key in ((30.0, "c"), (10.0, "b"), (10.0, "a"), (10.0, "a")):  # "a" twice
        assert buf.push(ts, key, key)
    assert list(buf.release(20.0)) == ["a", "a", "b"]
    assert not buf.push(15.0, "late", "late") and buf.late == 1
    assert list(buf.release(40.0)) == ["c"] and len(buf) == 0


def test_alerts_still_firing_resolve_when_their_order_leaves_memory():
    settings = Settings(pipeline=PipelineSettings(max_idle_s=6 * HOUR))
    shard = OrderShard(settings, "s")

    def feed(*events: Event) -> list[tuple[str, str, str]]:
        out = shard.process(ShardInput("s", list(events), "p", max(e.ts for e in events),
                                       False, 1))
        return [(a.alert, a.status, a.summary) for a in out.alerts]

    # paid at the gateway, but the order never leaves pending payment, nor hears more
    fired = feed(order_event("L1", 0, "create", "pending_payment"), callback("L1", 60))
    fired += feed(order_event("X1", HOUR, "create", "pending_payment"))
    assert ("callback_lost", "firing") in [(a, s) for a, s, _ in fired]
    later = feed(order_event("X2", 7 * HOUR, "create", "pending_payment"))
    assert ("callback_lost", "resolved", LEFT_MEMORY) in later
    assert "L1" not in shard.book.orders


def test_the_end_of_input_crosses_the_last_lateness_in_steps():
    """A draining source's last inputs move the watermark by an eighth of the allowed
    lateness each, so the last 5 minutes of events are not all released at once."""
    wm = WatermarkTracker(lateness_s=80, expected_partitions=2)
    wm.observe("a#1/2", 1000.0, False, 2)
    wm.observe("b#2/2", 990.0, False, 2)
    assert wm.watermark() == 990.0 - 80
    marks = []
    for left in reversed(range(DRAIN_STEPS)):
        wm.observe("a#1/2", NEVER, True, 2, draining=left)
        wm.observe("b#2/2", NEVER, True, 2, draining=left)
        marks.append(wm.watermark())
    assert marks == [1000.0 - 80 * k / DRAIN_STEPS for k in reversed(range(DRAIN_STEPS))]
    assert marks[-1] == 1000.0  # the end: every timeout due by the last event fires


def test_a_tracker_snapshotted_before_draining_resumes():
    wm = WatermarkTracker(lateness_s=60)
    wm.observe("p", 100.0, True, 1)
    state = wm.__getstate__()
    state[1]["_ended"] = set(state[1].pop("_draining"))  # as written before draining
    old = WatermarkTracker.__new__(WatermarkTracker)
    old.__setstate__(state)
    assert pickle.loads(pickle.dumps(old)).watermark() == 100.0


def test_a_tracker_resumed_on_a_grown_file_waits_for_its_new_end():
    wm = WatermarkTracker(lateness_s=60)
    wm.observe("p", 100.0, True, 1)
    assert wm.finished
    wm.observe("p", 200.0, False, 1)  # the file had grown when the replay resumed
    assert not wm.all_ended and not wm.finished and wm.watermark() == 200.0 - 60


def test_min_of_upstreams_snapshotted_before_it_knew_finished_upstreams_resumes():
    m = MinOfUpstreams(expected=1)
    m.observe("a", 10.0)
    state = m.__getstate__()
    del state[1]["_finished"]  # as written before the end of input closed the last minute
    old = MinOfUpstreams.__new__(MinOfUpstreams)
    old.__setstate__(state)
    resumed = pickle.loads(pickle.dumps(old))
    assert resumed.watermark() == 10.0 and not resumed.finished
    resumed.observe("a", 20.0, finished=True)
    assert resumed.finished
    resumed.observe("a", 30.0)  # resumed again, on a file that had grown
    assert not resumed.finished


def drained(chunks: list[list[Event]]) -> list[ShardInput]:
    """`chunks` as one partition that then ends and drains as a file does."""
    inputs = [ShardInput("000", events, "p", max((e.ts for e in events), default=NEVER),
                         False, 1) for events in chunks]
    return inputs + [ShardInput("000", [], "p", NEVER, True, 1, draining=left)
                     for left in reversed(range(DRAIN_STEPS))]


def simulated(config: SimConfig, chunk: int) -> list[ShardInput]:
    """A simulated shop's valid events (malformed ones become dead letters, tested
    elsewhere) in chunks of `chunk`, then drained as a file is."""
    events = []
    for data in Simulator(config).events():
        with contextlib.suppress(InvalidEvent):
            events.append(validate(data))
    return drained([events[i:i + chunk] for i in range(0, len(events), chunk)])


def summary(out: ShardOutput) -> tuple:
    """What an order shard's output says, to compare two runs."""
    return out.alerts, out.rows, out.to_aggregates, out.open_orders, out.watermark


def replay_in_process(*runs: list[ShardInput]) -> tuple[list, list]:
    """One order shard and one aggregate shard fed each run's inputs in turn (a later run
    is a resume): the metric points and the alerts."""
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1))
    shard, aggregate = OrderShard(settings, "000"), AggregateShard(settings, "000")
    points, alerts = [], []
    for inp in (inp for run in runs for inp in run):
        out = shard.process(inp)
        alerts += out.alerts
        for _, to_aggregate in out.to_aggregates:
            result = aggregate.process(to_aggregate)
            points += result.points
            alerts += result.alerts
    return points, alerts


def events_per_minute(points: list) -> dict[float, float]:
    """As health_metrics FINAL reads them: a minute written again replaces its row."""
    return {p.bucket - T0: p.value for p in points if p.metric == "events"}


def creates(*times: float) -> list[Event]:
    return [order_event(f"C{t}", t, "create", "pending_payment") for t in times]


def test_the_minute_the_input_ends_in_is_written_when_it_ends():
    """Every event counts in the health series, the last minute's too, though event time
    never passes its end."""
    events = creates(0, 30, 70, 2 * MIN + 10, 2 * MIN + 50)
    points, _ = replay_in_process(drained([events[:3], events[3:]]))
    assert events_per_minute(points) == {0.0: 2, MIN: 1, 2 * MIN: 2}
    assert [p.metric for p in points].count("events") == 3  # each minute once


def test_a_replay_resumed_on_a_grown_file_rewrites_its_last_minute_whole():
    first, grown = creates(0, 70, 2 * MIN + 10), creates(2 * MIN + 40, 3 * MIN + 5)
    points, _ = replay_in_process(drained([first]), drained([grown]))
    assert events_per_minute(points) == {0.0: 1, MIN: 1, 2 * MIN: 2, 3 * MIN: 1}


def test_a_replay_without_events_ends_cleanly():
    assert replay_in_process(drained([[]])) == ([], [])
