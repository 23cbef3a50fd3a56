"""The four headline health metrics on hand-written event lists: fire, stay silent, resolve."""

from __future__ import annotations

import random

from orderwatch.config import Thresholds
from orderwatch.detectors.base import run_on
from orderwatch.detectors.callback_health import CallbackFailureRate, CallbackLost
from orderwatch.detectors.duplicate_submission import DuplicateOrder, DuplicateShipRequest
from orderwatch.detectors.lock_contention import (
    LockContention,
    LockTtlOverrun,
    lock_family,
    lock_family_by_segments,
)
from orderwatch.detectors.silent_shipment import SilentShipment

from conftest import HOUR, MIN, T0, callback, lock, order_event, scan, ship


def statuses(alerts, name):
    return [(a.status, a.labels.get("order_no") or a.labels) for a in alerts if a.alert == name]


# --- callback_lost ------------------------------------------------------------------------

def test_callback_lost_fires_ten_minutes_after_paid_at_and_resolves_when_paid():
    events = [order_event("O1", 0, "create", "pending_payment"),
              callback("O1", 65, paid_at=60, http_status=403),
              order_event("O1", 30 * MIN, "pay", "paid", prev_status="pending_payment")]
    alerts = run_on(events, [CallbackLost()])
    assert [(a.status, a.starts_at, a.ends_at) for a in alerts] == [
        ("firing", T0 + 60 + 10 * MIN, None), ("resolved", T0 + 60 + 10 * MIN, T0 + 30 * MIN)]
    assert alerts[0].labels == {"order_no": "O1", "gateway": "alipay"}


def test_callback_lost_silent_when_paid_in_time_even_if_the_pay_event_arrives_first():
    events = [order_event("O2", 0, "create", "pending_payment"),
              order_event("O2", 62, "pay", "paid", prev_status="pending_payment"),
              callback("O2", 61, paid_at=60)]  # the notify arrives after the pay event
    assert run_on(events, [CallbackLost()], until=T0 + 5 * HOUR) == []


def test_callback_lost_not_before_its_deadline():
    events = [order_event("O3", 0, "create", "pending_payment"), callback("O3", 60, paid_at=60)]
    assert run_on(events, [CallbackLost()], until=T0 + 60 + 9 * MIN) == []
    fired = run_on(events, [CallbackLost()], until=T0 + 60 + 10 * MIN)
    assert statuses(fired, "callback_lost") == [("firing", "O3")]


def test_callback_lost_from_a_query_and_threshold_is_configurable():
    events = [order_event("O4", 0, "create", "pending_payment"),
              callback("O4", 5 * MIN, kind="query", paid_at=0, gateway="wechatpay")]
    det = CallbackLost(Thresholds(callback_lost_after_s=2 * MIN))
    alerts = run_on(events, [det], until=T0 + 3 * MIN)
    assert alerts and alerts[0].starts_at == T0 + 2 * MIN


def test_callback_lost_once_per_order_despite_gateway_retries():
    events = [order_event("O5", 0, "create", "pending_payment")]
    events += [callback("O5", 60 + 30 * i, paid_at=60, http_status=403, attempt=i + 1)
               for i in range(6)]
    events.append(order_event("O5", 40 * MIN, "pay", "paid"))
    events.append(callback("O5", 40 * MIN + 1, paid_at=60, attempt=7))  # retry after the fix
    alerts = run_on(events, [CallbackLost()], until=T0 + 3 * HOUR)
    assert statuses(alerts, "callback_lost") == [("firing", "O5"), ("resolved", "O5")]


# --- callback_failure_rate ----------------------------------------------------------------

def notifies(n: int, start: float, failing_every: int | None, gateway: str = "alipay"):
    out = []
    for i in range(n):
        failed = failing_every is not None and i % failing_every == 0
        out.append(callback(f"N{gateway}{start}-{i}", start + i * (5 * MIN / n), gateway=gateway,
                            http_status=403 if failed else 200))
    return out


def test_failure_rate_fires_above_five_percent_and_resolves():
    bad = notifies(60, 0, failing_every=5)  # 20%
    good = notifies(60, 10 * MIN, failing_every=None)
    alerts = run_on(bad + good, [], [CallbackFailureRate()], until=T0 + 30 * MIN)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[0].labels == {"gateway": "alipay"} and alerts[0].value > 0.05


def test_failure_rate_quiet_at_or_below_threshold_or_with_too_few_callbacks():
    at_threshold = notifies(100, 0, failing_every=20)  # exactly 5%
    few = notifies(10, 20 * MIN, failing_every=2)  # 50%, but fewer than 20 callbacks
    assert run_on(at_threshold + few, [], [CallbackFailureRate()], until=T0 + HOUR) == []


