"""The OrderWatch Grafana dashboards, as code (grafana-foundation-sdk), rendered to JSON.

    python -m orderwatch.dashboards.build           # write dashboards/grafana/*.json
    python -m orderwatch.dashboards.build --check   # exit 1 if the committed JSON is stale

Panels read Prometheus (live rates, ratios, percentiles) or ClickHouse (per-order detail,
history, anything with reasons). The ClickHouse SQL uses the plugin's macros
(`$__timeFilter_ms`, `$__timeInterval_ms`, ...) and the dashboard variables `gateway`,
`carrier`, `channel` and `warehouse`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

from orderwatch.dashboards.clickhouse_query import Query

OUT = Path(__file__).with_name("grafana")
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="orderwatch-prometheus")
CLICKHOUSE = DataSourceRef(type_val="grafana-clickhouse-datasource", uid="orderwatch-clickhouse")
VARIABLES = {  # name → (label, the series whose label lists its values)
    "gateway": ("Gateway", "orderwatch_callback_notifications_total"),
    "carrier": ("Carrier", "orderwatch_shipments_total"),
    "channel": ("Channel", "orderwatch_orders_created_total"),
    "warehouse": ("Warehouse", "orderwatch_ship_requests_total"),
}


def prom(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)


def ts_panel(title: str, *targets, unit: str = "short", description: str = "",
             datasource: DataSourceRef = PROMETHEUS, span: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(datasource).span(span).height(8))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def table_panel(title: str, sql: str, description: str = "", span: int = 12,
                height: int = 8) -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(CLICKHOUSE)
            .with_target(Query(sql)).span(span).height(height))


def stat_panel(title: str, target, unit: str = "short", datasource: DataSourceRef = PROMETHEUS,
               span: int = 6) -> stat.Panel:
    return (stat.Panel().title(title).unit(unit).datasource(datasource).with_target(target)
            .span(span).height(5))


@dataclass
class Board:
    uid: str
    title: str
    description: str
    variables: tuple[str, ...] = ()
    panels: list = field(default_factory=list)

    def build(self) -> db.Dashboard:
        board = (db.Dashboard(self.title).uid(self.uid).description(self.description)
                 .tags(["orderwatch"]).refresh("30s").time("now-6h", "now")
                 .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
                 .link(db.DashboardLink("OrderWatch").type("dashboards").tags(["orderwatch"])
                       .as_dropdown(True).include_vars(True).keep_time(True)))
        for name in self.variables:
            label, series = VARIABLES[name]
            board = board.with_variable(
                db.QueryVariable(name).label(label).datasource(PROMETHEUS)
                .query(f"label_values({series}, {name})").multi(True).include_all(True))
        for panel in self.panels:
            board = board.with_panel(panel)
        return board


def overview() -> Board:
    weekly = """
SELECT
  round(100 * countIf(status = 'pending_payment' AND created_at < $__toTime - INTERVAL 2 HOUR)
        / greatest(countIf(created_at < $__toTime - INTERVAL 2 HOUR), 1), 2)
    AS `pending payment > 2 h, % (healthy < 5)`,
  countIf(shipped_at IS NOT NULL AND first_scan_at IS NULL
          AND shipped_at < $__toTime - INTERVAL 24 HOUR)
    AS `shipped, no tracking after 24 h (healthy 0)`,
  round(100 * (SELECT count() FROM orderwatch.alerts FINAL WHERE alert = 'settlement_missing'
                 AND status = 'firing' AND $__timeFilter_ms(starts_at))
        / greatest(countIf(status = 'completed'), 1), 2)
    AS `completed without settlement, % (healthy 0)`,
  round((SELECT count() FROM orderwatch.events FINAL WHERE stream = 'order'
           AND JSONExtractString(payload, 'action') IN ('ship_request', 'ship')
           AND $__timeFilter_ms(occurred_at))
        / greatest(countIf(shipped_at IS NOT NULL), 1), 2)
    AS `ship requests per order (healthy < 2)`
