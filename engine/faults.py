"""The fault scenarios the simulator can inject, after the seeds' field reports.

Each scenario names the alerts of the detection catalogue it must raise; the simulator
writes one ground-truth label per raised instance. Per-order scenarios hit a small share
of orders; gateway- and lock-wide scenarios switch on for a time window.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    scope: str  # "order": a share of orders; "window": everything in a time window
    raises: tuple[str, ...]
    story: str
    in_all: bool = True  # part of `--faults all`, the detection catalogue's run


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("waf_block", "window", ("callback_failure_rate", "callback_lost"),
             "a WAF rule answers 403 to one gateway's notify POSTs for 30 min"),
    Scenario("cert_expired", "window", ("callback_cert_expired", "callback_failure_rate",
                                        "callback_lost"),
             "the platform certificate expired: notify signatures fail for 20 min"),
    Scenario("dns_outage", "window", ("callback_lost",),
             "the notify host does not resolve for 47 min: no notify arrives, queries say "
             "SUCCESS"),
    Scenario("silent_carrier", "order", ("silent_shipment",),
             "label printed, but the carrier scans the parcel only long after its limit"),
    Scenario("double_click_ship", "order", ("duplicate_ship_request",),
             "a double click sends two ship requests with distinct request ids"),
    Scenario("repeat_create", "order", ("duplicate_order",),
             "the buyer's app repeats create: same user, items and amount seconds later"),
    Scenario("lock_ttl_short", "order", ("lock_ttl_overrun",),
             "the ship lock's 30 s TTL is shorter than the 32.7 s critical section"),
    Scenario("hot_lock_key", "window", ("lock_contention",),
             "a flash sale on one SKU: stock-lock waits of seconds and failed acquisitions"),
    Scenario("timezone_skew", "order", ("timezone_skew",),
             "a UTC+0 or UTC+9 browser time stored as server time (UTC+8)"),
    Scenario("premature_cancel", "order", ("premature_timeout_cancel",),
             "the scheduler cancels minutes after creation despite a 48 h grace period"),
    Scenario("erp_ping_pong", "order", ("status_flapping", "illegal_transition"),
             "an ERP rule flips shipped ↔ awaiting shipment every 17 minutes"),
    Scenario("illegal_jump", "order", ("illegal_transition",),
             "a status-code mapping error syncs a paid order as delivered"),
    Scenario("stuck_review", "order", ("stuck_order",),
             "the workflow never fires the approval: hours in pending review"),
    Scenario("completion_without_settlement", "order", ("settlement_missing",),
             "the bank API times out but the order is marked completed anyway"),
    Scenario("notify_url_broken", "window", ("pending_payment_backlog", "callback_lost"),
             "a deploy breaks the notify route for 3 h: paid orders pile up pending"),
    Scenario("channel_outage", "window", ("channel_degraded", "callback_lost"),
             "one channel's payment handler answers 200 but drops the status update"),
    Scenario("gateway_degrading", "window", ("metric_anomaly", "callback_failure_rate"),
             "wechatpay's notify failures, 1% all along, creep to 6% over an hour and hold "
             "for 30 min (not in `all`: it needs hours of history and a shop's volume)",
             in_all=False),
    Scenario("malformed_events", "noise", (),
             "a producer bug sends garbled extra copies of a few events (dead letters)"),
)}

# Every order with one of these faults is broken: its risk score must reach the alert
# threshold once the fault is visible (a duplicate order is unwanted, not broken).
RISKY = ("callback_lost", "silent_shipment", "duplicate_ship_request", "lock_ttl_overrun",
         "timezone_skew", "premature_timeout_cancel", "illegal_transition", "status_flapping",
         "stuck_order", "settlement_missing")

PER_ORDER = tuple(s.name for s in SCENARIOS.values() if s.scope == "order")
WINDOWED = tuple(s.name for s in SCENARIOS.values() if s.scope == "window")


def parse_fault_list(text: str | None) -> frozenset[str]:
    """'all', 'none', '' or a comma-separated list of scenario names."""
    if text is None or text.strip().lower() in ("", "none"):
        return frozenset()
    if text.strip().lower() == "all":
        return frozenset(name for name, s in SCENARIOS.items() if s.in_all)
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(names - SCENARIOS.keys())
    if unknown:
        raise ValueError(f"unknown fault scenario(s) {', '.join(unknown)}; "
                         f"known: {', '.join(SCENARIOS)}")
    return frozenset(names)
