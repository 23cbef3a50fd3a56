"""An order shard pickled mid-stream (a Bytewax recovery snapshot) resumes to the same
output, whether the snapshot was written by this code or by the layout before it (orders
as objects, waybills and alerts as their slots' dicts, status changes in deques, no lists
of the detectors' timers and streams, a status and start per order waiting too long)."""

from __future__ import annotations

import copyreg
import io
import operator
import pickle
from collections import deque
from dataclasses import fields
from typing import Any

import pytest
from test_watermark_and_order_book import simulated, summary

from orderwatch.config import PipelineSettings, Settings
from orderwatch.detectors.base import Alert
from orderwatch.detectors.duplicate_submission import DuplicateShipRequest
from orderwatch.detectors.order_book import ORDER_FIELDS, OrderBook
from orderwatch.detectors.risk import _Context
from orderwatch.detectors.silent_shipment import SilentShipment, _Waybill
from orderwatch.detectors.status_transitions import StatusFlapping
from orderwatch.detectors.stuck_order import StuckOrder
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig
from orderwatch.pipelines.order_shard import OrderShard, ShardInput


class _OldLayout(pickle.Pickler):
    """Pickles as the code before the flat order book, waybill tuples, alert arguments,
    status changes, ship requests and waybills as flat tuples, the risk context's share
    cache and the stuck orders read from the book did (copyreg's default reduction of each
    class)."""

    def __init__(self, buffer: io.BytesIO, orders: dict) -> None:
        super().__init__(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        self.orders = orders

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is OrderBook:
            return copyreg.__newobj__, (kind,), dict(vars(obj))
        if kind is OrderShard:  # before it derived timer and dispatch lists
            return copyreg.__newobj__, (kind,), {k: v for k, v in vars(obj).items()
                                                 if k not in DERIVED}
        if kind is _Context:  # before its cache of gateway shares
            return copyreg.__newobj__, (kind,), {k: v for k, v in vars(obj).items()
                                                 if k != "_shares"}
        if kind is DuplicateShipRequest:  # before the flat tuples: id → (time, warehouse)
            requests = {order_no: {r[0]: (r[1], r[2]) for r in _records(kept, 3)}
                        for order_no, kept in obj._requests.items()}
            return copyreg.__newobj__, (kind,), dict(vars(obj), _requests=requests)
        if kind is StatusFlapping:
            changes = {order_no: deque(_records(c, 3)) for order_no, c in obj._changes.items()}
            return copyreg.__newobj__, (kind,), dict(vars(obj), _changes=changes)
        if kind is SilentShipment:  # before the flat tuples: waybill → _Waybill
            waybills = {order_no: {w[0]: _old_waybill(*w[1:]) for w in _records(kept, 5)}
                        for order_no, kept in obj._waybills.items()}
            return copyreg.__newobj__, (kind,), dict(vars(obj), _waybills=waybills)
        if kind is StuckOrder:  # before it read the status waited in from the order
            return copyreg.__newobj__, (kind,), dict(vars(obj), _waiting=self.waiting(obj))
        if kind is _Waybill:
            return copyreg.__newobj__, (kind,), (None, {s: getattr(obj, s)
                                                        for s in kind.__slots__})
        if kind is Alert:
            return copyreg.__newobj__, (kind,), (None, {f.name: getattr(obj, f.name)
                                                        for f in fields(kind)})
        return NotImplemented

    def waiting(self, stuck: StuckOrder) -> dict[str, tuple[str, float]]:
        """The old `_waiting`: (status, since) of every order waiting or fired."""
        due = {order_no: (alert.labels["status"], alert.starts_at)
               for order_no, alert in stuck.book._firing.items()}
        due.update((order_no, (self.orders[order_no].status, at))
                   for order_no, at in stuck._due._at.items())
        return {order_no: (status, at - stuck.limits[status])
                for order_no, (status, at) in due.items()}


DERIVED = ("_timers", "_learners", "_routes")


def _records(flat: tuple, width: int) -> list[tuple]:
    """The records of a flat tuple (`detectors/flat_records.py`), each as a tuple."""
    return [flat[i:i + width] for i in range(0, len(flat), width)]


def _old_waybill(shipped_at: float | None, first_scan: float | None, carrier: str,
                 warehouse: str) -> _Waybill:
    waybill = _Waybill()
    waybill.shipped_at, waybill.first_scan = shipped_at, first_scan
    waybill.carrier, waybill.warehouse = carrier, warehouse
    return waybill


def _old_layout(shard: OrderShard) -> bytes:
    buffer = io.BytesIO()
    _OldLayout(buffer, shard.book.orders).dump(shard)
    return buffer.getvalue()


def _new_layout(shard: OrderShard) -> bytes:
    return pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL)


@pytest.fixture(scope="module")
def shop_inputs() -> list[ShardInput]:
    """A shop with every fault over a few hours, in chunks of 500 events."""
    return simulated(SimConfig(seed=11, orders=1500, orders_per_minute=20,
                               faults=frozenset(SCENARIOS)), 500)


@pytest.mark.parametrize("layout", [_new_layout, _old_layout], ids=["this", "older"])
def test_a_shard_snapshotted_mid_stream_resumes_to_the_same_output(shop_inputs, layout):
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1))
    uninterrupted = OrderShard(settings, "000")
    half = len(shop_inputs) // 2
    for inp in shop_inputs[:half]:
        uninterrupted.process(inp)
    snapshot = layout(uninterrupted)
    resumed = pickle.loads(snapshot)
    assert len(resumed.book) == len(uninterrupted.book) > 500
    flapping = next(d for d in resumed.detectors if isinstance(d, StatusFlapping))
    assert flapping._changes  # the status changes came back, deques or lists
    ships = next(d for d in resumed.detectors if isinstance(d, DuplicateShipRequest))
    assert ships._requests and all(type(r) is tuple for r in ships._requests.values())
    silent = next(d for d in resumed.detectors if isinstance(d, SilentShipment))
    assert silent._waybills and all(type(w) is tuple for w in silent._waybills.values())
    stuck = next(d for d in resumed.detectors if isinstance(d, StuckOrder))
    assert not hasattr(stuck, "_waiting")  # older snapshots' is dropped
    outputs = [(summary(uninterrupted.process(inp)), summary(resumed.process(inp)))
               for inp in shop_inputs[half:]]
    assert sum(len(a[0]) for a, _ in outputs) > 50  # alerts after the snapshot
    for expected, got in outputs:
        assert got == expected
    assert _orders(resumed) == _orders(uninterrupted)


def _orders(shard: OrderShard) -> list[tuple]:
    return [operator.attrgetter(*ORDER_FIELDS)(o) for o in shard.book.orders.values()]


def test_this_snapshot_layout_is_smaller(shop_inputs):
    shard = OrderShard(Settings(pipeline=PipelineSettings(order_shards=1)), "000")
    for inp in shop_inputs[:len(shop_inputs) // 2]:
        shard.process(inp)
    assert len(_new_layout(shard)) < 0.9 * len(_old_layout(shard))
