"""Python objects held per open order (issue #8: ≤ 1 KiB resident per open order).

tracemalloc counts what the order shard keeps, without the process's own overhead, so the
bound holds on any machine. Here 645 bytes before the expiry buckets and the shared grace
periods, 543 after. An order of a simulated shop keeps more (its payment, shipment, status
changes, the alerts of its faults): 3,561 bytes before one order-number string shared by
the detectors and status changes in lists, 2,661 after, 2,363 once the event that left
pending payment was kept as a count and statuses, carriers and warehouses were shared,
2,219 once cached minutes were keyed by one string (that cache is the process's, up to
4,096 minutes, but 2,000 orders share it here), 2,127 with status changes in flat tuples,
1,952 with ship requests in flat tuples as well, 1,847 with waybills too, 1,819 once
stuck orders were read from the order book.
"""

from __future__ import annotations

import gc
import pickle
import tracemalloc

import orjson

from benchmarks.performance import open_orders_file
from orderwatch.config import Settings
from orderwatch.detectors.order_book import OrderBook
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.events import decode
from orderwatch.pipelines.order_shard import OrderShard, ShardInput

from conftest import HOUR, T0, at, order_event


def _bytes_per_order(shard: OrderShard, lines: list[bytes]) -> float:
    """What the shard keeps per order in its book, the lines decoded under tracemalloc
    (as the pipeline parses them), 2,000 a chunk."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(lines), 2000):
            events = [decode(line) for line in lines[i:i + 2000]]
            ended = i + 2000 >= len(lines)  # the reorder buffer releases the last ones
            shard.process(ShardInput("o0", events, "p", events[-1].ts, ended, 1))
        del events
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / len(shard.book)
    finally:
        tracemalloc.stop()


def test_an_open_order_keeps_under_600_bytes_of_python_objects(tmp_path):
    template = dict(order_event("T", 0, "create", "pending_payment",
                                client_created_at=at(-1.5)).data)
    path = tmp_path / "open.jsonl"
    n = 20_000
    open_orders_file(path, n, template)
    shard = OrderShard(Settings())
    per_order = _bytes_per_order(shard, path.read_bytes().splitlines())
    assert len(shard.book) == n
    assert per_order < 600, per_order


def test_an_order_of_a_simulated_shop_keeps_under_2200_bytes():
    """Two thirds of the events of 2,000 orders with every fault: most orders are open and
    mid-life (paid, shipped), some finished and kept for redeliveries."""
    sim = Simulator(SimConfig(seed=8, orders=2000,
                              faults=frozenset(SCENARIOS) - {"malformed_events"}))
    lines = [orjson.dumps(data) for data in sim.events()]
    shard = OrderShard(Settings())
    per_order = _bytes_per_order(shard, lines[:len(lines) * 2 // 3])
    assert len(shard.book) > 1500
    assert per_order < 2200, per_order  # 2,363 before this bound (2,500), 2,589 before that


def test_a_book_snapshotted_with_an_expiry_heap_resumes():
    """Recovery snapshots written before the expiry buckets hold a heap of (time, order)."""
    book = OrderBook(finished_retention_s=HOUR, max_idle_s=48 * HOUR)
    book.apply(order_event("F1", 0, "create", "pending_payment"))
    book.apply(order_event("F1", 60, "cancel", "cancelled"))
    state = dict(book.__dict__, _expiry=[(T0 + 60 + HOUR, "F1"), (T0 + 48 * HOUR, "F1")])
    old = OrderBook.__new__(OrderBook)
    old.__dict__.update(state)
    resumed = pickle.loads(pickle.dumps(old))
    assert resumed.expire(T0 + 30 * 60) == []
    assert resumed.expire(T0 + 60 + HOUR) == ["F1"]
    assert len(resumed) == 0
