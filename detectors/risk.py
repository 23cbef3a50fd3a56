"""Per-order risk score, 0 (healthy) to 100 (almost surely broken), with reason codes.

Features come from the order's own history: which per-order alerts fired for it, how
far it has gone toward its deadlines (paid but pending, shipped but unscanned, waiting
in a state), and its notify failures. They also come from its context in this shard:
its gateway's notify failure share over the last 5 minutes, and the share of its
carrier's recent shipments that went silent. A logistic model trained on engine-labelled
traffic (`risk_training.py`, coefficients in `risk_model.json`) turns them into
`100 · sigmoid(b + w·x)`. A feature's contribution `w_i · x_i` ranks the reasons, the way
a fraud analyst reads a payment-risk score.

Scores are recomputed when one of the order's events is applied and when one of its
alerts changes, always in event-time order, so a replay scores the same.
`order_risk_high` fires at `risk_high` (60) and resolves when the order finishes or its
score falls below `risk_review` (40). Each order also gets a verdict for
`channel_degraded`: whether it reached `risk_high` within `channel_verdict_after_s` of
its creation.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import Alert, AlertBook, Deadlines
from orderwatch.detectors.callback_health import notify_failed
from orderwatch.detectors.order_book import OrderState
from orderwatch.engine import state_machine as sm
from orderwatch.events import Event

MODEL_PATH = Path(__file__).with_name("risk_model.json")
ORDER_ALERTS = ("callback_lost", "silent_shipment", "duplicate_ship_request",
                "lock_ttl_overrun", "timezone_skew", "premature_timeout_cancel",
                "illegal_transition", "status_flapping", "stuck_order", "settlement_missing")


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    reason: str  # the reason code it speaks for: an alert name, or a context
    zh: str
    en: str


FEATURES: tuple[Feature, ...] = (
    Feature("callback_lost", "callback_lost", "支付回调丢失：已支付{paid_min}分钟仍为待支付",
            "payment callback lost: paid {paid_min} min ago, still pending payment"),
    Feature("silent_shipment", "silent_shipment", "{carrier}已{silent_h}小时无轨迹",
            "{carrier} silent for {silent_h} h"),
    Feature("duplicate_ship_request", "duplicate_ship_request", "重复发货请求",
            "ship requested more than once"),
    Feature("lock_ttl_overrun", "lock_ttl_overrun", "锁持有时间超过TTL，可能并发执行",
            "lock held past its TTL: concurrent execution possible"),
    Feature("timezone_skew", "timezone_skew", "客户端下单时间相差整数小时（时区错误）",
            "client order time off by whole hours (time-zone bug)"),
    Feature("premature_timeout_cancel", "premature_timeout_cancel", "宽限期内被超时取消",
            "timeout-cancelled inside its grace period"),
    Feature("illegal_transition", "illegal_transition", "非法状态跳转",
            "status changed in a way the state machine forbids"),
    Feature("status_flapping", "status_flapping", "状态反复切换", "status flapping"),
    Feature("stuck_order", "stuck_order", "在{status}停留{state_h}小时",
            "in {status} for {state_h} h"),
    Feature("settlement_missing", "settlement_missing", "已完成但未结算成功",
            "completed without a successful settlement"),
    Feature("paid_pending", "callback_lost", "已支付{paid_min}分钟仍为待支付",
            "paid {paid_min} min ago, still pending payment"),
    Feature("unscanned", "silent_shipment", "发货{silent_h}小时未揽收",
            "shipped {silent_h} h ago, not yet scanned"),
    Feature("in_state", "stuck_order", "在{status}已停留{state_h}小时",
            "{state_h} h in {status}"),
    Feature("notify_failures", "callback_lost", "支付通知{failures}次失败",
            "{failures} failed payment notifications"),
    Feature("gateway_failure_share", "gateway_health", "{gateway}回调失败率{gateway_pct}%",
            "{gateway} failing {gateway_pct}% of notifications"),
    Feature("carrier_silent_share", "carrier_health", "{carrier}近期{carrier_pct}%包裹无轨迹",
            "{carrier}: {carrier_pct}% of recent parcels silent"),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)
_ALERT_BIT = {name: 1 << i for i, name in enumerate(ORDER_ALERTS)}


class RiskModel:
    """Logistic model over FEATURES; the JSON file is written by risk_training.py."""

    def __init__(self, coef: list[float], intercept: float, meta: dict[str, Any]) -> None:
        if len(coef) != len(FEATURES):
            raise ValueError(f"model has {len(coef)} coefficients for {len(FEATURES)} features")
        self.coef = coef
        self.intercept = intercept
        self.meta = meta

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> RiskModel:
        data = json.loads(path.read_text())
        if tuple(data["features"]) != FEATURE_NAMES:
            raise ValueError(f"{path} was trained on other features; retrain it")
        return cls(data["coef"], data["intercept"], data.get("trained", {}))

    def risk(self, x: list[float]) -> float:
        """Risk 0-100. Scored for every event applied, so it ranks no reasons."""
        z = self.intercept + sum(map(operator.mul, self.coef, x))
        return 100.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))

    def contributions(self, x: list[float]) -> list[tuple[float, int]]:
        """(w_i·x_i, feature index) of the features present, largest first."""
        coef = self.coef
        return sorted([(coef[i] * v, i) for i, v in enumerate(x) if v], reverse=True)

    def score(self, x: list[float]) -> tuple[float, list[tuple[float, int]]]:
        """(risk 0-100, contributions as (w_i·x_i, feature index), largest first)."""
        return self.risk(x), self.contributions(x)


class _Context:
    """Shard-local health of gateways and carriers, by event time."""

    MINUTE = 60

    def __init__(self, window_s: float = 300.0) -> None:
        self.window = int(window_s // self.MINUTE)
        self.notifies: dict[str, dict[int, list[int]]] = {}
        self.shipments: dict[str, dict[int, int]] = {}  # carrier → hour → shipments
        self.silent: dict[str, int] = {}  # carrier → silent_shipment alerts firing
        # gateway → (first minute excluded, share): nearly every score asks, and a
        # gateway's buckets change only with its next notify
        self._shares: dict[str, tuple[int, float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_shares"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._shares = {}

    def learn(self, event: Event) -> None:
        data = event.data
        minute = int(event.ts // self.MINUTE)
        if event.stream == "callback" and data["kind"] == "notify":
            self._shares.pop(data["gateway"], None)
            buckets = self.notifies.setdefault(data["gateway"], {})
            bucket = buckets.setdefault(minute, [0, 0])
            bucket[0] += 1
            bucket[1] += notify_failed(data)
            for old in [m for m in buckets if m <= minute - self.window]:
                del buckets[old]
        elif event.stream == "order" and data["action"] == "ship" and data["result"] == "ok":
            hours = self.shipments.setdefault(data["carrier"], {})
            hour = minute // 60
            hours[hour] = hours.get(hour, 0) + 1
            for old in [h for h in hours if h <= hour - 24]:
                del hours[old]

    def gateway_failure_share(self, gateway: str | None, now: float) -> float:
        key = gateway or ""
        lo = int(now // self.MINUTE) - self.window
        cached = self._shares.get(key)
        if cached is not None and cached[0] == lo:
            return cached[1]
        total = failed = 0
        for minute, (n, f) in self.notifies.get(key, {}).items():
            if minute > lo:
                total += n
                failed += f
        share = failed / total if total >= 5 else 0.0
        self._shares[key] = (lo, share)
        return share

    def carrier_silent_share(self, carrier: str | None) -> float:
        shipped = sum(self.shipments.get(carrier or "", {}).values())
        return min(1.0, self.silent.get(carrier or "", 0) / max(20, shipped))


class RiskScorer:
    name = "order_risk_high"

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 model: RiskModel | None = None, language: str = "zh") -> None:
        self.t = thresholds
        self.model = model
        self.language = language
        self.book = AlertBook(self.name, "warning")
        self.context = _Context(thresholds.callback_failure_window_s)
        self._notify_failures: dict[str, int] = {}
        self._verdicts = Deadlines()
        self._retire = Deadlines()  # finished orders: resolve their alert after a while
        self.hold = thresholds.instant_alert_hold_s
        self._state_limits = {sm.PENDING_REVIEW: thresholds.stuck_review_s,
                              sm.AWAITING_SHIPMENT: thresholds.stuck_shipment_s,
                              sm.PENDING_SETTLEMENT: thresholds.stuck_settlement_s}
        self.rows: list[list[Any]] = []  # order_risk rows: drained by the caller
        self.verdicts: list[tuple[float, str, str, bool]] = []  # (at, order, channel, high)
        self.snapshots: list[tuple[str, float, list[float]]] | None = None  # for training

    # --- inputs ---------------------------------------------------------------------------

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        self.context.learn(event)
        data = event.data
        if event.stream == "callback" and data["kind"] == "notify" and notify_failed(data):
            self._notify_failures[event.order_no] = self._notify_failures.get(
                event.order_no, 0) + 1
        if (event.stream == "order" and data["action"] == "create"
                and event.order_no not in self._verdicts):
            self._verdicts.schedule(event.order_no, event.ts + self.t.channel_verdict_after_s)
        return self._score(order, event.ts)

    def observe(self, alerts: Iterable[Alert], orders: Mapping[str, OrderState],
                now: float) -> list[Alert]:
        """Alert transitions of the order detectors: re-score the orders they concern.

        Each order is scored at its transition's own event time, not at `now` (which
        depends on how input was chunked), so the score is the same in every replay.
        """
        out: list[Alert] = []
        touched: dict[str, float] = {}
        for alert in alerts:
            if alert.alert == "silent_shipment":
                carrier = alert.labels.get("carrier", "")
                delta = 1 if alert.status == "firing" else -1
                self.context.silent[carrier] = max(0, self.context.silent.get(carrier, 0) + delta)
            order_no = alert.labels.get("order_no")
            if order_no is None or alert.alert not in ORDER_ALERTS:
                continue
            if alert.status == "firing" and order_no in orders:
                orders[order_no].risk_fired |= _ALERT_BIT[alert.alert]
            at = alert.starts_at if alert.ends_at is None else alert.ends_at
            touched[order_no] = max(at, touched.get(order_no, at))
        for order_no, at in touched.items():
            order = orders.get(order_no)
            if order is not None:
                out.extend(self._score(order, at))
        return out

    def timers(self) -> tuple[Deadlines, ...]:
        """What `advance` acts on (its alert book is fired and resolved directly)."""
        return self._retire, self._verdicts

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        out = []
        for order_no, at in self._retire.due(now):
            alert = self.book.resolve(order_no, at, "order finished")
            if alert is not None:
                out.append(alert)
        for order_no, at in self._verdicts.due(now):
            order = orders.get(order_no)
            if order is not None and order.channel:
                high = order.risk_max >= self.t.risk_high
                self.verdicts.append((at, order_no, order.channel, high))
        return out

    def forget(self, order_no: str) -> None:
        self._notify_failures.pop(order_no, None)
        self._verdicts.cancel(order_no)
        self._retire.cancel(order_no)

    def retire(self, order_no: str, now: float) -> list[Alert]:
        """The order leaves memory: forget it, resolving its alert if still open."""
        self.forget(order_no)
        return self.book.left_memory([order_no], now)

    # --- scoring --------------------------------------------------------------------------

    def features(self, order: OrderState, now: float) -> list[float]:
        t = self.t
        x = list(_alert_bits(order.risk_fired))
        paid_at = order.paid_at
        if paid_at is not None and (order.left_pending_at is None or order.left_pending_at > now):
            x.append(_clip((now - paid_at) / t.callback_lost_after_s))
        else:
            x.append(0.0)
        shipped_at = order.shipped_at
        if shipped_at is not None and order.first_scan_at is None:
            limit = t.silent_fast_limit_s if order.carrier in t.silent_fast_carriers \
                else t.silent_default_limit_s
            x.append(_clip((now - shipped_at) / limit))
        else:
            x.append(0.0)
        state_limit = self._state_limits.get(order.status or "")
        x.append(_clip((now - order.status_at) / state_limit) if state_limit else 0.0)
        failures = self._notify_failures.get(order.order_no)
        x.append(_clip(failures / 3) if failures else 0.0)
        x.append(self.context.gateway_failure_share(order.gateway, now))
        x.append(self.context.carrier_silent_share(order.carrier) if shipped_at else 0.0)
        return x

    def _score(self, order: OrderState, now: float) -> list[Alert]:
        x = self.features(order, now)
        if self.snapshots is not None:
            self.snapshots.append((order.order_no, now, x))
        if self.model is None:
            return []
        risk = self.model.risk(x)
        if risk > order.risk_max:
            order.risk_max = risk
        key = order.order_no
        # reasons are worded only for what is written: most scores change by less than a
        # point and go nowhere
        reasons = None
        if abs(risk - order.risk_written) >= 1.0 or order.finished_at is not None:
            order.risk_written = risk
            reasons = _top_reasons(self.model.contributions(x))
            self.rows.append([key, round(risk, 1), round(order.risk_max, 1),
                              self._texts(reasons, order, now, x, self.language),
                              [f.reason for f in reasons], order.channel or "", now])
        out = []
        if risk >= self.t.risk_high:
            if not self.book.is_firing(key):
                if reasons is None:
                    reasons = _top_reasons(self.model.contributions(x))
                labels = {"order_no": key, "channel": order.channel or "",
                          "reason": reasons[0].reason if reasons else ""}
                alert = self.book.fire(key, labels, now, round(risk, 1),
                                       "; ".join(self._texts(reasons, order, now, x, "en")),
                                       "；".join(self._texts(reasons, order, now, x, "zh")))
                if alert is not None:
                    out.append(alert)
        elif risk < self.t.risk_review:
            alert = self.book.resolve(key, now)
            if alert is not None:
                out.append(alert)
        if order.finished_at is not None and self.book.is_firing(key) and key not in self._retire:
            # a broken order that finished (cancelled early, completed unsettled) stays
            # visible for a while for its manual review
            self._retire.schedule(key, max(now, order.finished_at) + self.hold)
        return out

    def _texts(self, reasons: list[Feature], order: OrderState, now: float, x: list[float],
               language: str) -> list[str]:
        if not reasons:
            return []
        values = _reason_values(order, now, x, self._notify_failures.get(order.order_no, 0),
                                language)
        return [(f.zh if language == "zh" else f.en).format(**values) for f in reasons]


def _top_reasons(contributions: list[tuple[float, int]], top: int = 3) -> list[Feature]:
    """The features of the `top` largest contributions (≥ 0.5), one per reason code."""
    picked: list[Feature] = []
    for weight, i in contributions:  # largest first
        if weight < 0.5:
            break
        feature = FEATURES[i]
        if all(feature.reason != p.reason for p in picked):
            picked.append(feature)
            if len(picked) == top:
                break
    return picked


def _clip(value: float, hi: float = 2.0) -> float:
    return max(0.0, min(hi, value))


@functools.cache
def _alert_bits(fired: int) -> tuple[float, ...]:
    """The alert features of a `risk_fired` bit set: 1.0 where the alert fired for it."""
    return tuple(1.0 if fired >> i & 1 else 0.0 for i in range(len(ORDER_ALERTS)))


def _reason_values(order: OrderState, now: float, x: list[float], failures: int,
                   language: str) -> dict[str, Any]:
    paid_until = order.left_pending_at if order.left_pending_at is not None else now
    scanned = order.first_scan_at if order.first_scan_at is not None else now
    return {
        "paid_min": round((paid_until - order.paid_at) / 60) if order.paid_at else 0,
        "carrier": order.carrier or "?",
        "silent_h": round((scanned - order.shipped_at) / 3600) if order.shipped_at else 0,
        "status": sm.status_text(order.status, language),
        "state_h": round((now - order.status_at) / 3600, 1) if order.status else 0,
        "failures": failures,
        "gateway": order.gateway or "?",
        "gateway_pct": round(100 * x[FEATURE_NAMES.index("gateway_failure_share")]),
        "carrier_pct": round(100 * x[FEATURE_NAMES.index("carrier_silent_share")]),
    }
