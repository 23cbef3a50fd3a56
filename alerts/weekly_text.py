"""The weekly report in words: robot markdown lines (Chinese by default) and a
self-contained HTML page (styles inline, the chart embedded as a data URI)."""

from __future__ import annotations

import base64
import html

from orderwatch.alerts.weekly_checks import Check, WeeklyReport, checks_by_name
from orderwatch.engine.state_machine import status_text
from orderwatch.timestamps import to_rfc3339

LABELS = {
    "zh": {
        "title": "OrderWatch 周度健康自检 {week}({first} 至 {last})",
        "pending_payment_over_2h": "待支付超 2 小时占比", "no_tracking_after_24h":
        "发货后 24 小时无物流轨迹", "settlement_failed": "已完成订单分账失败率",
        "ship_requests_per_order": "同一订单发货请求次数",
        "healthy_line": {"pending_payment_over_2h": "< 5%", "no_tracking_after_24h": "0",
                         "settlement_failed": "0%", "ship_requests_per_order": "< 2 次"},
        "before": "上周", "line": "健康线", "orders": "单", "as_of": "数据截至 {t}",
        "worst": {"gateway": "问题最多的支付网关", "carrier": "问题最多的承运商",
                  "channel": "问题最多的渠道", "warehouse": "问题最多的仓库"},
        "problem": "{v}:{share} 的订单有告警({p}/{n})", "agg": ",{a} 条维度告警",
        "risky": "风险最高的未完结订单", "none": "无", "risk": "风险 {r:.0f}",
        "most": "最多 {m:.0f} 次,{c} 单 ≥ 2 次", "chart": "趋势图见附图 / HTML 报告",
        "ok": "✅", "bad": "❌", "unjudged": "⚪", "no_orders": "无可判定的订单",
        "trend": "逐日趋势(上周 | 本周)", "chart_inline": "逐日趋势见上,图表见 HTML 报告",
    },
    "en": {
        "title": "OrderWatch weekly health check {week} ({first} to {last})",
        "pending_payment_over_2h": "Pending payment over 2 h", "no_tracking_after_24h":
        "Shipped, no tracking after 24 h", "settlement_failed":
        "Completed orders, settlement failed", "ship_requests_per_order":
        "Ship requests per order",
        "healthy_line": {"pending_payment_over_2h": "< 5%", "no_tracking_after_24h": "0",
                         "settlement_failed": "0%", "ship_requests_per_order": "< 2"},
        "before": "week before", "line": "healthy", "orders": "orders",
        "as_of": "data as of {t}",
        "worst": {"gateway": "Worst gateways", "carrier": "Worst carriers",
                  "channel": "Worst channels", "warehouse": "Worst warehouses"},
        "problem": "{v}: {share} of orders alerted ({p}/{n})", "agg": ", {a} dimension alerts",
        "risky": "Riskiest open orders", "none": "none", "risk": "risk {r:.0f}",
        "most": "at most {m:.0f}, {c} orders with ≥ 2", "chart": "trend chart: see the image "
        "/ HTML report", "ok": "OK", "bad": "OFF", "unjudged": "N/A",
        "no_orders": "no orders to judge",
        "trend": "Day by day (week before | this week)",
        "chart_inline": "day by day above; chart in the HTML report",
    },
}


def figure(c: Check, language: str) -> str:
    """The check's value as a reader wants it: shares in %, counts as counts."""
    w = LABELS[language]
    if not c.judged:
        return w["no_orders"]
    if c.name in ("pending_payment_over_2h", "settlement_failed"):
        return f"{c.value:.2%} ({c.count:,}/{c.judged:,})"
    if c.name == "no_tracking_after_24h":
        return f"{c.count:,} {w['orders']}"
    return w["most"].format(m=c.value, c=c.count)


def verdict(c: Check) -> str:
    """ok, bad, or unjudged: a week without orders to judge is neither."""
    return "unjudged" if c.healthy is None else "ok" if c.healthy else "bad"


def title(report: WeeklyReport, language: str) -> str:
    days = report.week.days()
    return LABELS[language]["title"].format(week=report.week, first=days[0].strftime("%m-%d"),
                                            last=days[-1].strftime("%m-%d"))


def check_lines(report: WeeklyReport, language: str) -> list[str]:
    w = LABELS[language]
    before = checks_by_name(report.previous)
    return [f"{w[verdict(c)]} {w[c.name]}: {figure(c, language)}"
            f" — {w['before']} {figure(before[c.name], language)}; "
            f"{w['line']} {w['healthy_line'][c.name]}" for c in report.checks]


