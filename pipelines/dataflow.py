"""The OrderWatch dataflow. It wires detectors; their logic lives in `detectors/`.

    input (Chunk: a batch of raw records from one partition)
      │ decode ──────────────────────────────────────────────► dead letters ─┐
      │ route_orders: split each chunk by stable hash of order_no,            │
      │               every shard gets every chunk (for the watermark)        │
      ▼                                                                       │
    orders [stateful, one per order shard]                                    │
      dedup by event_id · order state · per-order detectors · expiry          │
      │ events, order_state rows ─────────────────────────────────────────────┤
      │ route_aggregates: events by detector key, metric partials by dimension│
      ▼                                                                       │
    aggregates [stateful, one per aggregate shard]                            │
      per-gateway / lock-family / user detectors · health-metric minutes      │
      │ health_metrics rows ──────────────────────────────────────────────────┤
      ▼                                                                       ▼
    alerts ─► notifiers (console, JSONL, robots) and the alerts table     ClickHouse
    everything ─► Prometheus totals (/metrics)
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink

from orderwatch.config import Settings
from orderwatch.pipelines.aggregate_shard import AggregateOutput, AggregateShard
from orderwatch.pipelines.clickhouse_schema import ticks_ms
from orderwatch.pipelines.decoding import Chunk, Decoded, decode_chunk
from orderwatch.pipelines.order_shard import OrderShard, ShardInput, ShardOutput
from orderwatch.pipelines.placement import order_shard_names
from orderwatch.pipelines.prometheus_export import Exporter
from orderwatch.pipelines.sharding import shard_index
from orderwatch.pipelines.sinks import AlertSink, ClickHouseSink, MetricsSink, Notification
from orderwatch.pipelines.snapshot_cost import SnapshotCost

if TYPE_CHECKING:
    from orderwatch.pipelines.sources import StopSignal


class _ShardLogic(StatefulBatchLogic):
    """Adapts a plain shard object (`process(input) -> output`) to Bytewax state.

    The recovery snapshot is the pickled shard: bytes cannot change after the epoch ends,
    as Bytewax requires of a snapshot. Bytewax asks for a snapshot at the end of every
    epoch even when recovery is off; pickling every open order each time would then cost
    more than the work itself, so without recovery (`cost` None) the snapshot is empty.
    """

    def __init__(self, shard: Any, step: str, cost: SnapshotCost | None,
                 stop: StopSignal | None = None) -> None:
        """`stop`: this process's, set when an input says its process is stopping."""
        self.shard = shard
        self.step = step
        self.cost = cost
        self.stop = stop

    @classmethod
    def builder(cls, new: Callable[[], Any], step: str, cost: SnapshotCost | None,
                stop: StopSignal | None = None) -> Callable[[bytes | None], _ShardLogic]:
        return lambda state: cls(new() if state is None else pickle.loads(state), step, cost,
                                 stop)

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        if self.stop is not None and any(v.stopping for v in values):
            self.stop.set_by_peer()
        return [self.shard.process(v) for v in values], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        if self.cost is None:
            return b""
        started = time.perf_counter()
        state = pickle.dumps(self.shard, protocol=pickle.HIGHEST_PROTOCOL)
        self.cost.record(self.step, self.shard.shard, time.perf_counter() - started, len(state))
        return state


def route_to_order_shards(decoded: Decoded, keys: list[str]) -> list[tuple[str, ShardInput]]:
    """`keys`: the order shards' names, from `placement`."""
    by_shard: list[list] = [[] for _ in keys]
    for event in decoded.events:
        by_shard[shard_index(event.order_no, len(keys))].append(event)
    dead = [(d.read_after, d.reason_class()) for d in decoded.dead]  # for the first shard
    return [(key, ShardInput(key, events, decoded.partition, decoded.max_ts, decoded.ended,
                             decoded.partitions, decoded.idle, decoded.ingested_at,
                             dead if i == 0 else [], decoded.draining, decoded.stopping))
            for i, (key, events) in enumerate(zip(keys, by_shard, strict=True))]


def notifications(out: ShardOutput | AggregateOutput) -> list[Notification]:
    return [(alert, out.ingested_at) for alert in out.alerts]


def alert_rows(notification: Notification) -> list[tuple[str, list[list[Any]]]]:
    alert = notification[0]
    row = [alert.alert, alert.status, alert.severity, alert.fingerprint, alert.labels,
           alert.labels.get("order_no", ""), ticks_ms(alert.starts_at), ticks_ms(alert.ends_at),
           float(alert.value), alert.summary]
    return [("alerts", [row])]


