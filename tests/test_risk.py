"""The per-order risk score and channel_degraded, on hand-written event lists."""

from __future__ import annotations

import copy
import math
import random

from orderwatch.config import Thresholds
from orderwatch.detectors.base import run_on
from orderwatch.detectors.catalogue import order_detectors
from orderwatch.detectors.channel_degraded import ChannelDegraded, degraded_runs
from orderwatch.detectors.risk import FEATURE_NAMES, RiskModel, RiskScorer, _Context

from conftest import HOUR, MIN, T0, callback, order_event, scan, ship

T = Thresholds()


def scored(events, language="zh", until=None):
    scorer = RiskScorer(T, RiskModel.load(), language)
    alerts = run_on(events, order_detectors(T), risk=scorer, until=until)
    return scorer, [a for a in alerts if a.alert == "order_risk_high"]


def lost_callback(order_no: str, fixed_after: float | None = None):
    events = [order_event(order_no, 0, "create", "pending_payment", channel="douyin"),
              callback(order_no, 65, paid_at=60, http_status=403)]
    if fixed_after is not None:
        events.append(order_event(order_no, 60 + fixed_after, "pay", "paid"))
    return events


def test_shipped_model_matches_the_features_and_records_its_training():
    model = RiskModel.load()
    assert len(model.coef) == len(FEATURE_NAMES)
    assert model.meta["seeds"] and model.meta["holdout_order_auc"] >= 0.95
    assert "risk_training" in model.meta["command"]


def test_the_risk_alone_is_the_logistic_score_and_reasons_rank_largest_first():
    """Every applied event is scored, so the risk is computed without ranking reasons;
    the ranking is done only for what is written or fired, and must agree with it."""
    model = RiskModel(coef=[0.5] * len(FEATURE_NAMES), intercept=-1.0, meta={})
    x = [0.0] * len(FEATURE_NAMES)
    x[FEATURE_NAMES.index("paid_pending")] = 2.0
    x[FEATURE_NAMES.index("notify_failures")] = 1.0
    assert model.risk(x) == 100.0 / (1.0 + math.exp(-(-1.0 + 1.0 + 0.5)))
    assert model.contributions(x) == [(1.0, FEATURE_NAMES.index("paid_pending")),
                                      (0.5, FEATURE_NAMES.index("notify_failures"))]
    assert model.score(x) == (model.risk(x), model.contributions(x))


def test_a_healthy_order_stays_low_risk():
    events = [order_event("H1", 0, "create", "pending_payment"), callback("H1", 60),
              order_event("H1", 61, "pay", "paid"),
              order_event("H1", 120, "reserve_stock", "awaiting_shipment"),
              ship("H1", 3 * HOUR), scan("H1", 5 * HOUR, "ZT1")]
    scorer, alerts = scored(events)
    assert alerts == []
    assert all(row[2] < T.risk_review for row in scorer.rows)


def test_lost_callback_raises_risk_with_a_chinese_reason_and_resolves_when_done():
    events = lost_callback("R1", fixed_after=14 * MIN)
    events.append(order_event("R1", 2 * HOUR, "cancel", "cancelled"))  # finished, for review
    scorer, alerts = scored(events, until=T0 + 5 * HOUR)
    firing = [a for a in alerts if a.status == "firing"]
    assert len(firing) == 1
    assert firing[0].starts_at == T0 + 60 + 10 * MIN  # with callback_lost, not later
    assert firing[0].labels == {"order_no": "R1", "channel": "douyin",
                                "reason": "callback_lost"}
    assert firing[0].value >= T.risk_high
    top = max(scorer.rows, key=lambda row: row[2])
    assert top[4][0] == "callback_lost"
    assert top[3][0].startswith("支付回调丢失：已支付")
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[1].ends_at == T0 + 2 * HOUR + T.instant_alert_hold_s


def test_reasons_in_english_on_request():
    scorer, _ = scored(lost_callback("R2"), language="en", until=T0 + HOUR)
    top = max(scorer.rows, key=lambda row: row[2])
    assert top[3][0].startswith("payment callback lost: paid ")


def test_a_reason_names_the_status_as_the_shop_does_in_chinese_and_by_code_in_english():
    events = [order_event("R4", 0, "create", "pending_payment"),
              order_event("R4", 60, "pay", "paid"),
              order_event("R4", 120, "review", "pending_review")]
    for language, status in (("zh", "待审核"), ("en", "pending_review")):
        scorer, _ = scored(events, language=language, until=T0 + 5 * HOUR)
        texts = [text for row in scorer.rows for text in row[3]]
        assert any(status in text for text in texts), texts


def test_channel_verdicts_come_after_the_horizon():
    scorer, _ = scored(lost_callback("R3"), until=T0 + HOUR)
    assert scorer.verdicts == [(T0 + T.channel_verdict_after_s, "R3", "douyin", True)]


def test_channel_degraded_fires_on_ten_high_in_a_row_and_resolves_with_hysteresis():
    det = ChannelDegraded(T)
    alerts = []
    # nine high then a healthy one: no streak; ten high: fires; then it takes fewer than
    # half high among the last ten to resolve (one healthy order does not)
    pattern = [True] * 9 + [False] + [True] * 10 + [False, True] + [False] * 5
    for i, high in enumerate(pattern):
        alerts += det.learn_one((T0 + i * MIN, f"O{i}", high), "douyin")
    assert [(a.status, a.starts_at, a.ends_at) for a in alerts] == [
        ("firing", T0 + 19 * MIN, None), ("resolved", T0 + 19 * MIN, T0 + 26 * MIN)]
    verdicts = [(T0 + i * MIN, f"O{i}", high) for i, high in enumerate(pattern)]
    assert degraded_runs(verdicts, 10) == [(T0 + 19 * MIN, T0 + 26 * MIN)]


def test_a_gateways_cached_failure_share_is_the_share_its_buckets_give_now():
    """Scores ask the share over and over; it is kept per gateway until the gateway's next
    notify. Interleaved notifies and asks, in and out of time order, must read as the
    buckets would without the cache."""
    rng = random.Random(8)
    context = _Context(window_s=5 * MIN)
    t = 0.0
    for _ in range(3000):
        t += rng.uniform(0, 10)
        gateway = rng.choice(["alipay", "wechatpay"])
        if rng.random() < 0.5:
            context.learn(callback(f"O{rng.randrange(50)}", t, gateway=gateway,
                                   http_status=rng.choice([200, 200, 500])))
        asked_at = T0 + t + rng.choice([0, 0, -30, -400, 70, 200])
        uncached = copy.copy(context)
        uncached._shares = {}
        assert context.gateway_failure_share(gateway, asked_at) == \
            uncached.gateway_failure_share(gateway, asked_at)
    assert 0 < context.gateway_failure_share("alipay", T0 + t) < 1
