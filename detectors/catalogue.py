"""Which detectors make up a pipeline: one place that lists them, with their thresholds."""

from __future__ import annotations

from orderwatch.config import Thresholds
from orderwatch.detectors.callback_health import (
    CallbackCertExpired,
    CallbackFailureRate,
    CallbackLost,
)
from orderwatch.detectors.channel_degraded import ChannelDegraded
from orderwatch.detectors.duplicate_submission import DuplicateOrder, DuplicateShipRequest
from orderwatch.detectors.lock_contention import LockContention, LockTtlOverrun
from orderwatch.detectors.payment_backlog import PendingPaymentBacklog
from orderwatch.detectors.premature_cancel import PrematureTimeoutCancel
from orderwatch.detectors.series_limit import DEFAULT_CAP
from orderwatch.detectors.settlement import SettlementMissing
from orderwatch.detectors.silent_shipment import SilentShipment
from orderwatch.detectors.status_transitions import IllegalTransition, StatusFlapping
from orderwatch.detectors.stuck_order import StuckOrder
from orderwatch.detectors.timezone_skew import TimezoneSkew


def order_detectors(thresholds: Thresholds) -> list:
    """Detectors that see every event of the orders of one shard."""
    return [
        CallbackLost(thresholds),
        SilentShipment(thresholds),
        DuplicateShipRequest(thresholds),
        LockTtlOverrun(thresholds),
        TimezoneSkew(thresholds),
        PrematureTimeoutCancel(thresholds),
        IllegalTransition(thresholds),
        StatusFlapping(thresholds),
        StuckOrder(thresholds),
        SettlementMissing(thresholds),
    ]


def aggregate_detectors(thresholds: Thresholds,
                        max_series_per_dimension: int = DEFAULT_CAP) -> list:
    """Detectors keyed by a dimension (gateway, lock family, user, everything)."""
    return [
        CallbackFailureRate(thresholds),
        CallbackCertExpired(thresholds),
        LockContention(thresholds),
        DuplicateOrder(thresholds),
        PendingPaymentBacklog(thresholds),
        ChannelDegraded(thresholds, max_series_per_dimension),
    ]