FROM orderwatch.order_state FINAL
WHERE $__timeFilter_ms(last_event_at)"""
    return Board("orderwatch-overview", "OrderWatch · Overview",
                 "The weekly health check, live; alerts firing; event rates.", panels=[
        table_panel("Weekly health check (over the time range)", weekly,
                    "The four checks of the weekly robot, computed from ClickHouse.",
                    span=24, height=5),
        ts_panel("Alerts firing by name", prom("sum by (alert) (orderwatch_alerts_firing)",
                                               "{{alert}}")),
        ts_panel("Events per second by stream",
                 prom("sum by (stream) (rate(orderwatch_events_total[1m]))", "{{stream}}"),
                 unit="ops"),
        table_panel("Alert notifications by name", """
SELECT alert, status, count() AS notifications
FROM orderwatch.alerts FINAL WHERE $__timeFilter_ms(starts_at)
GROUP BY alert, status ORDER BY notifications DESC""", span=24),
    ])


def payments() -> Board:
    gw = 'gateway=~"$gateway"'
    return Board("orderwatch-payments", "OrderWatch · Payments and callbacks",
                 "Payment callback health per gateway and the orders it left pending.",
                 ("gateway", "channel"), [
        ts_panel("Notify success ratio by gateway",
                 prom(f"1 - orderwatch:callback_failure_ratio:rate5m{{{gw}}}", "{{gateway}}"),
                 unit="percentunit"),
        ts_panel("Failed notifications (non-2xx or bad signature) per second",
                 prom(f"sum by (gateway) (rate(orderwatch_callback_failures_total{{{gw}}}[5m]))"
                      f" or sum by (gateway) "
                      f"(rate(orderwatch_callback_notifications_total{{{gw}}}[5m])) * 0",
                      "{{gateway}}"), unit="ops"),
        table_panel("err_code mix", """
SELECT JSONExtractString(payload, 'gateway') AS gateway,
       if(JSONExtractString(payload, 'err_code') = '', '(none)',
          JSONExtractString(payload, 'err_code')) AS err_code,
       JSONExtractInt(payload, 'http_status') AS http_status, count() AS notifications
FROM orderwatch.events FINAL
WHERE stream = 'callback' AND JSONExtractString(payload, 'kind') = 'notify'
  AND $__timeFilter_ms(occurred_at) AND gateway IN (${gateway:singlequote})
GROUP BY gateway, err_code, http_status ORDER BY notifications DESC"""),
        table_panel("Paid but pending (callback_lost)", """
SELECT labels['order_no'] AS order_no, labels['gateway'] AS gateway, starts_at,
       max(ends_at) AS fixed_at, status
FROM orderwatch.alerts FINAL
WHERE alert = 'callback_lost' AND $__timeFilter_ms(starts_at)
  AND labels['gateway'] IN (${gateway:singlequote})
GROUP BY order_no, gateway, starts_at, status ORDER BY starts_at DESC LIMIT 200"""),
        ts_panel("Paid → order status latency (p50, p95)", Query("""
SELECT $__timeInterval_ms(paid_at) AS time,
       quantile(0.5)(dateDiff('second', paid_at, left_pending_at)) AS p50,
       quantile(0.95)(dateDiff('second', paid_at, left_pending_at)) AS p95
FROM orderwatch.order_state FINAL
WHERE paid_at IS NOT NULL AND left_pending_at IS NOT NULL AND $__timeFilter_ms(paid_at)
  AND gateway IN (${gateway:singlequote}) AND channel IN (${channel:singlequote})
GROUP BY time ORDER BY time""").time_series(), unit="s", datasource=CLICKHOUSE, span=24),
    ])


def logistics() -> Board:
    return Board("orderwatch-logistics", "OrderWatch · Logistics",
                 "Silent shipments and first-scan latency by carrier and warehouse.",
                 ("carrier", "warehouse"), [
        table_panel("Silent shipments by carrier and warehouse", """
SELECT labels['carrier'] AS carrier, labels['warehouse'] AS warehouse,
       count() AS silent_shipments, round(avg(value), 1) AS hours_silent_at_alert
FROM orderwatch.alerts FINAL
WHERE alert = 'silent_shipment' AND status = 'firing' AND $__timeFilter_ms(starts_at)
  AND carrier IN (${carrier:singlequote}) AND warehouse IN (${warehouse:singlequote})
GROUP BY carrier, warehouse ORDER BY silent_shipments DESC"""),
        table_panel("First-scan latency by carrier (hours)", """
