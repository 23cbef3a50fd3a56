"""The weekly report's trend chart: the four checks per day over two weeks, as a PNG.

Labels are English: matplotlib's bundled fonts have no CJK glyphs, and a chart of empty
boxes helps nobody.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

from orderwatch.alerts.weekly_checks import CHECKS, WeeklyReport

TITLES = {
    "pending_payment_over_2h": ("Pending payment > 2 h (share)", 0.05),
    "no_tracking_after_24h": ("Shipped, no tracking after 24 h (orders)", 0.0),
    "settlement_failed": ("Completed, settlement failed (share)", 0.0),
    "ship_requests_per_order": ("Orders with >= 2 ship requests", 0.0),
}


def trend_png(report: WeeklyReport, dpi: int = 100) -> bytes:
    days = [d.day for d in report.daily]
    this_week = set(report.week.days())
    fig = Figure(figsize=(10, 6))
    axes = fig.subplots(2, 2, sharex=True)
    for ax, name in zip(axes.flat, CHECKS, strict=True):
        title, healthy_below = TITLES[name]
        values = [d.values[name] for d in report.daily]
        colors = ["#d9534f" if d in this_week else "#9aa5b1" for d in days]
        ax.bar(range(len(days)), values, color=colors)
        if healthy_below:
            ax.axhline(healthy_below, color="#333", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(days)), [d.strftime("%m-%d") for d in days], rotation=60,
                      fontsize=7)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"OrderWatch weekly health check {report.week} (grey: week before)",
                 fontsize=12)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()