def markdown_lines(report: WeeklyReport, language: str, tz: str, risky: int = 5,
                   inline_trend: bool = False) -> list[str]:
    """The robot message, after its headline: checks, worst dimensions, riskiest orders.
    `inline_trend`: for a robot that cannot take the chart as an image (DingTalk), the
    checks' days as text."""
    w = LABELS[language]
    lines = check_lines(report, language)
    if inline_trend:
        lines += trend_lines(report, language)
    for dim, rows in report.worst.items():
        shown = "; ".join(_worst_text(r, language) for r in rows) or w["none"]
        lines.append(f"**{w['worst'][dim]}**: {shown}")
    orders = "; ".join(f"{o.order_no} {w['risk'].format(r=o.risk)} "
                       f"({status_text(o.status, language)}): "
                       f"{', '.join(o.reasons[:2])}" for o in report.riskiest[:risky])
    lines.append(f"**{w['risky']}**: {orders or w['none']}")
    lines.append(w["as_of"].format(t=to_rfc3339(report.as_of, tz)) + " · "
                 + w["chart_inline" if inline_trend else "chart"])
    return lines


SPARKS = "▁▂▃▄▅▆▇█"


def trend_lines(report: WeeklyReport, language: str) -> list[str]:
    """A line per check: its value each day of the two weeks, as bars from 0 to the
    fortnight's highest (all lowest when every day is 0)."""
    w = LABELS[language]
    this_week = set(report.week.days())
    lines = [f"**{w['trend']}**"]
    for c in report.checks:
        before = [d.values[c.name] for d in report.daily if d.day not in this_week]
        current = [d.values[c.name] for d in report.daily if d.day in this_week]
        top = max(before + current, default=0.0)
        lines.append(f"{w[c.name]}: `{_bars(before, top)} | {_bars(current, top)}`")
    return lines


def _bars(values: list[float], top: float) -> str:
    return "".join(sparkline_bar(v, top) for v in values)


def sparkline_bar(value: float, top: float) -> str:
    if top <= 0 or value <= 0:
        return SPARKS[0]
    return SPARKS[min(len(SPARKS) - 1, max(1, round(value / top * (len(SPARKS) - 1))))]


def _worst_text(row, language: str) -> str:
    w = LABELS[language]
    text = w["problem"].format(v=row.value, share=f"{row.share:.1%}", p=row.problem_orders,
                               n=row.orders)
    return text + (w["agg"].format(a=row.aggregate_alerts) if row.aggregate_alerts else "")


def html_page(report: WeeklyReport, png: bytes, language: str, tz: str) -> str:
    w = LABELS[language]
    e = html.escape
    before = checks_by_name(report.previous)
    checks = "".join(
        f"<tr class={verdict(c)}><td>{w[verdict(c)]}"
        f"</td><td>{e(w[c.name])}</td><td>{e(figure(c, language))}</td>"
        f"<td>{e(figure(before[c.name], language))}</td>"
        f"<td>{e(w['healthy_line'][c.name])}</td></tr>" for c in report.checks)
    worst = "".join(
        f"<h3>{e(w['worst'][dim])}</h3><table><tr><th></th><th>{e(w['orders'])}</th>"
        f"<th>alerted</th><th>%</th><th>dimension alerts</th></tr>"
        + "".join(f"<tr><td>{e(r.value)}</td><td>{r.orders:,}</td><td>{r.problem_orders:,}"
                  f"</td><td>{r.share:.1%}</td><td>{r.aggregate_alerts}</td></tr>"
                  for r in rows) + "</table>"
        for dim, rows in report.worst.items())
    risky = "".join(
        f"<tr><td>{e(o.order_no)}</td><td>{o.risk:.0f}</td>"
        f"<td>{e(status_text(o.status, language))}</td>"
        f"<td>{e(o.channel)}</td><td>{e('; '.join(o.reasons))}</td></tr>"
        for o in report.riskiest) or f"<tr><td colspan=5>{e(w['none'])}</td></tr>"
    chart = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8"><title>{e(title(report, language))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: .3em .7em; text-align: left; }}
tr.bad td:first-child {{ color: #c9302c; font-weight: bold; }}
tr.ok td:first-child {{ color: #2d8a3e; }}
tr.unjudged td {{ color: #888; }}
</style></head><body>
<h1>{e(title(report, language))}</h1>
<p>{e(w['as_of'].format(t=to_rfc3339(report.as_of, tz)))}</p>
<table><tr><th></th><th></th><th>{e(str(report.week))}</th><th>{e(w['before'])}</th>
<th>{e(w['line'])}</th></tr>{checks}</table>
<img alt="trend" src="data:image/png;base64,{chart}">
{worst}
<h3>{e(w['risky'])}</h3>
<table><tr><th>order</th><th>risk</th><th>status</th><th>channel</th><th>reasons</th></tr>
{risky}</table>
</body></html>
"""

