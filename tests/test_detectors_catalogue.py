"""The rest of the catalogue on hand-written event lists: fire, stay silent, resolve."""

from __future__ import annotations

import re

from orderwatch.config import Thresholds
from orderwatch.detectors.base import run_on
from orderwatch.detectors.callback_health import CallbackCertExpired
from orderwatch.detectors.payment_backlog import PendingPaymentBacklog
from orderwatch.detectors.premature_cancel import PrematureTimeoutCancel
from orderwatch.detectors.settlement import SettlementMissing
from orderwatch.detectors.status_transitions import IllegalTransition, StatusFlapping
from orderwatch.detectors.stuck_order import StuckOrder
from orderwatch.detectors.timezone_skew import TimezoneSkew, whole_hour_offset

from conftest import HOUR, MIN, T0, at, callback, order_event, ship


def transitions(alerts):
    return [(a.alert, a.status, a.labels.get("order_no"), a.starts_at) for a in alerts]


def create(order_no: str, t: float = 0, **extra):
    return order_event(order_no, t, "create", "pending_payment", **extra)


# --- callback_cert_expired ----------------------------------------------------------------

def test_cert_expired_fires_on_the_first_error_and_resolves_after_quiet():
    events = [callback(f"C{i}", i * 60, gateway="wechatpay", http_status=500,
                       signature_valid=False, err_code="CERTIFICATE_EXPIRED") for i in range(3)]
    events.append(callback("C9", 3 * HOUR, gateway="wechatpay"))
    alerts = run_on(events, [], [CallbackCertExpired()])
    assert [(a.status, a.labels, a.starts_at) for a in alerts] == [
        ("firing", {"gateway": "wechatpay"}, T0),
        ("resolved", {"gateway": "wechatpay"}, T0)]
    assert alerts[1].ends_at == T0 + 120 + 30 * MIN
    assert alerts[0].summary_zh == "wechatpay：回调通知因 CERTIFICATE_EXPIRED 失败，请更换平台证书"


def test_cert_expired_ignores_other_errors():
    events = [callback("C1", 0, http_status=500, err_code="SIGN_ERROR", signature_valid=False)]
    assert run_on(events, [], [CallbackCertExpired()], until=T0 + HOUR) == []


# --- timezone_skew ------------------------------------------------------------------------

def test_whole_hour_offsets():
    assert whole_hour_offset(T0, T0 - 8 * HOUR, 120) == 8
    assert whole_hour_offset(T0, T0 + HOUR + 30, 120) == -1
    assert whole_hour_offset(T0, T0 - 3, 120) == 0  # clock drift
    assert whole_hour_offset(T0, T0 - 1.5 * HOUR, 120) == 0  # not a whole hour


def test_timezone_skew_fires_for_a_utc_browser_stored_as_server_time():
    skewed = create("Z1", client_created_at="2026-02-23T02:00:00+08:00")  # 8 h behind
    honest = create("Z2", client_created_at="2026-02-23T01:59:58Z")  # = 09:59:58+08:00
    alerts = run_on([skewed, honest], [TimezoneSkew()], until=T0 + 2 * HOUR)
    assert transitions(alerts) == [("timezone_skew", "firing", "Z1", T0),
                                   ("timezone_skew", "resolved", "Z1", T0)]
    assert alerts[0].labels["offset_hours"] == "+8" and alerts[0].value == 8


# --- premature_timeout_cancel -------------------------------------------------------------

def test_premature_cancel_before_grace_and_not_after():
    early = [create("P1", grace_period_s=172800),
             order_event("P1", 5 * MIN, "timeout_cancel", "cancelled", source="scheduler")]
    on_time = [create("P2", grace_period_s=1800),
               order_event("P2", 1800 + 40, "timeout_cancel", "cancelled", source="scheduler")]
    user = [create("P3", grace_period_s=172800),
            order_event("P3", 5 * MIN, "cancel", "cancelled")]
    alerts = run_on(early + on_time + user, [PrematureTimeoutCancel()])
    assert transitions(alerts) == [("premature_timeout_cancel", "firing", "P1", T0 + 5 * MIN)]
    assert alerts[0].value == 5.0


# --- illegal_transition and status_flapping -----------------------------------------------

