"""An order shard calls a detector's `advance` only when one of its timers is due, and its
`learn_one` (a router's `route`) only with events of the streams it reads.

Neither may change anything: the shard's output equals that of a shard advancing every
detector at every step of event time, or giving every event to every detector, over a
shop with every fault.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
from test_watermark_and_order_book import drained

from orderwatch.config import PipelineSettings, Settings
from orderwatch.detectors.base import Deadlines, any_timer_due
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.events import STREAMS, InvalidEvent, validate
from orderwatch.pipelines.order_shard import OrderShard, ShardInput, ShardOutput


class _CountingShard(OrderShard):
    """Counts the steps of event time and the detector runs they led to."""

    def __init__(self, settings: Settings, shard: str) -> None:
        super().__init__(settings, shard)
        self.steps = self.runs = 0

    def _advance(self, now: float, out: ShardOutput) -> None:
        self.steps += now > self.now
        super()._advance(now, out)

    def _run_timers(self, now: float, out: ShardOutput) -> None:
        self.runs += 1
        super()._run_timers(now, out)


class _AlwaysAdvancing(OrderShard):
    """Every detector advanced at every step of event time, as before timers were asked."""

    def _advance(self, now: float, out: ShardOutput) -> None:
        if now > self.now:
            self.now = now
            self._run_timers(now, out)


class _EveryStream(OrderShard):
    """Every event given to every detector and router, as before streams were declared."""

    def _derive(self) -> None:
        super()._derive()
        self._learners = {s: [d.learn_one for d in self.detectors] for s in STREAMS}
        self._routes = {s: [(i, r.route) for i, r in enumerate(self.routers)]
                        for s in STREAMS}


@pytest.fixture(scope="module")
def shop() -> list[ShardInput]:
    sim = Simulator(SimConfig(seed=5, orders=2000, orders_per_minute=10,
                              faults=frozenset(SCENARIOS)))
    events = []
    for data in sim.events():
        with contextlib.suppress(InvalidEvent):  # malformed_events: dead letters, elsewhere
            events.append(validate(data))
    return drained([events[i:i + 400] for i in range(0, len(events), 400)])


def _outputs(shard: OrderShard, inputs: list[ShardInput]) -> list[tuple]:
    outs = [shard.process(inp) for inp in inputs]
    return [(o.alerts, o.rows, o.to_aggregates, o.watermark, o.open_orders) for o in outs]


def test_skipping_detectors_with_nothing_due_changes_no_output(shop):
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1))
    skipping = _CountingShard(settings, "000")
    got = _outputs(skipping, shop)
    expected = _outputs(_AlwaysAdvancing(settings, "000"), shop)
    assert got == expected
    alerts = Counter((a.alert, a.status) for out in got for a in out[0])
    # every order detector's timers fired and resolved something in this shop
    for name in ("callback_lost", "silent_shipment", "stuck_order", "order_risk_high",
                 "duplicate_ship_request", "timezone_skew", "illegal_transition"):
        assert alerts[name, "firing"] and alerts[name, "resolved"], name
    assert any(items for out in got for _, inp in out[2] for items in [inp.items])
    # and most steps of event time found nothing due
    assert skipping.runs < skipping.steps / 2


def test_giving_detectors_only_their_streams_changes_no_output(shop):
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1))
    got = _outputs(OrderShard(settings, "000"), shop)
    assert got == _outputs(_EveryStream(settings, "000"), shop)
    routed = Counter(item[0] for out in got for _, inp in out[2] for item in inp.items)
    assert len(routed) == 6  # every router but channel_degraded's, and the risk verdicts


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