def dead_letter_rows(decoded: Decoded) -> list[tuple[str, list[list[Any]]]]:
    if not decoded.dead:
        return []
    return [("dead_letters", [[d.id, d.source, d.position, d.payload, d.reason]
                              for d in decoded.dead])]


def shard_rows(out: ShardOutput) -> list[tuple[str, list[list[Any]]]]:
    return [(table, rows) for table, rows in out.rows.items() if rows]


def metric_rows(out: AggregateOutput) -> list[tuple[str, list[list[Any]]]]:
    rows = [[int(p.bucket), p.metric, p.dimension, p.dim_value, p.value]
            for p in out.points if p.value == p.value]  # NaN: no data in that minute
    return [("health_metrics", rows)] if rows else []


def prometheus_updater(exporter: Exporter) -> Callable[[Any], None]:
    def update(item: Any) -> None:
        if isinstance(item, Decoded):
            for dead in item.dead:
                exporter.inc("orderwatch_dead_letters", (dead.reason_class(),))
        elif isinstance(item, ShardOutput):
            for stream, n in item.redelivered.items():
                exporter.inc("orderwatch_events_redelivered", (stream,), n)
            exporter.add_measurements(item.metric_cells)
            exporter.set_per_shard("orderwatch_open_orders", item.shard, item.open_orders)
            if item.watermark != -float("inf"):
                exporter.set_per_shard("orderwatch_event_time_watermark_seconds", item.shard,
                                       item.watermark, combine="min")
        elif isinstance(item, AggregateOutput):
            for stream, n in item.late.items():
                exporter.inc("orderwatch_events_late", (stream,), n)
            for p in item.points:
                if p.metric == "callback_success_ratio":
                    exporter.set("orderwatch_callback_success_ratio", (p.dim_value,), p.value)
    return update


def _to_leader(item: Any) -> tuple[str, Any]:
    return (ClickHouseSink.PART, item)


def build_flow(source: Source[Chunk], settings: Settings, clickhouse: ClickHouseSink,
               alerts: AlertSink, exporter: Exporter,
               dead_letters: DynamicSink | None = None,
               snapshots: SnapshotCost | None = None, workers: int = 1,
               stop: StopSignal | None = None) -> Dataflow:
    """`snapshots`: None when nothing will restore them (no recovery directory).
    `workers`: how many workers the shards are placed over (`placement`).
    `stop`: this process's, set when another process of the cluster stops."""
    p = settings.pipeline
    order_shards = order_shard_names(p.order_shards, workers)
    flow = Dataflow("orderwatch")
    chunks = op.input("input", flow, source)
    decoded = op.map("decode", chunks, lambda c: decode_chunk(c, p.max_event_bytes))

    shard_in = op.flat_map("route_orders", decoded,
                           lambda d: route_to_order_shards(d, order_shards))
    new_order_shard = _ShardLogic.builder(lambda: OrderShard(settings, workers=workers),
                                          "orders", snapshots, stop)
    shard_out = op.key_rm("orders_out", op.stateful_batch("orders", shard_in, new_order_shard))

    aggregate_in = op.flat_map("route_aggregates", shard_out, lambda o: o.to_aggregates)
    new_aggregate_shard = _ShardLogic.builder(lambda: AggregateShard(settings), "aggregates",
                                              snapshots)
    aggregate_out = op.key_rm("aggregates_out", op.stateful_batch(
        "aggregates", aggregate_in, new_aggregate_shard))

    all_alerts = op.merge("alerts",
                          op.flat_map("order_alerts", shard_out, notifications),
                          op.flat_map("aggregate_alerts", aggregate_out, notifications))
    op.output("notify", op.map("alerts_to_leader", all_alerts, _to_leader), alerts)

    rows = op.merge("rows",
                    op.flat_map("dead_letter_rows", decoded, dead_letter_rows),
                    op.flat_map("shard_rows", shard_out, shard_rows),
                    op.flat_map("metric_rows", aggregate_out, metric_rows),
                    op.flat_map("alert_rows", all_alerts, alert_rows))
    op.output("clickhouse", op.map("rows_to_leader", rows, _to_leader), clickhouse)

    op.output("prometheus", op.merge("summaries", decoded, shard_out, aggregate_out),
              MetricsSink(prometheus_updater(exporter)))
    if dead_letters is not None:  # e.g. a Kafka dead-letter topic, besides the table
        op.output("dead_letter_copies", op.filter("with_dead", decoded, lambda d: bool(d.dead)),
                  dead_letters)
    return flow
