"""Shards call a detector only when it has something to do: an order shard calls
`advance` when one of the detector's timers is due and `learn_one` (a router's `route`)
with events of the streams it reads; an aggregate shard calls `advance` from the
earliest of its detectors' `next_due()`.

None of it may change anything: each shard's output equals that of a shard advancing
every detector at every step of event time (or giving every event to every detector),
over a shop with every fault.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from test_watermark_and_order_book import simulated, summary

from orderwatch.config import PipelineSettings, Settings
from orderwatch.detectors.base import Deadlines, any_timer_due
from orderwatch.detectors.catalogue import aggregate_detectors, order_detectors
from orderwatch.detectors.duplicate_submission import DuplicateOrder
from orderwatch.detectors.order_book import OrderBook
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig
from orderwatch.events import STREAMS, Event
from orderwatch.pipelines.aggregate_shard import AggregateOutput, AggregateShard
from orderwatch.pipelines.order_shard import OrderShard, ShardInput, ShardOutput

from conftest import order_event


class _Counting:
    """Counts the steps of event time and the detector runs they led to."""

    now: float
    steps = runs = 0

    def _advance(self, now: float, out: Any) -> None:
        self.steps += now > self.now
        super()._advance(now, out)  # type: ignore[misc]

    def _advance_detectors(self, now: float, out: Any) -> None:
        self.runs += 1
        super()._advance_detectors(now, out)  # type: ignore[misc]


class _AlwaysAdvancing:
    """Every detector advanced at every step of event time, as before shards asked whether
    any had something due; the calls recorded in `calls`, ("advance", now) among them."""

    now: float

    def __init__(self, settings: Settings, shard: str) -> None:
        super().__init__(settings, shard)  # type: ignore[call-arg]
        self.calls: list[tuple] = []

    def _advance(self, now: float, out: Any) -> None:
        if now > self.now:
            self.now = now
            self.calls.append(("advance", now))
            self._advance_detectors(now, out)  # type: ignore[attr-defined]


class _CountingShard(_Counting, OrderShard):
    pass


class _AlwaysAdvancingShard(_AlwaysAdvancing, OrderShard):
    """Also records ("apply", event) and ("expire", now)."""

    def _apply(self, event: Event, out: ShardOutput, batch: Any) -> None:
        self.calls.append(("apply", event))
        super()._apply(event, out, batch)

    def _expire(self, now: float, out: ShardOutput) -> None:
        self.calls.append(("expire", now))
        super()._expire(now, out)


class _EveryStream(OrderShard):
    """Every event given to every detector and router, as before streams were declared."""

    def _derive(self) -> None:
        super()._derive()
        self._learners = {s: [d.learn_one for d in self.detectors] for s in STREAMS}
        self._routes = {s: [(i, r.route) for i, r in enumerate(self.routers)]
                        for s in STREAMS}


class _AggregateCounting(_Counting, AggregateShard):
    pass


class _AggregateAlwaysAdvancing(_AlwaysAdvancing, AggregateShard):
    """Also records ("learn", detector index, payload, key)."""

    def _learn(self, det: Any, payload: Any, key: str, out: AggregateOutput) -> None:
        self.calls.append(("learn", self.detectors.index(det), payload, key))
        super()._learn(det, payload, key, out)


@pytest.fixture(scope="module")
def shop() -> list[ShardInput]:
    return simulated(SimConfig(seed=5, orders=2000, orders_per_minute=10,
                               faults=frozenset(SCENARIOS)), 400)


def _outputs(shard: OrderShard, inputs: list[ShardInput]) -> list[tuple]:
    return [summary(shard.process(inp)) for inp in inputs]


def test_skipping_detectors_with_nothing_due_changes_no_output(shop):
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1))
    skipping = _CountingShard(settings, "000")
    got = _outputs(skipping, shop)
    always = _AlwaysAdvancingShard(settings, "000")
    expected = _outputs(always, shop)
    assert got == expected
    _each_order_detector_alone(settings, always.calls)
    alerts = Counter((a.alert, a.status) for out in got for a in out[0])
    # every order detector's timers fired and resolved something in this shop
    for name in ("callback_lost", "silent_shipment", "stuck_order", "order_risk_high",
                 "duplicate_ship_request", "timezone_skew", "illegal_transition"):
        assert alerts[name, "firing"] and alerts[name, "resolved"], name
    assert any(items for out in got for _, inp in out[2] for items in [inp.items])
    # and most steps of event time found nothing due
    assert skipping.runs < skipping.steps / 2


def _each_order_detector_alone(settings: Settings, calls: list[tuple]) -> None:
    """Each order detector alone, with a book of its own, on the calls the shard made:
    advanced at every step, or only when one of its own timers is due, it emits the same
    alerts at the same steps (in the shard one detector's timer advances them all)."""
    p = settings.pipeline
    for index, name in enumerate(d.name for d in order_detectors(settings.thresholds)):
        book = OrderBook(p.finished_retention_s, p.max_idle_s)
        every, when_due = (order_detectors(settings.thresholds)[index] for _ in "ab")
        emitted: tuple[list, list] = ([], [])
        for step, call in enumerate(calls):
            if call[0] == "apply":
                event = call[1]
                order, fresh = book.apply(event)
                if fresh and event.stream in every.streams:
                    emitted[0].append((step, every.learn_one(event, order)))
                    emitted[1].append((step, when_due.learn_one(event, order)))
            elif call[0] == "advance":
                emitted[0].append((step, every.advance(call[1], book.orders)))
                if any_timer_due(when_due.timers(), call[1]):
                    emitted[1].append((step, when_due.advance(call[1], book.orders)))
            else:
                for order_no in book.expire(call[1]):
                    emitted[0].append((step, every.forget(order_no, call[1])))
                    emitted[1].append((step, when_due.forget(order_no, call[1])))
        fired = [e for e in emitted[0] if e[1]]
        assert fired, name
        assert [e for e in emitted[1] if e[1]] == fired, name


def test_giving_detectors_only_their_streams_changes_no_output(shop):
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1))
    got = _outputs(OrderShard(settings, "000"), shop)
    assert got == _outputs(_EveryStream(settings, "000"), shop)
    routed = Counter(item[0] for out in got for _, inp in out[2] for item in inp.items)
    assert len(routed) == 6  # every router but channel_degraded's, and the risk verdicts


