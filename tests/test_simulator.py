"""The reference engine: deterministic, contract-conformant, noisy the way real pipes are."""

from __future__ import annotations

import collections

import orjson
import pytest

from orderwatch.engine import state_machine as sm
from orderwatch.engine.faults import PER_ORDER, SCENARIOS, WINDOWED, parse_fault_list
from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.events import validate
from orderwatch.timestamps import from_rfc3339

DERIVED = {"order_risk_high", "channel_degraded"}  # derived from the per-order truth


def run(**kw):
    sim = Simulator(SimConfig(**kw))
    return list(sim.events()), sim.labels


def test_same_seed_same_bytes_other_seed_differs():
    a, la = run(seed=5, orders=300, faults=frozenset(SCENARIOS))
    b, lb = run(seed=5, orders=300, faults=frozenset(SCENARIOS))
    c, _ = run(seed=6, orders=300, faults=frozenset(SCENARIOS))
    assert orjson.dumps(a) == orjson.dumps(b) and la == lb
    assert orjson.dumps(a) != orjson.dumps(c)


def test_healthy_traffic_has_the_noise_that_must_not_alert():
    events, labels = run(seed=1, orders=8000)
    assert labels == []
    ids = collections.Counter(e["event_id"] for e in events)
    assert sum(1 for n in ids.values() if n > 1) > 50  # redeliveries
    times = [from_rfc3339(e["occurred_at"]) for e in events]
    late = sum(1 for i in range(1, len(times)) if times[i] < max(times[:i][-200:]) - 30)
    assert late > 50  # out of order by more than 30 s
    retried = [e for e in events if e["stream"] == "callback" and e.get("attempt", 1) > 1]
    assert retried, "some notifications succeed only on a gateway retry"
    slow = [e for e in events if e["stream"] == "logistics" and e["event"] == "picked_up"]
    assert slow


def test_orders_follow_the_state_machine():
    events, _ = run(seed=2, orders=500)
    last: dict[str, str] = {}
    seen = set()
    ordered = sorted((from_rfc3339(e["occurred_at"]), i, e) for i, e in enumerate(events))
    for _, _, e in ordered:
        validate(e)
        if e["stream"] != "order" or e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        assert sm.is_legal(last.get(e["order_no"]), e["status"]), e
        last[e["order_no"]] = e["status"]
    statuses = collections.Counter(last.values())
    assert statuses["completed"] > 400
    assert statuses["cancelled"] > 0


def illegal_steps(events: list[dict]) -> list[dict]:
    """Order events that, taken in event time, jump where the state machine forbids."""
    last: dict[str, str] = {}
    seen, illegal = set(), []
    for _, _, e in sorted((from_rfc3339(e["occurred_at"]), i, e) for i, e in enumerate(events)):
        if e["stream"] != "order" or e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        if not sm.is_legal(last.get(e["order_no"]), e["status"]):
            illegal.append(e)
        last[e["order_no"]] = e["status"]
    return illegal


def test_a_live_simulation_stopped_mid_stream_hands_over_what_is_still_in_the_pipe():
    sim = Simulator(SimConfig(seed=4, orders=None, orders_per_minute=200))
    stream = sim.events()
    delivered = [next(stream) for _ in range(20_000)]
    assert illegal_steps(delivered), "late events still in the pipe leave gaps"
    pending = sim.undelivered()
    assert pending and sim.undelivered() == []
    assert illegal_steps(delivered + pending) == []


def test_malformed_events_are_extra_garbled_copies():
    from orderwatch.events import InvalidEvent

    noisy, _ = run(seed=8, orders=3000, faults=frozenset({"malformed_events"}))
    garbled = [e for e in noisy if str(e.get("event_id", "")).endswith("-garbled")]
    intact = {e["event_id"] for e in noisy if e not in garbled}
    assert garbled
    for event in garbled:
        assert event["event_id"].removesuffix("-garbled") in intact  # a copy, not a loss
        with pytest.raises(InvalidEvent):
            validate(event)


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - {"malformed_events"}))
def test_each_scenario_writes_labels_for_what_it_must_raise(scenario):
    _, labels = run(seed=4, orders=3000, faults=frozenset({scenario}))
    direct = [label for label in labels if label["fault"] not in DERIVED]
    raised = {label["fault"] for label in direct}
    assert raised, scenario
    assert raised <= set(SCENARIOS[scenario].raises)
    for label in labels:
        assert set(label) == {"fault", "order_no", "labels", "start", "end"}
        from_rfc3339(label["start"])
        if scenario in PER_ORDER:
            assert label["order_no"]
        if label["order_no"] is None and label["fault"] != "pending_payment_backlog":
            assert label["labels"], "aggregate labels name their dimension (backlog: global)"