SELECT carrier, count() AS shipments,
       round(quantile(0.5)(dateDiff('second', shipped_at, first_scan_at)) / 3600, 1) AS p50_h,
       round(quantile(0.95)(dateDiff('second', shipped_at, first_scan_at)) / 3600, 1) AS p95_h,
       round(quantile(0.99)(dateDiff('second', shipped_at, first_scan_at)) / 3600, 1) AS p99_h
FROM orderwatch.order_state FINAL
WHERE shipped_at IS NOT NULL AND first_scan_at IS NOT NULL AND $__timeFilter_ms(shipped_at)
  AND carrier IN (${carrier:singlequote}) AND warehouse IN (${warehouse:singlequote})
GROUP BY carrier ORDER BY p95_h DESC"""),
        ts_panel("Shipments and carrier scans per second",
                 prom('sum by (carrier) (rate(orderwatch_shipments_total{carrier=~"$carrier"}'
                      '[5m]))', "shipped {{carrier}}"),
                 prom('sum by (carrier) (rate(orderwatch_carrier_scans_total'
                      '{carrier=~"$carrier"}[5m]))', "scanned {{carrier}}", ref="B"),
                 unit="ops", span=24),
    ])


def locks() -> Board:
    family = 'lock_family=~".*"'
    return Board("orderwatch-locks", "OrderWatch · Locks and duplicates",
                 "Distributed-lock waits, TTL overruns, the hottest keys, duplicate "
                 "submissions.", ("warehouse",), [
        ts_panel("Lock wait p50 / p95 / p99 by family", *(
            prom(f"histogram_quantile({q}, sum by (le, lock_family) "
                 f"(rate(orderwatch_lock_wait_seconds_bucket{{{family}}}[5m])))",
                 f"p{round(q * 100)} {{{{lock_family}}}}", ref=ref)
            for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))), unit="s"),
        ts_panel("TTL overruns and failed acquisitions per second",
                 prom("sum by (lock_family) (rate(orderwatch_lock_ttl_overruns_total[5m])) or "
                      "sum by (lock_family) (rate(orderwatch_lock_acquisitions_total[5m])) * 0",
                      "overrun {{lock_family}}"),
                 prom("sum by (lock_family) (rate(orderwatch_lock_failures_total[5m])) or "
                      "sum by (lock_family) (rate(orderwatch_lock_acquisitions_total[5m])) * 0",
                      "failed {{lock_family}}", ref="B"), unit="ops"),
        table_panel("Hottest lock keys (wait p95)", """
SELECT JSONExtractString(payload, 'lock', 'key') AS lock_key,
       count() AS acquisitions,
       round(quantile(0.95)(JSONExtractFloat(payload, 'lock', 'wait_ms'))) AS wait_p95_ms,
       countIf(NOT JSONExtractBool(payload, 'lock', 'acquired')) AS failed
FROM orderwatch.events FINAL
WHERE stream = 'order' AND JSONHas(payload, 'lock') AND $__timeFilter_ms(occurred_at)
  AND JSONExtractString(payload, 'warehouse') IN (${warehouse:singlequote})
GROUP BY lock_key ORDER BY wait_p95_ms DESC LIMIT 20"""),
        ts_panel("Duplicate submissions", Query("""
SELECT $__timeInterval_ms(starts_at) AS time, alert, count() AS duplicates
FROM orderwatch.alerts FINAL
WHERE alert IN ('duplicate_order', 'duplicate_ship_request') AND status = 'firing'
  AND $__timeFilter_ms(starts_at)
GROUP BY time, alert ORDER BY time""").time_series(), datasource=CLICKHOUSE),
    ])


def risk() -> Board:
    return Board("orderwatch-risk", "OrderWatch · Order risk",
                 "Per-order risk scores and their reasons.", ("channel",), [
        ts_panel("Orders by highest risk (deciles)", Query("""
SELECT toString(floor(max_risk / 10) * 10) AS risk_from, count() AS orders
FROM orderwatch.order_risk FINAL
WHERE $__timeFilter_ms(updated_at) AND channel IN (${channel:singlequote})
GROUP BY risk_from ORDER BY toFloat64(risk_from)"""), datasource=CLICKHOUSE),
        table_panel("Riskiest orders, open ones first", """
SELECT r.order_no AS order_no, s.status AS status, r.channel AS channel,
       r.max_risk AS max_risk, r.risk AS risk, r.reasons AS reasons, r.updated_at AS updated