def test_illegal_jump_fires_legal_path_does_not():
    legal = [create("L1"), order_event("L1", 60, "pay", "paid"),
             order_event("L1", 120, "reserve_stock", "awaiting_shipment"),
             ship("L1", 3 * HOUR)]
    jump = [create("J1"), order_event("J1", 60, "status_sync", "shipped", source="erp")]
    alerts = run_on(legal + jump, [IllegalTransition()])
    assert transitions(alerts) == [("illegal_transition", "firing", "J1", T0 + 60),
                                   ("illegal_transition", "resolved", "J1", T0 + 60)]
    assert alerts[0].labels == {"order_no": "J1", "transition": "pending_payment→shipped",
                                "source": "erp"}
    # the labels keep the codes; the Chinese message names the statuses as the shop does
    assert alerts[0].summary_zh == "erp status_sync 将订单从待支付改为已发货，状态机不允许此流转"


def test_illegal_transition_judged_in_event_time_order():
    # the pay event arrives after the reservation, but happened before it: no jump
    events = [create("L2"), order_event("L2", 120, "reserve_stock", "awaiting_shipment"),
              order_event("L2", 60, "pay", "paid")]
    assert run_on(events, [IllegalTransition()], until=T0 + HOUR) == []


def ping_pong(order_no: str, flips: int, every: float = 17 * MIN):
    events = [ship(order_no, 0)]
    for i in range(flips):
        status = "awaiting_shipment" if i % 2 == 0 else "shipped"
        events.append(order_event(order_no, (i + 1) * every, "status_sync", status,
                                  source="erp"))
    return events


def test_flapping_fires_on_the_third_alternation_within_two_hours():
    alerts = run_on(ping_pong("F1", 4), [StatusFlapping()])
    firing = [a for a in alerts if a.status == "firing"]
    # ship: awaiting→shipped (1); ERP: shipped→awaiting (2), awaiting→shipped (3)
    assert [(a.labels["order_no"], a.starts_at) for a in firing] == [("F1", T0 + 2 * 17 * MIN)]
    assert firing[0].labels["statuses"] == "awaiting_shipment↔shipped"
    assert firing[0].summary_zh == "2 小时内状态在待发货↔已发货间来回 3 次"


def test_two_alternations_or_slow_ones_are_not_flapping():
    assert run_on(ping_pong("F2", 1), [StatusFlapping()], until=T0 + 5 * HOUR) == []
    assert run_on(ping_pong("F3", 4, every=70 * MIN), [StatusFlapping()],
                  until=T0 + 9 * HOUR) == []


# --- stuck_order --------------------------------------------------------------------------

def test_stuck_in_review_fires_at_the_limit_and_resolves_on_approval():
    events = [create("S1"), order_event("S1", 60, "pay", "paid"),
              order_event("S1", 120, "review", "pending_review"),
              order_event("S1", 120 + 5 * HOUR, "approve", "awaiting_shipment", source="admin")]
    alerts = run_on(events, [StuckOrder()])
    assert transitions(alerts) == [("stuck_order", "firing", "S1", T0 + 120 + 2 * HOUR),
                                   ("stuck_order", "resolved", "S1", T0 + 120 + 2 * HOUR)]
    assert alerts[0].labels == {"order_no": "S1", "status": "pending_review"}
    assert alerts[0].summary_zh.startswith("处于待审核已 2 小时，等待审核通过")
    assert alerts[1].ends_at == T0 + 120 + 5 * HOUR


def test_a_repeated_status_keeps_the_clock_and_a_new_waiting_status_restarts_it():
    """The detector keeps only when each wait runs out: the status waited in and since
    when come from the order, so a repeat of the status (a sync) must not restart the
    clock, and moving on to another waiting status must resolve and start a new one."""
    events = [create("S3"), order_event("S3", 60, "pay", "paid"),
              order_event("S3", 120, "review", "pending_review"),
              order_event("S3", 120 + HOUR, "status_sync", "pending_review", source="erp"),
              order_event("S3", 120 + 3 * HOUR, "status_sync", "pending_review", source="erp"),
              order_event("S3", 120 + 4 * HOUR, "approve", "awaiting_shipment", source="admin"),
              order_event("S3", 120 + 5 * HOUR, "status_sync", "awaiting_shipment",
                          source="erp")]
    tight = StuckOrder(Thresholds(stuck_shipment_s=HOUR))
    alerts = run_on(events, [tight], until=T0 + 10 * HOUR)
    assert transitions(alerts) == [
        ("stuck_order", "firing", "S3", T0 + 120 + 2 * HOUR),
        ("stuck_order", "resolved", "S3", T0 + 120 + 2 * HOUR),
        ("stuck_order", "firing", "S3", T0 + 120 + 5 * HOUR)]
    review, left, shipment = alerts
    assert review.summary == "in pending_review for 2 h, waiting for a reviewer's approval"
    assert review.value == 2.0 and left.ends_at == T0 + 120 + 4 * HOUR
    assert left.summary == "left pending_review for awaiting_shipment"
    assert shipment.labels == {"order_no": "S3", "status": "awaiting_shipment"}
    assert shipment.summary.startswith("in awaiting_shipment for 60 min") and shipment.value == 1.0


