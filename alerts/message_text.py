"""What a robot message says, in Chinese (default) or English, within a byte budget.

A message is a headline and one line per notice. `pack` splits many notices into as few
messages as fit the robot's size limit, so a digest never drops an alert; `fit_lines`
cuts one oversized list and says how many lines were cut, keeping the headline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from orderwatch.alerts.notice import Notice
from orderwatch.timestamps import to_rfc3339

WORDS = {
    "zh": {"firing": "告警", "resolved": "恢复", "critical": "严重", "warning": "警告",
           "info": "提示", "since": "开始于", "ended": "恢复于", "more": "另有 {n} 条未显示",
           "headline": "OrderWatch {parts}", "count": "{n} 条{status}",
           "reminder": "仍未恢复"},
    "en": {"firing": "FIRING", "resolved": "RESOLVED", "critical": "critical",
           "warning": "warning", "info": "info", "since": "since", "ended": "ended",
           "more": "{n} more not shown", "headline": "OrderWatch {parts}",
           "count": "{n} {status}", "reminder": "STILL FIRING"},
}

NAMES_ZH = {
    "callback_lost": "支付回调丢失", "callback_failure_rate": "支付回调失败率高",
    "callback_cert_expired": "回调证书过期", "silent_shipment": "发货无揽收",
    "duplicate_ship_request": "重复发货请求", "duplicate_order": "重复下单",
    "lock_ttl_overrun": "锁持有超过 TTL", "lock_contention": "锁竞争",
    "timezone_skew": "时区偏差", "premature_timeout_cancel": "超时取消过早",
    "illegal_transition": "非法状态流转", "status_flapping": "状态反复横跳",
    "stuck_order": "订单卡单", "settlement_missing": "完成未结算",
    "pending_payment_backlog": "待支付积压", "metric_anomaly": "指标异常",
    "order_risk_high": "订单高风险", "channel_degraded": "渠道劣化",
}

DIMENSIONS = ("order_no", "gateway", "carrier", "channel", "warehouse", "lock_family",
              "metric", "series")


@dataclass(frozen=True, slots=True)
class Text:
    headline: str
    lines: tuple[str, ...]


def alert_name(name: str, language: str) -> str:
    return f"{NAMES_ZH[name]}({name})" if language == "zh" and name in NAMES_ZH else name


def line(n: Notice, language: str, tz: str) -> str:
    w = WORDS[language]
    dims = " ".join(f"{k}={n.labels[k]}" for k in DIMENSIONS if k in n.labels)
    when = (f"{w['ended']} {to_rfc3339(n.ends_at, tz)}" if n.status == "resolved" and n.ends_at
            else f"{w['since']} {to_rfc3339(n.starts_at, tz)}")
    status = w["reminder"] if n.reminder else w[n.status]
    summary = n.summary_zh if language == "zh" and n.summary_zh else n.summary
    return (f"[{status}·{w.get(n.severity, n.severity)}] {alert_name(n.alert, language)}"
            f" {dims} — {summary} ({when})").replace("  ", " ")


def headline(notices: Sequence[Notice], language: str) -> str:
    w = WORDS[language]
    by_status = Counter(n.status for n in notices)
    parts = " · ".join(w["count"].format(n=by_status[s], status=w[s])
                       for s in ("firing", "resolved") if by_status[s])
    if len(notices) == 1:
        n = notices[0]
        parts = f"{w[n.status]} {alert_name(n.alert, language)}"
    return w["headline"].format(parts=parts)


def inhibited_line(group: Sequence[Notice], language: str) -> str:
    """Per-order notices held back by an aggregate alert: one line listing the orders."""
    n = group[0]
    w = WORDS[language]
    orders = ", ".join(x.labels.get("order_no", "?") for x in group)
    dims = " ".join(f"{k}={n.labels[k]}" for k in DIMENSIONS[1:] if k in n.labels)
    because = alert_name(n.labels["inhibited_by"], language)
    if language == "zh":
        return (f"[{w[n.status]}] {alert_name(n.alert, language)} × {len(group)} 单 {dims}"
                f"(已由 {because} 汇总): {orders}")
    return (f"[{w[n.status]}] {n.alert} × {len(group)} orders {dims} (grouped under "
            f"{because}): {orders}")


def render(notices: Sequence[Notice], language: str, tz: str) -> Text:
    lines: list[str] = []
    grouped: dict[tuple, list[Notice]] = {}
    for n in notices:
        if "inhibited_by" in n.labels:
            key = (n.alert, n.status, n.labels["inhibited_by"],
                   tuple(n.labels.get(k) for k in DIMENSIONS[1:]))
            if key not in grouped:
                grouped[key] = []
                lines.append(key)  # placeholder: the group's line goes where it first appears
            grouped[key].append(n)
        else:
            lines.append(line(n, language, tz))
    return Text(headline(notices, language),
                tuple(inhibited_line(grouped[x], language) if isinstance(x, tuple) else x
                      for x in lines))


def size(text: bytes | str) -> int:
    return len(text.encode() if isinstance(text, str) else text)


def fit_lines(head: str, lines: Sequence[str], budget: int, language: str,
              join: str = "\n") -> str:
    """Headline plus as many lines as fit `budget` bytes, then how many were cut."""
    def more(n: int) -> str:
        return join + WORDS[language]["more"].format(n=n)

    body = head
    for i, text in enumerate(lines):
        left_after = len(lines) - i - 1
        candidate = body + join + text
        if size(candidate + (more(left_after) if left_after else "")) > budget:
            return _cut(body + more(left_after + 1), budget)
        body = candidate
    return _cut(body, budget)


def _cut(text: str, budget: int) -> str:
    """Bytes, not characters: never split a UTF-8 character."""
    data = text.encode()
    return text if len(data) <= budget else data[:budget].decode(errors="ignore")


T = TypeVar("T")


def pack(notices: Sequence[T], fits: Callable[[list[T]], bool]) -> list[list[T]]:
    """Split notices into consecutive groups, each as large as `fits(group)` allows."""
    groups: list[list[T]] = []
    current: list[T] = []
    for n in notices:
        if current and not fits([*current, n]):
            groups.append(current)
            current = []
        current.append(n)
    if current:
        groups.append(current)
    return groups