FROM orderwatch.order_risk AS r FINAL
INNER JOIN orderwatch.order_state AS s FINAL ON s.order_no = r.order_no
WHERE $__timeFilter_ms(r.updated_at) AND r.channel IN (${channel:singlequote})
ORDER BY s.status IN ('completed', 'cancelled', 'refunded'), r.max_risk DESC LIMIT 50""",
                    "Reasons in the configured language (ORDERWATCH_LANGUAGE)."),
        table_panel("Channels degraded", """
SELECT labels['channel'] AS channel, status, starts_at, ends_at, summary
FROM orderwatch.alerts FINAL
WHERE alert = 'channel_degraded' AND $__timeFilter_ms(starts_at)
  AND labels['channel'] IN (${channel:singlequote})
ORDER BY starts_at DESC""", span=24),
    ])


def pipeline() -> Board:
    return Board("orderwatch-pipeline", "OrderWatch · Pipeline",
                 "Throughput, event-time lag, alert latency, dead letters and ClickHouse "
                 "writes.", (), [
        stat_panel("Events per second",
                   prom("sum(rate(orderwatch_events_total[1m]))"), unit="ops"),
        stat_panel("Open orders in state", prom("sum(orderwatch_open_orders)")),
        stat_panel("Event-time lag (wall clock − watermark)",
                   prom("time() - min(orderwatch_event_time_watermark_seconds)"), unit="s"),
        stat_panel("Dead letters per second",
                   prom("sum(rate(orderwatch_dead_letters_total[5m])) or vector(0)"),
                   unit="ops"),
        table_panel("Dead letters by reason", """
SELECT reason, count() AS records, max(received_at) AS last_seen
FROM orderwatch.dead_letters FINAL WHERE $__timeFilter_ms(received_at)
GROUP BY reason ORDER BY records DESC"""),
        ts_panel("ClickHouse insert latency p95 by table",
                 prom("histogram_quantile(0.95, sum by (le, table) "
                      "(rate(orderwatch_clickhouse_write_seconds_bucket[5m])))", "{{table}}"),
                 unit="s"),
        ts_panel("Alert latency, input to notification (p50, p95)",
                 prom("histogram_quantile(0.95, sum by (le) "
                      "(rate(orderwatch_alert_latency_seconds_bucket[5m])))", "p95"),
                 prom("histogram_quantile(0.5, sum by (le) "
                      "(rate(orderwatch_alert_latency_seconds_bucket[5m])))", "p50"),
                 unit="s"),
        ts_panel("Late events per second by stream",
                 prom("sum by (stream) (rate(orderwatch_events_late_total[5m]))", "{{stream}}"),
                 unit="ops", description="Events that came after their minute of health_metrics "
                 "was written (later than the allowed lateness): stored and applied to their "
                 "orders, and counted as late_events in the minute they came in."),
        ts_panel("Recovery snapshots: time spent pickling state, by step",
                 prom("sum by (step) (rate(orderwatch_snapshot_seconds_sum[5m]))", "{{step}}"),
                 unit="percentunit", description="Share of a worker's time spent pickling "
                 "the shards' state for Bytewax recovery snapshots, summed over workers "
                 "(100%: one worker did nothing else). It grows with the open orders, not "
                 "with the traffic; above 50% (OrderWatchSnapshotsCostly) snapshot less "
                 "often (--snapshot-interval). Empty without a recovery directory."),
        ts_panel("Recovery snapshot size", prom("sum(orderwatch_snapshot_bytes)", "all shards"),
                 unit="bytes", description="The latest snapshot of every shard, summed: "
                 "what a resume loads."),
        ts_panel("Rows written per second by table",
                 prom("sum by (table) (rate(orderwatch_clickhouse_rows_written_total[1m]))",
                      "{{table}}"), unit="rowsps", span=24),
    ])


BOARDS = (overview, payments, logistics, locks, risk, pipeline)


def render() -> dict[str, str]:
    """file name → JSON text of every dashboard."""
    out = {}
    for make in BOARDS:
        board = make()
        model = board.build().build()
        text = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        out[f"{board.uid}.json"] = text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="fail if the committed JSON differs from the code")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [name for name, text in rendered.items()
                 if not (OUT / name).is_file() or (OUT / name).read_text() != text]
        if stale:
            print(f"stale dashboards: {', '.join(stale)}; run python -m "
                  "orderwatch.dashboards.build", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(rendered)} dashboards to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