@pytest.fixture(scope="module")
def aggregate_faults() -> list[ShardInput]:
    """The faults aggregate detectors catch, one window after another over 6 h 40 min; the
    broken notify route's backlog shows from 5 h 50 min."""
    faults = {"waf_block", "hot_lock_key", "cert_expired", "channel_outage",
              "notify_url_broken", "repeat_create"}
    return simulated(SimConfig(seed=5, orders=4000, orders_per_minute=10,
                               faults=frozenset(faults)), 1000)


@pytest.fixture(scope="module")
def aggregate_runs(aggregate_faults) -> tuple[list, list, list[_AggregateAlwaysAdvancing],
                                               list[_AggregateCounting]]:
    """Two aggregate shards fed by an order shard, each run skipping and always advancing:
    (outputs skipping, outputs always advancing, the shards always advancing, skipping)."""
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=2))
    order_shard = OrderShard(settings, "000")
    skipping = {s: _AggregateCounting(settings, s) for s in order_shard.aggregate_shards}
    always = {s: _AggregateAlwaysAdvancing(settings, s) for s in order_shard.aggregate_shards}
    got, expected = [], []
    for inp in aggregate_faults:
        for target, to_aggregate in order_shard.process(inp).to_aggregates:
            for shards, outs in ((skipping, got), (always, expected)):
                out = shards[target].process(to_aggregate)
                outs.append((target, out.alerts, out.points, out.late, out.watermark))
    return got, expected, list(always.values()), list(skipping.values())


def test_an_aggregate_shard_skipping_detectors_with_nothing_due_changes_no_output(
        aggregate_runs):
    got, expected, _, skipping = aggregate_runs
    assert got == expected
    alerts = Counter(a.alert for out in got for a in out[1])
    for name in ("callback_failure_rate", "callback_cert_expired", "lock_contention",
                 "duplicate_order", "pending_payment_backlog", "channel_degraded"):
        assert alerts[name], name
    steps = sum(s.steps for s in skipping)
    assert sum(s.runs for s in skipping) < steps / 2


def test_each_aggregate_detector_has_nothing_to_do_before_its_next_due(aggregate_runs):
    """Each detector alone, on the calls it had in the pipeline: advanced at every step,
    or only from its own `next_due()` on, it emits the same alerts at the same steps.
    (In the shard, one detector's wake advances them all, which would hide a late one.)"""
    settings = Settings()
    _, _, always, _ = aggregate_runs
    checked = set()
    for shard in always:
        for index, template in enumerate(shard.detectors):
            every, when_due = (aggregate_detectors(settings.thresholds)[index] for _ in "ab")
            emitted: tuple[list, list] = ([], [])
            for step, call in enumerate(shard.calls):
                if call[0] == "learn":
                    if call[1] == index:
                        emitted[0].append((step, every.learn_one(call[2], call[3])))
                        emitted[1].append((step, when_due.learn_one(call[2], call[3])))
                    continue
                now = call[1]
                emitted[0].append((step, every.advance(now)))
                if now >= when_due.next_due():
                    emitted[1].append((step, when_due.advance(now)))
            assert [e for e in emitted[1] if e[1]] == [e for e in emitted[0] if e[1]], \
                template.name
            if any(alerts for _, alerts in emitted[0]):
                checked.add(template.name)
    assert len(checked) == 6, checked


def test_duplicate_order_is_due_when_a_users_creates_leave_its_window():
    """No alert depends on it (older creates are skipped by time), so the pipeline tests
    cannot see it: without it the creates of every user stayed in memory."""
    det = DuplicateOrder()
    create = order_event("D1", 0, "create", "pending_payment")
    det.learn_one(create, "U1")
    assert det.next_due() == create.ts + det.window
    assert det.advance(create.ts + det.window) == []
    assert det._recent == {} and det.next_due() == math.inf


def test_any_timer_due_looks_at_each_timers_earliest_entry():
    early, late = Deadlines(), Deadlines()
    assert not any_timer_due([early, late], 1e12)
    late.schedule("b", 200.0)
    early.schedule("a", 100.0)
    assert not any_timer_due([early, late], 99.0)
    assert any_timer_due([early, late], 100.0)
    early.cancel("a")  # a stale entry: True early, and `due` then drops it
    assert any_timer_due([early, late], 100.0)
    assert early.due(100.0) == []
    assert not any_timer_due([early, late], 150.0)
    assert any_timer_due([late], 200.0)


def test_every_detector_names_its_timers_and_streams():
    shard = OrderShard(Settings(), "000")
    for det in (*shard.detectors, shard.risk):
        timers = list(det.timers())
        assert timers and all(isinstance(t, Deadlines) for t in timers), type(det).__name__
    for det in (*shard.detectors, *shard.routers):
        assert det.streams <= set(STREAMS), type(det).__name__
