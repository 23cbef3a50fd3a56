"""One shard of orders: dedup, order state, per-order detectors, routing to aggregates.

A plain class (no Bytewax) so it can be tested directly; `dataflow.py` wraps it in a
`StatefulBatchLogic`. Every input chunk reaches every shard (with its share of events,
possibly none) so all shards see the same watermark.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from orderwatch.config import Settings
from orderwatch.detectors.base import Alert, Deadlines, any_timer_due
from orderwatch.detectors.catalogue import aggregate_detectors, order_detectors
from orderwatch.detectors.channel_degraded import ChannelDegraded
from orderwatch.detectors.event_time import ReorderBuffer
from orderwatch.detectors.health_metrics import Partials
from orderwatch.detectors.order_book import OrderBook, OrderState
from orderwatch.detectors.risk import RiskModel, RiskScorer
from orderwatch.events import STREAMS, Event
from orderwatch.pipelines.clickhouse_schema import ticks_ms
from orderwatch.pipelines.placement import aggregate_shard_names
from orderwatch.pipelines.sharding import detector_shard, shard_index
from orderwatch.pipelines.watermark import NEVER, WatermarkTracker


@dataclass(slots=True)
class ShardInput:
    shard: str
    events: list[Event]
    partition: str
    max_ts: float
    ended: bool
    partitions: int
    idle: bool = False
    ingested_at: float = 0.0
    # (event time read before it, reason class) of each dead letter, for one shard only
    dead_letters: list[tuple[float, str]] = field(default_factory=list)
    draining: int = 0
    stopping: bool = False  # see Chunk.stopping


@dataclass(slots=True)
class AggregateInput:
    shard: str  # the aggregate shard it is for
    upstream: str  # the order shard that sent it
    watermark: float
    # (aggregate detector index, key, event time, tie-break, payload)
    items: list[tuple[int, str, float, str, Any]]
    metric_cells: dict
    ingested_at: float = 0.0
    finished: bool = False  # the sender has seen the end of all input


@dataclass(slots=True)
class ShardOutput:
    shard: str
    watermark: float
    alerts: list[Alert] = field(default_factory=list)
    rows: dict[str, list[list]] = field(default_factory=dict)
    to_aggregates: list[tuple[str, AggregateInput]] = field(default_factory=list)
    metric_cells: dict = field(default_factory=dict)
    fresh: Counter = field(default_factory=Counter)
    redelivered: Counter = field(default_factory=Counter)
    open_orders: int = 0
    ingested_at: float = 0.0  # of the input that produced it


def event_row(event: Event) -> list:
    data = event.data
    kind = data.get("action") or data.get("kind") or data.get("event") or ""
    return [event.event_id, event.stream, event.order_no, ticks_ms(event.ts), kind,
            orjson.dumps(data)]


def risk_row(r: list) -> list:
    order_no, risk, max_risk, reasons, codes, channel, at = r
    return [order_no, risk, max_risk, reasons, codes, channel, ticks_ms(at)]


def order_row(o: OrderState) -> list:
    return [o.order_no, o.status or "", ticks_ms(o.status_at if o.status else o.last_event_at),
            ticks_ms(o.created_at), ticks_ms(o.left_pending_at), o.user_id or "", o.channel or "",
            o.gateway or "", o.amount, o.warehouse or "", o.carrier or "", o.waybill_no or "",
            o.events, ticks_ms(o.last_event_at), ticks_ms(o.paid_at), ticks_ms(o.shipped_at),
            ticks_ms(o.first_scan_at)]


class OrderShard:
    def __init__(self, settings: Settings, shard: str = "", workers: int = 1) -> None:
        """`workers`: how many the aggregate shards are placed over (`placement`)."""
        p = settings.pipeline
        self.shard = shard  # set from the first input when built by Bytewax
        self.book = OrderBook(p.finished_retention_s, p.max_idle_s)
        self.detectors = order_detectors(settings.thresholds)
        self.routers = aggregate_detectors(settings.thresholds)  # only their route() is used
        self.channel_index = next(i for i, r in enumerate(self.routers)
                                  if isinstance(r, ChannelDegraded))
        self.risk = RiskScorer(settings.thresholds, RiskModel.load(), settings.language)
        self.aggregate_shards = aggregate_shard_names(p.aggregate_shards, workers)
        self.watermark = WatermarkTracker(p.allowed_lateness_s)
        self.buffer: ReorderBuffer[Event] = ReorderBuffer()
        self.now = NEVER
        self._derive()

    def _derive(self) -> None:
        """What the shard reads from its detectors for every event; not in snapshots."""
        self._timers: list[Deadlines] = [
            t for det in (*self.detectors, self.risk) for t in det.timers()]
        self._learners: dict[str, list[Callable]] = {
            stream: [det.learn_one for det in self.detectors if stream in det.streams]
            for stream in STREAMS}
        self._routes: dict[str, list[tuple[int, Callable]]] = {
            stream: [(i, r.route) for i, r in enumerate(self.routers) if stream in r.streams]
            for stream in STREAMS}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_timers", "_learners", "_routes"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._derive()

    def process(self, inp: ShardInput) -> ShardOutput:
        """Buffer the chunk's events; apply, oldest first, those event time has passed."""
        self.shard = self.shard or inp.shard
        out = ShardOutput(self.shard, self.now, ingested_at=inp.ingested_at)
        batch = _Batch()
        for event in inp.events:
            if not self.buffer.push_event(event):
                self._apply(event, out, batch)  # later than the allowed lateness
        self._count_dead_letters(inp, batch)
        self.watermark.observe(inp.partition, inp.max_ts, inp.ended, inp.partitions, inp.idle,
                               inp.draining)
        mark = self.watermark.watermark()
        if mark > self.now:
            for event in self.buffer.release(mark):
                self._advance(event.ts, out)
                self._apply(event, out, batch)
            self._advance(mark, out)
            self._expire(mark, out)
        out.watermark = self.now
        for alert in out.alerts:  # the duplicate rate, from the detector's verdicts
            if alert.alert == "duplicate_ship_request" and alert.status == "firing":
                batch.partials.count(alert.starts_at, "duplicate_ship_requests", "warehouse",
                                     alert.labels.get("warehouse", "unknown"))
        out.rows["events"] = batch.event_rows
        out.rows["order_state"] = [order_row(o) for o in self.book.drain_changed()]
        out.rows["order_risk"] = [risk_row(r) for r in self.risk.rows]
        self.risk.rows.clear()
        n_aggr = len(self.aggregate_shards)
        for at, order_no, channel, high in self.risk.verdicts:
            item = (self.channel_index, channel, at, order_no, (at, order_no, high))
            batch.routed.setdefault(detector_shard(self.channel_index, channel, n_aggr),
                                    []).append(item)
        self.risk.verdicts.clear()
        cells_by_shard: dict[int, dict] = {}
        for (dim, value), cells in batch.partials.split_by_dimension().items():
            index = shard_index(f"m:{dim}={value}", n_aggr)
            cells_by_shard.setdefault(index, {}).update(cells)
        out.metric_cells = batch.partials.cells
        for index, target in enumerate(self.aggregate_shards):  # all hear the watermark
            items = batch.routed.get(index, [])
            cells = cells_by_shard.get(index, {})
            out.to_aggregates.append(
                (target, AggregateInput(target, self.shard, self.now, items, cells,
                                         inp.ingested_at, self.watermark.finished)))
        out.open_orders = len(self.book)
        return out

    def _count_dead_letters(self, inp: ShardInput, batch: _Batch) -> None:
        """A dead letter counts in the minute of the event read before it, or of the
        shard's clock if that is later (an earlier minute may be closed already). Before
        any event time at all it is not counted; the table and Prometheus still have it."""
        for read_after, reason in inp.dead_letters:
            at = max(read_after, self.now)
            if at != NEVER:
                batch.partials.count(at, "dead_letters", "reason", reason)

    def _expire(self, now: float, out: ShardOutput) -> None:
        for order_no in self.book.expire(now):
            for det in self.detectors:
                out.alerts.extend(det.forget(order_no, now))
            out.alerts.extend(self.risk.retire(order_no, now))

    def _advance(self, now: float, out: ShardOutput) -> None:
        if now <= self.now:
            return
        self.now = now
        if any_timer_due(self._timers, now):  # for most events, no timer is
            self._advance_detectors(now, out)

    def _advance_detectors(self, now: float, out: ShardOutput) -> None:
        new: list[Alert] = []
        for det in self.detectors:
            new.extend(det.advance(now, self.book.orders))
        out.alerts.extend(new)
        out.alerts.extend(self.risk.observe(new, self.book.orders, now))
        out.alerts.extend(self.risk.advance(now, self.book.orders))

    def _apply(self, event: Event, out: ShardOutput, batch: _Batch) -> None:
        order, fresh = self.book.apply(event)
        if not fresh:
            out.redelivered[event.stream] += 1
            return
        out.fresh[event.stream] += 1
        batch.event_rows.append(event_row(event))
        new: list[Alert] = []
        for learn_one in self._learners[event.stream]:
            new.extend(learn_one(event, order))
        out.alerts.extend(new)
        out.alerts.extend(self.risk.learn_one(event, order))
        if new:  # most events change no alert
            out.alerts.extend(self.risk.observe(new, self.book.orders, event.ts))
        n_aggr = len(self.aggregate_shards)
        for i, route in self._routes[event.stream]:
            for key, payload in route(event, order):
                batch.routed.setdefault(detector_shard(i, key, n_aggr), []).append(
                    (i, key, event.ts, event.event_id, payload))
        batch.partials.add(event)


class _Batch:
    """What one input produces besides alerts: rows, routed events, metric partials."""

    __slots__ = ("event_rows", "partials", "routed")

    def __init__(self) -> None:
        self.event_rows: list[list] = []
        self.routed: dict[int, list[tuple[int, str, float, str, Any]]] = {}  # by shard index
        self.partials = Partials()
