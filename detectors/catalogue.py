"""Which detectors make up a pipeline: one place that lists them, with their thresholds."""

from __future__ import annotations

from orderwatch.config import Thresholds
from orderwatch.detectors.callback_health import CallbackFailureRate, CallbackLost
from orderwatch.detectors.duplicate_submission import DuplicateOrder, DuplicateShipRequest
from orderwatch.detectors.lock_contention import LockContention, LockTtlOverrun
from orderwatch.detectors.silent_shipment import SilentShipment


def order_detectors(thresholds: Thresholds) -> list:
    """Detectors that see every event of the orders of one shard."""
    return [
        CallbackLost(thresholds),
        SilentShipment(thresholds),
        DuplicateShipRequest(thresholds),
        LockTtlOverrun(thresholds),
    ]


def aggregate_detectors(thresholds: Thresholds) -> list:
    """Detectors keyed by a dimension (gateway, lock family, user)."""
    return [
        CallbackFailureRate(thresholds),
        LockContention(thresholds),
        DuplicateOrder(thresholds),
    ]