def test_broken_orders_get_risk_labels_once_their_fault_is_visible():
    _, labels = run(seed=4, orders=3000, faults=frozenset({"silent_carrier", "stuck_review",
                                                           "repeat_create"}))
    starts = {(label["fault"], label["order_no"]): from_rfc3339(label["start"])
              for label in labels}
    risky = [(o, t) for (f, o), t in starts.items() if f == "order_risk_high"]
    assert risky
    for order_no, t in risky:
        if ("silent_shipment", order_no) in starts:
            assert t - starts[("silent_shipment", order_no)] in (4 * 3600, 24 * 3600)
        else:
            assert t - starts[("stuck_order", order_no)] == 2 * 3600
    assert not [o for (f, o) in starts if f == "duplicate_order" and ("order_risk_high", o)
                in starts], "a duplicate order is unwanted, not broken"


def test_window_scenarios_are_windows_and_fault_list_parsing():
    assert set(WINDOWED) == {"waf_block", "cert_expired", "dns_outage", "hot_lock_key",
                             "notify_url_broken", "channel_outage", "gateway_degrading"}
    assert parse_fault_list("all") == frozenset(SCENARIOS) - {"gateway_degrading"}
    assert parse_fault_list("none") == frozenset()
    with pytest.raises(ValueError, match="unknown fault scenario"):
        parse_fault_list("waf_block,meteor")


def test_gateway_degrading_creeps_from_1_to_6_percent_on_wechatpay_only():
    start = from_rfc3339("2026-02-23T00:00:00+08:00")
    sim = Simulator(SimConfig(seed=4, orders=200 * 130, orders_per_minute=200.0, start=start,
                              faults=frozenset({"gateway_degrading"}),
                              first_window_at=30 * 60.0))
    sent: collections.Counter = collections.Counter()
    failed: collections.Counter = collections.Counter()
    for e in sim.events():
        if e["stream"] != "callback" or e["kind"] != "notify":
            continue
        minute = (from_rfc3339(e["occurred_at"]) - start) / 60
        phase = ("before" if minute < 30 else "first 10 min" if minute < 40
                 else "last 30 min" if 90 <= minute < 120 else None)
        key = (e["gateway"] == "wechatpay", phase)
        sent[key] += 1
        failed[key] += e["http_status"] != 200
    share = {k: failed[k] / sent[k] for k in sent if k[1]}
    assert 0.007 < share[(True, "before")] < 0.013, share
    assert 0.01 < share[(True, "first 10 min")] < 0.025, share
    assert 0.05 < share[(True, "last 30 min")] < 0.07, share
    assert all(share[(False, phase)] < 0.004 for phase in ("before", "last 30 min")), share
    labels = {label["fault"]: label for label in sim.labels}
    assert labels["metric_anomaly"]["labels"] == {"gateway": "wechatpay"}
    starts = {name: from_rfc3339(labels[name]["start"]) - start
              for name in ("metric_anomaly", "callback_failure_rate")}
    assert starts == {"metric_anomaly": 30 * 60.0, "callback_failure_rate": 78 * 60.0}


def _per_window(sim: Simulator, hours: int, window_h: int = 4) -> collections.Counter:
    """Events per (stream, window of `window_h` hours from start), for `hours` hours."""
    start = sim.cfg.start
    counts: collections.Counter = collections.Counter()
    for e in sim.events():
        t = from_rfc3339(e["occurred_at"])
        assert t >= start, "nothing from before the monitor was switched on"
        if t >= start + hours * 3600:
            break
        counts[e["stream"], int((t - start) // (window_h * 3600))] += 1
    return counts


def test_a_warm_started_shop_is_trading_from_its_first_minute():
    """An empty shop takes days to reach its level (parcels, then confirmations and
    settlements); a shop warmed up for the longest order life is level at once."""
    config = {"seed": 3, "orders": None, "orders_per_minute": 5.0, "record_labels": False}
    cold = _per_window(Simulator(SimConfig(**config)), 12)
    warm_sim = Simulator(SimConfig(**config, warm_up=10 * 86400.0))
    warm_sim.warm_up()
    warm = _per_window(warm_sim, 12)
    for stream in ("order", "callback", "logistics"):
        first, last = warm[stream, 0], warm[stream, 2]
        assert abs(first - last) < 0.15 * last, (stream, first, last)
    assert cold["logistics", 0] < 0.2 * warm["logistics", 0], (cold, warm)
    assert cold["order", 0] < 0.6 * warm["order", 0], (cold, warm)


def test_a_warm_start_sends_orders_midway_and_faults_only_after_start():
    sim = Simulator(SimConfig(seed=9, orders=600, orders_per_minute=10.0,
                              faults=frozenset(PER_ORDER), fault_share=0.02,
                              warm_up=2 * 86400.0))
    sim.warm_up()
    events = list(sim.events())
    created = {e["order_no"] for e in events if e["stream"] == "order"
               and e["action"] == "create"}
    seen = {e["order_no"] for e in events}
    assert len(created) >= 600 and len(seen) > 3 * len(created)  # most met midway
    assert sim.labels
    assert {label["order_no"] for label in sim.labels if label["order_no"]} <= created
    assert min(from_rfc3339(label["start"]) for label in sim.labels) >= sim.cfg.start
