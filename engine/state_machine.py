"""The canonical order state machine.

One place says which status changes are legal, which actions cause them, what each
state waits for and for how long. The simulator drives it; detectors ask it.

    pending_payment ─pay→ paid ─review→ pending_review ─approve→ awaiting_shipment
                                 └─reserve_stock──────────────→ awaiting_shipment
    awaiting_shipment ─ship→ shipped ─deliver→ delivered ─confirm→ pending_settlement
    pending_settlement ─settle→ completed
    pending_payment ─cancel | timeout_cancel→ cancelled
    paid … completed ─refund→ refunding ─refund→ refunded
"""

from __future__ import annotations

from dataclasses import dataclass

PENDING_PAYMENT = "pending_payment"
PAID = "paid"
PENDING_REVIEW = "pending_review"
AWAITING_SHIPMENT = "awaiting_shipment"
SHIPPED = "shipped"
DELIVERED = "delivered"
PENDING_SETTLEMENT = "pending_settlement"
COMPLETED = "completed"
CANCELLED = "cancelled"
REFUNDING = "refunding"
REFUNDED = "refunded"

HOUR = 3600.0

# status → statuses it may change to (staying in the same status is always legal)
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_PAYMENT: frozenset({PAID, CANCELLED}),
    PAID: frozenset({PENDING_REVIEW, AWAITING_SHIPMENT, REFUNDING}),
    PENDING_REVIEW: frozenset({AWAITING_SHIPMENT, REFUNDING}),
    AWAITING_SHIPMENT: frozenset({SHIPPED, REFUNDING}),
    SHIPPED: frozenset({DELIVERED, REFUNDING}),
    DELIVERED: frozenset({PENDING_SETTLEMENT, REFUNDING}),
    PENDING_SETTLEMENT: frozenset({COMPLETED, REFUNDING}),
    COMPLETED: frozenset({REFUNDING}),
    REFUNDING: frozenset({REFUNDED}),
    CANCELLED: frozenset(),
    REFUNDED: frozenset(),
}
STATUSES = frozenset(TRANSITIONS)

# An order in one of these is finished: nothing more is expected of it.
FINISHED = frozenset({COMPLETED, CANCELLED, REFUNDED})

# action → (statuses it applies to, status it leads to when result is ok)
ACTIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "create": (frozenset(), PENDING_PAYMENT),
    "pay": (frozenset({PENDING_PAYMENT}), PAID),
    "review": (frozenset({PAID}), PENDING_REVIEW),
    "approve": (frozenset({PENDING_REVIEW}), AWAITING_SHIPMENT),
    "reserve_stock": (frozenset({PAID, AWAITING_SHIPMENT}), AWAITING_SHIPMENT),
    "ship_request": (frozenset({AWAITING_SHIPMENT}), None),
    "ship": (frozenset({AWAITING_SHIPMENT}), SHIPPED),
    "deliver": (frozenset({SHIPPED}), DELIVERED),
    "confirm": (frozenset({DELIVERED}), PENDING_SETTLEMENT),
    "settle": (frozenset({PENDING_SETTLEMENT}), COMPLETED),
    "cancel": (frozenset({PENDING_PAYMENT}), CANCELLED),
    "timeout_cancel": (frozenset({PENDING_PAYMENT}), CANCELLED),
    "refund": (frozenset({PAID, PENDING_REVIEW, AWAITING_SHIPMENT, SHIPPED, DELIVERED,
                          PENDING_SETTLEMENT, COMPLETED, REFUNDING}), REFUNDING),
    "status_sync": (frozenset(STATUSES), None),
}


@dataclass(frozen=True, slots=True)
class Wait:
    """What a state waits for, and how long before the order counts as stuck."""

    status: str
    waits_for: str
    limit_s: float | None  # None: the limit is the order's own (payment grace period)
    waits_for_zh: str = ""


WAITS: dict[str, Wait] = {
    PENDING_PAYMENT: Wait(PENDING_PAYMENT, "the buyer's payment", None, "买家付款"),
    PENDING_REVIEW: Wait(PENDING_REVIEW, "a reviewer's approval", 2 * HOUR, "审核通过"),
    AWAITING_SHIPMENT: Wait(AWAITING_SHIPMENT, "the warehouse to ship", 48 * HOUR, "仓库发货"),
    PENDING_SETTLEMENT: Wait(PENDING_SETTLEMENT, "settlement / split", 72 * HOUR, "结算/分账"),
}


# the names Chinese order systems show (the seeds' 待支付, 待发货 ↔ 已发货, 待审核)
STATUS_ZH: dict[str, str] = {
    PENDING_PAYMENT: "待支付", PAID: "已支付", PENDING_REVIEW: "待审核",
    AWAITING_SHIPMENT: "待发货", SHIPPED: "已发货", DELIVERED: "已签收",
    PENDING_SETTLEMENT: "待结算", COMPLETED: "已完成", CANCELLED: "已取消",
    REFUNDING: "退款中", REFUNDED: "已退款",
}


def status_text(status: str | None, language: str) -> str:
    """A status as a message in `language` shows it: 待发货 in Chinese, the code otherwise."""
    if status is None:
        return "?"
    return STATUS_ZH.get(status, status) if language == "zh" else status


def is_legal(prev: str | None, new: str) -> bool:
    """May an order go from `prev` to `new`? A new order (prev None) starts pending payment."""
    if prev is None:
        return new == PENDING_PAYMENT
    return prev == new or new in TRANSITIONS[prev]


def is_finished(status: str) -> bool:
    return status in FINISHED
