"""Traffic simulator: drives the state machine and emits the three contract streams.

A small discrete-event simulation. Each order is a generator that yields how long it
waits before its next step (SimPy style), so an order's life reads top to bottom. Event
time is simulated, so a week of traffic takes seconds; the events come out in *arrival*
order, which differs from event time the way real pipes do (late events, redeliveries).

Healthy traffic already contains what must not alert: late and out-of-order events,
redelivered events, carriers slow but within their limit, gateway retries that succeed.
Faults (engine/faults.py) are injected on top, each writing ground-truth labels.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from orderwatch.config import DEFAULT_THRESHOLDS
from orderwatch.detectors.channel_degraded import degraded_runs
from orderwatch.engine import state_machine as sm
from orderwatch.engine.faults import PER_ORDER, RISKY, SCENARIOS
from orderwatch.timestamps import from_rfc3339, to_rfc3339

MINUTE = 60.0
HOUR = 3600.0
DAY = 24 * HOUR

CHANNELS = {  # channel → (share of orders, gateways it pays through with weights)
    "wechat_miniapp": (0.35, {"wechatpay": 1.0}),
    "taobao": (0.25, {"alipay": 1.0}),
    "douyin": (0.20, {"wechatpay": 0.6, "alipay": 0.4}),
    "web": (0.13, {"alipay": 0.5, "unionpay": 0.5}),
    "pos": (0.07, {"unionpay": 1.0}),
}
CARRIERS = {"ZTO": 25, "YTO": 20, "SF": 15, "JD": 10, "STO": 10, "YUNDA": 10, "EMS": 5,
            "DBL": 3, "OTHER": 2}
FAST_CARRIERS = frozenset({"SF", "JD"})  # push pickups in real time; limit 4 h
WAREHOUSES = ("WH-EAST", "WH-NORTH", "WH-SOUTH", "WH-WEST")
CITIES = ("上海", "杭州", "广州", "深圳", "北京", "成都", "武汉", "西安")
# WeChat Pay's notify retry schedule (seconds after the previous attempt)
NOTIFY_RETRIES = (0, 15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800)
# gateway_degrading: whom it hits, its notify failure share before and at the end of the creep
DEGRADE_TARGET = "wechatpay"
DEGRADE_FROM, DEGRADE_TO, DEGRADE_CREEP = 0.01, 0.06, 60 * MINUTE
# Window faults, in the order they happen, with their length and whom they hit. The
# gateways have enough notify traffic for a ratio over 5 minutes.
WINDOWS = (("waf_block", 30 * MINUTE, "alipay"), ("hot_lock_key", 20 * MINUTE, None),
           ("cert_expired", 20 * MINUTE, "wechatpay"), ("dns_outage", 47 * MINUTE, None),
           ("channel_outage", 30 * MINUTE, "douyin"), ("notify_url_broken", 3 * HOUR, None),
           ("gateway_degrading", DEGRADE_CREEP + 30 * MINUTE, DEGRADE_TARGET))
WINDOW_GAP = 25 * MINUTE

Process = Generator[float, None, Any]


@dataclass(slots=True)
class SimConfig:
    seed: int = 7
    orders: int | None = 1000  # None: endless (live mode)
    orders_per_minute: float = 60.0
    start: float = field(default_factory=lambda: from_rfc3339("2026-02-23T00:00:00+08:00"))
    faults: frozenset[str] = frozenset()
    fault_share: float = 0.005  # share of orders hit by each per-order scenario
    noise: bool = True  # late, out-of-order and redelivered events
    late_share: float = 0.03
    redelivery_share: float = 0.01
    first_window_at: float = 30 * MINUTE  # the first fault window; the rest follow in turn
    record_labels: bool = True  # live mode runs forever: keep no ground truth there
    # seconds of traffic already under way at `start`: orders created in them are in flight
    # at every stage, and only their events from `start` on are emitted (see warm_up)
    warm_up: float = 0.0


@dataclass(slots=True)
class _Order:
    order_no: str
    user_id: str
    channel: str
    gateway: str
    amount: float
    items: Sequence[dict[str, Any]]
    grace_s: int
    fault: str | None
    sku: str = ""  # the first item's: what stock is reserved for
    status: str = sm.PENDING_PAYMENT
    seq: int = 0
    warehouse: str = ""
    carrier: str = ""
    waybill_no: str = ""


@dataclass(slots=True)
class _Window:
    scenario: str
    target: str | None  # the gateway or channel it hits; None: everything
    start: float
    end: float


class Simulator:
    """`events()` yields contract events in arrival order; `labels` holds the ground truth."""

    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.now = config.start - config.warm_up
        self.labels: list[dict[str, Any]] = []
        self._procs: list[tuple[float, int, Process]] = []
        self._out: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._order_seq = itertools.count(1)
        self._user_seq = itertools.count(1)
        self._windows = self._plan_windows()
        self._per_order = [name for name in PER_ORDER if name in config.faults]
        self._created: dict[str, tuple[str, float]] = {}  # order → (channel, created at)
        self._malformed = "malformed_events" in config.faults
        self._warmed = False
        self._spawn(self._arrivals(), self.now)

    # --- public ---------------------------------------------------------------------------

    def warm_up(self, budget_s: float | None = None) -> bool:
        """Live through `cfg.warm_up` seconds before `start` without emitting anything.

        A monitor is switched on in a shop that is already trading: orders are in flight
        at every stage, and the streams it reads are in their steady state from the first
        minute. Started from an empty shop instead, carrier scans take days to reach their
        level and order events about a week (delivery, then confirmation, then
        settlement), which no clean day looks like. Events before `start` are not
        emitted, so the pipeline meets these orders midway, as a real deployment does.
        Faults hit only orders created from `start` on.

        `events()` warms up first. A live source calls this in slices of `budget_s`
        seconds of work instead, so that its dataflow is never blocked for long, and
        starts its clock once it returns True.
        """
        if self._warmed:
            return True
        start = self.cfg.start
        procs = self._procs
        give_up = math.inf if budget_s is None else time.monotonic() + budget_s
        steps = 0
        while procs and procs[0][0] < start:
            t, _, proc = heapq.heappop(procs)
            self._step(t, proc)
            steps += 1
            if steps % 4096 == 0 and time.monotonic() >= give_up:
                return False
        self.now = start
        self._warmed = True
        return True

    def warm_up_left_s(self) -> float:
        """Seconds of trading still to live through before `start` (0 once warm)."""
        return 0.0 if self._warmed else max(0.0, self.cfg.start - self.now)

    def events(self) -> Iterator[dict[str, Any]]:
        self.warm_up()
        while self._procs:
            t, _, proc = heapq.heappop(self._procs)
            yield from self._release(t)
            self._step(t, proc)
        yield from self._release(math.inf)
        if self.cfg.record_labels:
            self.labels.extend(derived_labels(self.labels, self._created))

    def undelivered(self) -> list[dict[str, Any]]:
        """Events that have happened but are still in the pipe (late ones, redelivered
        copies), in delivery order; the pipe is empty afterwards.

        A live run that stops hands these over last, as a producer flushes on shutdown:
        otherwise each order whose late event never came would look like it skipped a
        state.
        """
        return [heapq.heappop(self._out)[2] for _ in range(len(self._out))]

    def label(self, fault: str, order_no: str | None, start: float, end: float | None = None,
              **labels: str) -> dict[str, Any] | None:
        if not self.cfg.record_labels:
            return None
        row = _label_row(fault, order_no, start, end, labels)
        self.labels.append(row)
        return row

    # --- scheduling -----------------------------------------------------------------------

    def _step(self, t: float, proc: Process) -> None:
        """Run a process due at `t` until it next waits, and schedule it again then."""
        self.now = t
        try:
            wait = next(proc)
        except StopIteration:
            return
        heapq.heappush(self._procs, (t + wait, next(self._seq), proc))

    def _spawn(self, proc: Process, at: float) -> None:
        heapq.heappush(self._procs, (at, next(self._seq), proc))

    def _release(self, until: float) -> Iterator[dict[str, Any]]:
        out = self._out
        while out and out[0][0] <= until:
            yield heapq.heappop(out)[2]

    def _emit(self, event: dict[str, Any]) -> None:
        """Queue an event for delivery; the pipe may deliver it late or twice."""
        delay = self.rng.uniform(0.05, 2.0)
        if self.cfg.noise and self.rng.random() < self.cfg.late_share:
            delay += self.rng.uniform(30, 240)  # late, across streams: minutes
        heapq.heappush(self._out, (self.now + delay, next(self._seq), event))
        if self.cfg.noise and self.rng.random() < self.cfg.redelivery_share:
            again = self.now + delay + self.rng.uniform(1, 90)
            heapq.heappush(self._out, (again, next(self._seq), event))
        if self._malformed and self.rng.random() < 0.0005:
            heapq.heappush(self._out, (self.now + delay, next(self._seq), self._garble(event)))

    def _garble(self, event: dict[str, Any]) -> dict[str, Any]:
        """A producer bug: a copy with a field dropped, mistyped or mis-formatted."""
        bad = dict(event, event_id=event["event_id"] + "-garbled")
        kind = self.rng.randrange(3)
        if kind == 0:
            del bad["order_no"]
        elif kind == 1:
            bad["occurred_at"] = bad["occurred_at"][:19].replace("T", " ")  # no zone
        else:
            bad["order_no"] = 12345
        return bad

    # --- fault windows --------------------------------------------------------------------

    def _plan_windows(self) -> list[_Window]:
        windows = []
        at = self.cfg.start + self.cfg.first_window_at
        for scenario, length, target in WINDOWS:
            if scenario in self.cfg.faults:
                windows.append(_Window(scenario, target, at, at + length))
                at += length + WINDOW_GAP
        for w in windows:
            if w.scenario in ("waf_block", "cert_expired"):
                self.label("callback_failure_rate", None, w.start, w.end, gateway=w.target)
            if w.scenario == "cert_expired":
                self.label("callback_cert_expired", None, w.start, w.end, gateway=w.target)
            if w.scenario == "hot_lock_key":
                self.label("lock_contention", None, w.start, w.end, lock_family="stock")
            if w.scenario == "gateway_degrading":  # the fixed 5% rule: once the creep is there
                self.label("metric_anomaly", None, w.start, w.end, gateway=w.target)
                crossed = w.start + DEGRADE_CREEP * (0.05 - DEGRADE_FROM) / (
                    DEGRADE_TO - DEGRADE_FROM)
                self.label("callback_failure_rate", None, crossed, w.end, gateway=w.target)
            if w.scenario == "notify_url_broken":  # orders count once they are 2 h old
                self.label("pending_payment_backlog", None, w.start + 2 * HOUR,
                           w.end + 4 * HOUR)
        return windows

    def _window(self, scenario: str, target: str | None = None) -> _Window | None:
        for w in self._windows:
            if w.scenario == scenario and w.start <= self.now < w.end and (
                    w.target is None or w.target == target):
                return w
        return None

    def _degraded_share(self, gateway: str) -> float:
        """gateway_degrading: the share of notifies that fail, all along and in the creep."""
        if "gateway_degrading" not in self.cfg.faults:
            return 0.0
        if gateway != DEGRADE_TARGET:
            return 0.0
        w = self._window("gateway_degrading", gateway)
        if w is None:
            return DEGRADE_FROM
        crept = min(1.0, (self.now - w.start) / DEGRADE_CREEP)
        return DEGRADE_FROM + (DEGRADE_TO - DEGRADE_FROM) * crept

    # --- order arrivals -------------------------------------------------------------------

    def _arrivals(self) -> Process:
        rng = self.rng
        limit = self.cfg.orders
        created = 0
        start = self.cfg.start
        while limit is None or created < limit:  # orders created from `start` on
            yield rng.expovariate(self.cfg.orders_per_minute / MINUTE)
            order = self._new_order()
            created += self.now >= start
            self._spawn(self._order_life(order), self.now)
            if order.fault == "repeat_create" and (limit is None or created < limit):
                twin = self._new_order(like=order)
                created += 1
                self._spawn(self._order_life(twin), self.now + rng.uniform(2, 90))

    def _new_order(self, like: _Order | None = None) -> _Order:
        rng = self.rng
        n = next(self._order_seq)
        order_no = f"ORD{to_rfc3339(self.cfg.start, 'Asia/Shanghai')[:10].replace('-', '')}" \
                   f"{self.cfg.seed % 1000:03d}{n:07d}"
        if like is not None:
            return _Order(order_no, like.user_id, like.channel, like.gateway, like.amount,
                          [dict(item) for item in like.items], like.grace_s, fault="twin",
                          sku=like.sku)
        channel = _weighted(rng, {c: share for c, (share, _) in CHANNELS.items()})
        gateway = _weighted(rng, CHANNELS[channel][1])
        items = [{"sku": f"SKU-{rng.randint(1, 400):04d}", "qty": rng.choice((1, 1, 1, 2, 3))}
                 for _ in range(rng.choice((1, 1, 2, 3)))]
        amount = round(sum(item["qty"] * rng.uniform(9, 399) for item in items), 2)
        grace = 1800 if rng.random() < 0.7 else 172800
        fault = None
        if self._per_order and self.now >= self.cfg.start and (
                rng.random() < self.cfg.fault_share * len(self._per_order)):
            fault = rng.choice(self._per_order)
        if fault == "premature_cancel":
            grace = 172800
        return _Order(order_no, f"U{next(self._user_seq):07d}", channel, gateway, amount,
                      items, grace, fault, sku=items[0]["sku"])

    # --- event builders -------------------------------------------------------------------

    def _event(self, order: _Order, stream: str, **fields: Any) -> None:
        order.seq += 1
        if self.now < self.cfg.start:
            return  # warm-up: it happened before anyone watched
        event = {"event_id": f"{order.order_no}-{order.seq}", "stream": stream,
                 "order_no": order.order_no,
                 "occurred_at": to_rfc3339(round(self.now, 3), "Asia/Shanghai")}
        event.update(fields)
        self._emit(event)

    def _op(self, order: _Order, action: str, source: str, status: str | None = None,
            result: str = "ok", **fields: Any) -> None:
        """An operation; a failed one keeps the status unless `status` says otherwise."""
        prev = order.status
        new = status if status is not None else (sm.ACTIONS[action][1] or prev)
        if result != "ok" and status is None:
            new = prev
        order.status = new
        self._event(order, "order", action=action, result=result, status=new,
                    prev_status=None if action == "create" else prev, source=source, **fields)

    def _lock(self, key: str, wait_ms: float, held_ms: float | None, ttl_ms: float,
              acquired: bool = True) -> dict[str, Any]:
        lock = {"key": key, "acquired": acquired, "wait_ms": round(wait_ms, 1),
                "ttl_ms": ttl_ms}
        if acquired and held_ms is not None:
            lock["held_ms"] = round(held_ms, 1)
        return lock

    # --- one order's life -----------------------------------------------------------------

    def _order_life(self, o: _Order) -> Process:
        rng = self.rng
        self._create(o)
        if o.fault == "twin":
            self.label("duplicate_order", o.order_no, self.now, None, user_id=o.user_id)
            yield rng.uniform(60, 600)
            self._op(o, "cancel", "oms")
            return

        if o.fault == "premature_cancel":
            yield rng.uniform(3, 8) * MINUTE
            self._op(o, "timeout_cancel", "scheduler")
            self.label("premature_timeout_cancel", o.order_no, self.now, None)
            return
        # payment: most pay within minutes; some abandon the cart
        roll = rng.random()
        if roll < 0.03:
            yield rng.uniform(1, 20) * MINUTE
            self._op(o, "cancel", "oms")
            return
        if roll < 0.06:
            yield 15 * MINUTE
            self._event(o, "callback", gateway=o.gateway, kind="query", trade_status="NOTPAY")
            yield o.grace_s - 15 * MINUTE + rng.uniform(0, 120)  # the scheduler runs late
            self._op(o, "timeout_cancel", "scheduler")
            return
        yield rng.uniform(0.3, 12) * MINUTE
        yield from self._payment(o)
        if o.fault == "illegal_jump":  # a status-code mapping error in the ERP sync
            yield rng.uniform(30, 120)
            self._op(o, "status_sync", "erp", status=sm.DELIVERED)
            self.label("illegal_transition", o.order_no, self.now, None)

        if o.fault == "stuck_review" or rng.random() < 0.1:  # manual review for some orders
            yield rng.uniform(1, 30)
            self._op(o, "review", "oms")
            if o.fault == "stuck_review":
                self.label("stuck_order", o.order_no, self.now, None, status=sm.PENDING_REVIEW)
                yield rng.uniform(3, 6) * HOUR
            else:
                yield rng.uniform(5, 90) * MINUTE
            self._op(o, "approve", "admin")
        yield rng.uniform(1, 60)
        yield from self._reserve_stock(o)
        yield rng.uniform(0.5, 24) * HOUR
        yield from self._ship(o)
        yield from self._carry(o)
        if rng.random() < 0.02:  # after-sales refund
            yield rng.uniform(2, 48) * HOUR
            self._op(o, "refund", "oms")
            yield rng.uniform(2, 48) * HOUR
            self._op(o, "refund", "payment_handler", status=sm.REFUNDED)
            return
        yield rng.uniform(0.5, 3) * DAY
        self._op(o, "confirm", "oms")
        yield rng.uniform(1, 30) * HOUR
        if o.fault == "completion_without_settlement":  # the bank API timed out
            self._op(o, "settle", "erp", status=sm.COMPLETED, result="failed")
            self.label("settlement_missing", o.order_no, self.now, None)
        else:
            self._op(o, "settle", "erp")

    def _create(self, o: _Order) -> None:
        """Not part of `_order_life`'s generator, so its frame does not keep the create
        event's fields alive for the order's whole life (memory, in live mode)."""
        rng = self.rng
        create: dict[str, Any] = {"user_id": o.user_id, "channel": o.channel,
                                  "amount": o.amount, "items": o.items,
                                  "grace_period_s": o.grace_s, "currency": "CNY",
                                  "request_id": f"c-{o.order_no}"}
        if o.fault == "timezone_skew":  # browser local time stored with the server's zone
            hours = rng.choice((8, -1))
            client = self.now - hours * HOUR - rng.uniform(0.2, 3.0)
            create["client_created_at"] = to_rfc3339(round(client, 3), "Asia/Shanghai")
            self.label("timezone_skew", o.order_no, self.now, None)
        elif rng.random() < 0.6:
            client = self.now - rng.uniform(0.2, 3.0)  # a browser clock a little behind
            create["client_created_at"] = to_rfc3339(round(client, 3),
                                                     rng.choice(("UTC", "Asia/Shanghai")))
        self._op(o, "create", "oms", **create)
        o.items = ()  # they travel in the create event only; an open order holds its sku
        if self.cfg.record_labels and self.now >= self.cfg.start:
            self._created[o.order_no] = (o.channel, self.now)

    def _payment(self, o: _Order) -> Process:
        """The buyer pays; the gateway notifies (and retries) until the order service says 200."""
        rng = self.rng
        paid_at = self.now
        txn = f"T{rng.randrange(10**12):012d}"
        success = {"gateway": o.gateway, "trade_status": "SUCCESS", "transaction_id": txn,
                   "amount": o.amount, "paid_at": to_rfc3339(round(paid_at, 3), "Asia/Shanghai")}
        self._spawn(self._reconcile(o, success), paid_at + 5 * MINUTE + rng.uniform(0, 60))
        for attempt, wait in enumerate(NOTIFY_RETRIES, start=1):
            yield wait + rng.uniform(0.5, 3)
            latency = rng.lognormvariate(math.log(80), 0.4)
            if self._window("dns_outage") or self._window("notify_url_broken"):
                continue  # the notify host does not resolve / the route is gone: nothing arrives
            outage = self._window("channel_outage", o.channel)
            if outage:  # accepted, but the handler drops the status update until repaired
                self._event(o, "callback", kind="notify", http_status=200, signature_valid=True,
                            attempt=attempt, latency_ms=round(latency, 1), **success)
                yield outage.end + 20 * MINUTE - self.now + rng.uniform(0, 300)
                self._op(o, "pay", "admin", request_id=f"p-{txn}")
                self.label("callback_lost", o.order_no, paid_at, self.now, gateway=o.gateway)
                return
            if self._window("waf_block", o.gateway):
                self._event(o, "callback", kind="notify", http_status=403, signature_valid=True,
                            attempt=attempt, latency_ms=round(latency / 20, 1), **success)
                continue
            if self._window("cert_expired", o.gateway):
                self._event(o, "callback", kind="notify", http_status=500,
                            signature_valid=False, err_code="CERTIFICATE_EXPIRED",
                            attempt=attempt, latency_ms=round(latency, 1), **success)
                continue
            degraded = self._degraded_share(o.gateway)
            if degraded and rng.random() < degraded:
                self._event(o, "callback", kind="notify", http_status=502, signature_valid=True,
                            err_code="BAD_GATEWAY", attempt=attempt,
                            latency_ms=round(latency * 10, 1), **success)
                continue
            if attempt == 1 and rng.random() < 0.001:  # a transient error; the retry succeeds
                self._event(o, "callback", kind="notify", http_status=504, signature_valid=True,
                            err_code="TIMEOUT", attempt=attempt, latency_ms=5000.0, **success)
                continue
            self._event(o, "callback", kind="notify", http_status=200, signature_valid=True,
                        attempt=attempt, latency_ms=round(latency, 1), **success)
            yield rng.uniform(0.02, 0.3)
            self._op(o, "pay", "payment_handler", request_id=f"p-{txn}")
            if self.now - paid_at >= 10 * MINUTE:
                self.label("callback_lost", o.order_no, paid_at, self.now, gateway=o.gateway)
            return
        raise AssertionError("notify retries exhausted")  # windows are shorter than retries

    def _reconcile(self, o: _Order, success: dict[str, Any]) -> Process:
        """The order service's reconciliation job asks the gateway about stale orders."""
        if o.status == sm.PENDING_PAYMENT:
            self._event(o, "callback", kind="query", **success)
        return
        yield  # a generator: spawned like every other process

    def _reserve_stock(self, o: _Order) -> Process:
        rng = self.rng
        o.warehouse = rng.choice(WAREHOUSES)
        sku = o.sku
        while True:
            hot = self._window("hot_lock_key")
            if hot:
                wait = rng.uniform(150, 3000)
                acquired = rng.random() > 0.15
            else:
                wait = rng.lognormvariate(math.log(15), 0.7)
                acquired = rng.random() > 0.001
            lock = self._lock(f"stock:{sku}:{o.warehouse}", wait,
                              rng.uniform(5, 80), 10000, acquired)
            self._op(o, "reserve_stock", "oms", result="ok" if acquired else "failed",
                     warehouse=o.warehouse, request_id=f"rs-{o.order_no}-{o.seq}", lock=lock)
            if acquired:
                return
            yield rng.uniform(1, 20)  # the caller retries

    def _ship(self, o: _Order) -> Process:
        rng = self.rng
        o.carrier = _weighted(rng, CARRIERS)
        o.waybill_no = f"{o.carrier[:2]}{rng.randrange(10**12):012d}"
        request_ids = [f"s-{o.order_no}-1"]
        if o.fault == "double_click_ship":
            request_ids.append(f"s-{o.order_no}-2")
        for i, rid in enumerate(request_ids):
            if i:
                yield rng.uniform(0.2, 2.0)  # the second click
                self.label("duplicate_ship_request", o.order_no, self.now, None,
                           warehouse=o.warehouse)
            self._op(o, "ship_request", "wms", request_id=rid, warehouse=o.warehouse,
                     carrier=o.carrier)
        for rid in request_ids:
            yield rng.uniform(0.5, 3.0)
            ttl = 30000.0
            held = rng.uniform(200, 3000)
            if o.fault == "lock_ttl_short":
                held = ttl * rng.uniform(1.05, 1.3)
                self.label("lock_ttl_overrun", o.order_no, self.now, None,
                           lock_family="lock:ship")
            self._op(o, "ship", "wms", warehouse=o.warehouse, carrier=o.carrier,
                     waybill_no=o.waybill_no, request_id=rid,
                     lock=self._lock(f"lock:ship:{o.order_no}", rng.uniform(1, 30), held, ttl))
        if o.fault == "erp_ping_pong":
            self._spawn(self._ping_pong(o), self.now)

    def _ping_pong(self, o: _Order) -> Process:
        """An ERP automation flips the status back and forth every 17 minutes."""
        for flip in range(4):
            yield 17 * MINUTE
            back = flip % 2 == 0
            self._op(o, "status_sync", "erp",
                     status=sm.AWAITING_SHIPMENT if back else sm.SHIPPED)
            if flip == 0:
                self.label("illegal_transition", o.order_no, self.now, None)
            if flip == 1:  # the ship and two flips: the third alternation
                self.label("status_flapping", o.order_no, self.now, None)

    def _carry(self, o: _Order) -> Process:
        """The carrier picks up, moves and delivers the parcel; the OMS marks it delivered."""
        rng = self.rng
        shipped_at = self.now
        fast = o.carrier in FAST_CARRIERS
        limit = 4 * HOUR if fast else 24 * HOUR
        if o.fault == "silent_carrier":
            pickup = limit + rng.uniform(2, 20) * HOUR
        elif fast:
            pickup = rng.uniform(0.3, 3.5) * HOUR
        else:
            pickup = rng.uniform(1, 22) * HOUR  # slow, but legal
        yield pickup
        if o.fault == "silent_carrier":
            self.label("silent_shipment", o.order_no, shipped_at, self.now,
                       carrier=o.carrier, warehouse=o.warehouse)
        via = "push" if fast else "poll"
        scan = {"carrier": o.carrier, "waybill_no": o.waybill_no, "via": via}
        self._event(o, "logistics", event="picked_up", location=rng.choice(CITIES), **scan)
        yield rng.uniform(2, 20) * HOUR
        self._event(o, "logistics", event="in_transit", location=rng.choice(CITIES), **scan)
        yield rng.uniform(8, 40) * HOUR
        self._event(o, "logistics", event="out_for_delivery", location=rng.choice(CITIES),
                    **scan)
        yield rng.uniform(1, 6) * HOUR
        self._event(o, "logistics", event="delivered", **scan)
        yield rng.uniform(1, 10) * MINUTE
        self._op(o, "deliver", "oms")