def test_failure_rate_counts_bad_signatures_per_gateway():
    events = [callback(f"S{i}", i * 5, gateway="wechatpay", signature_valid=i % 3 != 0)
              for i in range(40)]
    events += notifies(40, 0, failing_every=None, gateway="alipay")
    alerts = run_on(events, [], [CallbackFailureRate()], until=T0 + HOUR)
    assert {a.labels["gateway"] for a in alerts} == {"wechatpay"}


# --- silent_shipment ----------------------------------------------------------------------

def test_silent_shipment_uses_the_carrier_limit_and_resolves_on_scan():
    events = [ship("O6", 0, "ZT6", "ZTO"), ship("O7", 0, "SF7", "SF"),
              scan("O7", 3 * HOUR, "SF7", "SF"), scan("O6", 30 * HOUR, "ZT6", "ZTO")]
    alerts = run_on(events, [SilentShipment()])
    assert [(a.status, a.labels["order_no"], a.starts_at) for a in alerts] == [
        ("firing", "O6", T0 + 24 * HOUR), ("resolved", "O6", T0 + 24 * HOUR)]
    assert alerts[0].labels == {"order_no": "O6", "carrier": "ZTO", "warehouse": "WH-EAST"}
    assert alerts[0].value == 24.0 and alerts[1].ends_at == T0 + 30 * HOUR


def test_fast_carrier_silent_after_four_hours():
    alerts = run_on([ship("O8", 0, "JD8", "JD")], [SilentShipment()], until=T0 + 4 * HOUR)
    assert statuses(alerts, "silent_shipment") == [("firing", "O8")]


def test_scan_arriving_out_of_order_clears_the_waybill():
    events = [scan("O9", 2 * HOUR, "ZT9"), ship("O9", 0, "ZT9")]
    assert run_on(events, [SilentShipment()], until=T0 + 3 * 24 * HOUR) == []


def test_the_earliest_of_late_scans_and_ship_events_is_what_counts():
    """Beyond the allowed lateness events apply as they come: a waybill keeps its earliest
    scan (the time its alert resolves at) and its earliest ship event (its deadline)."""
    other = order_event("X", 40 * HOUR, "create", "pending_payment")
    scans = [ship("S1", 0, "ZT1"), other, scan("S1", 30 * HOUR, "ZT1"),
             scan("S1", 28 * HOUR, "ZT1"), order_event("X", 41 * HOUR, "cancel", "cancelled")]
    alerts = run_on(scans, [SilentShipment()], lateness_s=0)
    assert [(a.status, a.starts_at, a.ends_at) for a in alerts] == [
        ("firing", T0 + 24 * HOUR, None), ("resolved", T0 + 24 * HOUR, T0 + 28 * HOUR)]
    ships = [ship("S2", 10 * HOUR, "ZT2"), order_event("X", 30 * HOUR, "create", "pending_payment"),
             ship("S2", 1 * HOUR, "ZT2")]
    alerts = run_on(ships, [SilentShipment()], until=T0 + 40 * HOUR, lateness_s=0)
    assert [(a.status, a.starts_at, a.value) for a in alerts] == [
        ("firing", T0 + 25 * HOUR, 24.0)]


def test_an_order_that_leaves_memory_resolves_the_alerts_of_all_its_waybills():
    detector = SilentShipment()
    alerts = run_on([ship("S3", 0, "ZT3a"), ship("S3", 60, "ZT3b")], [detector],
                    until=T0 + 25 * HOUR)
    assert statuses(alerts, "silent_shipment") == [("firing", "S3"), ("firing", "S3")]
    left = detector.forget("S3", T0 + 26 * HOUR)
    assert [a.status for a in left] == ["resolved", "resolved"]
    assert detector.forget("S3", T0 + 27 * HOUR) == []


# --- lock contention ----------------------------------------------------------------------

def test_lock_family_strips_identifiers():
    assert lock_family("lock:ship:ORD20260223001") == "lock:ship"
    assert lock_family("stock:SKU1:WH-EAST") == "stock"
    assert lock_family("inventory") == "inventory"


def test_lock_family_is_the_segments_before_the_first_one_holding_a_digit():
    assert lock_family_by_segments("lock:ship:ORD20260223001") == "lock:ship"
    assert lock_family_by_segments("锁:发货:٣") == "锁:发货"  # an Arabic-Indic digit
    assert lock_family_by_segments("stock") == "stock"
    rng = random.Random(5)
    keys = ["", ":", "::1", ":1", "1", "a:", "a::1", "锁:ship:٣", "lock:²:x"]
    keys += ["".join(rng.choice("ab1:-") for _ in range(rng.randint(0, 12)))
             for _ in range(5000)]
    for key in keys:
        assert lock_family(key) == lock_family_by_segments(key), key