def test_not_stuck_within_limits_and_limits_are_configurable():
    events = [create("S2"), order_event("S2", 60, "pay", "paid"),
              order_event("S2", 120, "reserve_stock", "awaiting_shipment"),
              ship("S2", 47 * HOUR)]
    assert run_on(events, [StuckOrder()], until=T0 + 100 * HOUR) == []
    tight = StuckOrder(Thresholds(stuck_shipment_s=HOUR))
    assert [a.status for a in run_on(events, [tight])] == ["firing", "resolved"]


# --- settlement_missing -------------------------------------------------------------------

def test_completed_without_settlement():
    paid_out = [order_event("M1", 0, "confirm", "pending_settlement"),
                order_event("M1", HOUR, "settle", "completed", source="erp")]
    synced = [order_event("M2", 0, "confirm", "pending_settlement"),
              order_event("M2", HOUR, "status_sync", "completed", source="erp")]
    failed = [order_event("M3", 0, "confirm", "pending_settlement"),
              order_event("M3", HOUR, "settle", "completed", source="erp", result="failed")]
    alerts = run_on(paid_out + synced + failed, [SettlementMissing()])
    firing = [(a.labels["order_no"], a.starts_at) for a in alerts if a.status == "firing"]
    assert firing == [("M2", T0 + HOUR), ("M3", T0 + HOUR)]


# --- pending_payment_backlog --------------------------------------------------------------

def orders(prefix: str, n: int, start: float, paid_after: float | None, every: float = 6):
    """Orders created every `every` seconds, paid `paid_after` later, in time order."""
    events = []
    for i in range(n):
        t = start + i * every
        events.append(create(f"{prefix}{i}", t))
        if paid_after is not None:
            events.append(order_event(f"{prefix}{i}", t + paid_after, "pay", "paid"))
    return events


def by_time(*streams):
    return sorted((e for stream in streams for e in stream), key=lambda e: e.ts)


def test_backlog_fires_when_too_many_old_orders_still_pend_and_resolves():
    healthy = orders("H", 600, 0, paid_after=120)  # one hour of orders, all paid
    stuck = orders("X", 120, HOUR, paid_after=5 * HOUR)  # twelve minutes of stuck ones
    alerts = run_on(by_time(healthy, stuck), [], [PendingPaymentBacklog()],
                    until=T0 + 10 * HOUR)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[0].labels == {}
    assert re.fullmatch(r"2–24 小时前创建的 \d+ 单中 [\d.]+% 仍为待支付", alerts[0].summary_zh)
    # stuck orders start counting once 2 h old: 5% of the window is exceeded a minute
    # or two after the first of them crosses the age
    assert T0 + 3 * HOUR < alerts[0].starts_at < T0 + 3 * HOUR + 10 * MIN
    assert alerts[1].ends_at <= T0 + HOUR + 5 * HOUR + 13 * MIN


def test_backlog_quiet_with_a_few_abandoned_carts():
    events = by_time(orders("H", 600, 0, paid_after=120),
                     orders("A", 20, 0, paid_after=None, every=180))  # 3% never pay
    assert run_on(events, [], [PendingPaymentBacklog()], until=T0 + 8 * HOUR) == []


def test_backlog_needs_enough_orders():
    events = orders("X", 50, 0, paid_after=None)
    assert run_on(events, [], [PendingPaymentBacklog()], until=T0 + 5 * HOUR) == []
    assert at(0)