def visible_at(label: dict[str, Any], start: float) -> float:
    """When a per-order fault becomes detectable: its start plus the catalogue threshold."""
    t = DEFAULT_THRESHOLDS
    fault = label["fault"]
    if fault == "callback_lost":
        return start + t.callback_lost_after_s
    if fault == "silent_shipment":
        fast = label["labels"].get("carrier") in t.silent_fast_carriers
        return start + (t.silent_fast_limit_s if fast else t.silent_default_limit_s)
    if fault == "stuck_order":
        return start + t.stuck_review_s
    return start


def derived_labels(labels: list[dict[str, Any]],
                   created: dict[str, tuple[str, float]]) -> list[dict[str, Any]]:
    """`order_risk_high` for every broken order, once its fault is visible, and
    `channel_degraded` wherever ten consecutive orders of a channel were broken within
    `channel_verdict_after_s` of their creation (the detector's definition, on the truth)."""
    t = DEFAULT_THRESHOLDS
    risky: dict[str, float] = {}
    for label in labels:
        if label["order_no"] and label["fault"] in RISKY:
            at = visible_at(label, from_rfc3339(label["start"]))
            risky[label["order_no"]] = min(at, risky.get(label["order_no"], math.inf))
    out = []
    for order_no, at in sorted(risky.items(), key=lambda kv: (kv[1], kv[0])):
        channel = created.get(order_no, ("", 0.0))[0]
        out.append(_label_row("order_risk_high", order_no, at, None, {"channel": channel}))
    by_channel: dict[str, list[tuple[float, str, bool]]] = {}
    for order_no, (channel, created_at) in created.items():
        verdict_at = created_at + t.channel_verdict_after_s
        high = risky.get(order_no, math.inf) <= verdict_at
        by_channel.setdefault(channel, []).append((verdict_at, order_no, high))
    for channel, verdicts in sorted(by_channel.items()):
        for start, end in degraded_runs(sorted(verdicts), t.channel_streak):
            out.append(_label_row("channel_degraded", None, start, end, {"channel": channel}))
    return out


def _label_row(fault: str, order_no: str | None, start: float, end: float | None,
               labels: dict[str, str]) -> dict[str, Any]:
    return {"fault": fault, "order_no": order_no, "labels": labels,
            "start": to_rfc3339(start, "Asia/Shanghai"),
            "end": None if end is None else to_rfc3339(end, "Asia/Shanghai")}


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    total = sum(weights.values())
    roll = rng.random() * total
    for name, weight in weights.items():
        roll -= weight
        if roll < 0:
            return name
    return name


def simulate(config: SimConfig, on_event: Callable[[dict[str, Any]], None]) -> list[dict]:
    """Run a finite simulation, handing each event to `on_event`; returns the labels."""
    if config.orders is None:
        raise ValueError("simulate() needs a finite number of orders")
    sim = Simulator(config)
    for event in sim.events():
        on_event(event)
    return sim.labels


__all__ = ["SCENARIOS", "SimConfig", "Simulator", "simulate"]