def test_ttl_overrun_fires_once_and_resolves_after_the_hold():
    ev = ship("O10", 0, lock=lock("lock:ship:O10", held_ms=32700, ttl_ms=30000))
    ok = ship("O11", 0, waybill_no="ZT11", lock=lock("lock:ship:O11", held_ms=29000))
    alerts = run_on([ev, ok], [LockTtlOverrun()], until=T0 + 2 * HOUR)
    assert [(a.status, a.labels) for a in alerts] == [
        ("firing", {"order_no": "O10", "lock_family": "lock:ship"}),
        ("resolved", {"order_no": "O10", "lock_family": "lock:ship"})]
    assert alerts[0].value == 32700


def reserve(i: int, t: float, wait_ms: float, acquired: bool = True):
    return order_event(f"R{i}", t, "reserve_stock", "awaiting_shipment",
                       prev_status="paid", warehouse="WH-EAST",
                       lock=lock("stock:SKU-1:WH-EAST", wait_ms=wait_ms, held_ms=20,
                                 ttl_ms=10000, acquired=acquired),
                       result="ok" if acquired else "failed")


def test_contention_on_slow_waits_on_failures_and_quiet_when_healthy():
    slow = [reserve(i, i * 5, 300 if i % 5 == 0 else 20) for i in range(60)]  # 20% > 200 ms
    alerts = run_on(slow, [], [LockContention()], until=T0 + HOUR)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[0].labels == {"lock_family": "stock"} and alerts[0].value > 200
    failing = [reserve(i, i * 5, 10, acquired=i % 10 != 0) for i in range(60)]  # 10% fail
    assert statuses(run_on(failing, [], [LockContention()], until=T0 + HOUR),
                    "lock_contention")
    few = [reserve(i, i * 10, 900) for i in range(30)]  # all slow, but only 30 attempts
    assert run_on(few, [], [LockContention()], until=T0 + HOUR) == []
    healthy = [reserve(i, i * 5, 300 if i % 50 == 0 else 20) for i in range(100)]  # 2%
    assert run_on(healthy, [], [LockContention()], until=T0 + HOUR) == []


# --- duplicate submissions ----------------------------------------------------------------

def test_two_ship_requests_with_distinct_ids_fire_one_does_not():
    double = [order_event("D1", 0, "ship_request", "awaiting_shipment", request_id="r1"),
              order_event("D1", 1, "ship_request", "awaiting_shipment", request_id="r2"),
              ship("D1", 3, request_id="r1")]
    single = [order_event("D2", 0, "ship_request", "awaiting_shipment", request_id="s1"),
              ship("D2", 2, waybill_no="ZT2", request_id="s1")]
    alerts = run_on(double + single, [DuplicateShipRequest()])
    assert statuses(alerts, "duplicate_ship_request") == [("firing", "D1")]
    assert alerts[0].starts_at == T0 + 1 and alerts[0].value == 2


def test_a_ship_request_counts_from_its_earliest_copy_even_one_that_came_late():
    """Three distinct requests; a late copy of the first, 450 s earlier than the copy seen
    before, widens the span the alert reports."""
    def request(t: float, rid: str):
        return order_event("D3", t, "ship_request", "awaiting_shipment", request_id=rid)

    detector = DuplicateShipRequest(Thresholds(duplicate_ship_min_requests=3))
    events = [request(500, "r1"), request(100, "r2"), request(50, "r1"), request(600, "r3")]
    alerts = run_on(events, [detector], lateness_s=0)
    assert [(a.status, a.starts_at) for a in alerts][:1] == [("firing", T0 + 600)]
    assert "3 ship requests with distinct request ids within 550.0 s" in alerts[0].summary


def create(order_no: str, t: float, user: str = "U1", amount: float = 199.0, sku: str = "SKU-1"):
    return order_event(order_no, t, "create", "pending_payment", user_id=user, amount=amount,
                       items=[{"sku": sku, "qty": 1}])


def test_duplicate_order_marks_the_later_order_in_either_arrival_order():
    for events in ([create("A", 0), create("B", 30)], [create("B", 30), create("A", 0)]):
        alerts = run_on(events, [], [DuplicateOrder()])
        assert [(a.status, a.labels["order_no"], a.starts_at) for a in alerts] == [
            ("firing", "B", T0 + 30)]


def test_duplicate_order_needs_same_user_items_amount_within_ten_minutes():
    events = [create("A", 0), create("C", 11 * MIN), create("D", 60, user="U2"),
              create("E", 90, amount=5.0), create("F", 120, sku="SKU-9")]
    assert run_on(events, [], [DuplicateOrder()], until=T0 + HOUR) == []
