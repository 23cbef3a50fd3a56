"""Every panel query and rule expression runs against the real backends and returns data.

ClickHouse panels run on the embedded engine, filled by a replay of simulated traffic.
PromQL panels and rules run on a real Prometheus (Debian's package). It scrapes a
running `orderwatch run` and loads the rules.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time

import httpx
import pytest
import yaml

from orderwatch.alerts.outputs import JsonlNotifier
from orderwatch.config import Settings
from orderwatch.dashboards import build
from orderwatch.dashboards.queries import PanelQuery, expand_promql, expand_sql, panel_queries
from orderwatch.engine.simulator import CARRIERS, CHANNELS, WAREHOUSES
from orderwatch.pipelines.clickhouse_client import connect, parse_dsn
from orderwatch.pipelines.runner import execute
from orderwatch.pipelines.sources import JsonlSource

from conftest import REPO, free_port, orderwatch, orderwatch_exe

RULES = REPO / "dashboards" / "prometheus" / "rules.yml"
VARIABLES = {
    "gateway": ["alipay", "unionpay", "wechatpay"],
    "carrier": sorted(CARRIERS),
    "channel": sorted(CHANNELS),
    "warehouse": sorted(WAREHOUSES),
}
QUERIES = list(panel_queries())
SQL = [q for q in QUERIES if q.datasource == "grafana-clickhouse-datasource"]
PROMQL = [q for q in QUERIES if q.datasource == "prometheus"]


def test_committed_dashboards_are_what_the_code_renders():
    rendered = build.render()
    committed = {p.name: p.read_text() for p in build.OUT.glob("*.json")}
    assert committed == rendered, "run: python -m orderwatch.dashboards.build"
    assert len(rendered) == 6


def test_every_panel_has_a_query_on_a_provisioned_datasource():
    provisioned = yaml.safe_load(
        (REPO / "dashboards/provisioning/datasources/orderwatch.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    for path in build.OUT.glob("*.json"):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            assert panel.get("targets"), (path.name, panel["title"])
            assert panel["datasource"]["uid"] in uids
    assert len(SQL) >= 12 and len(PROMQL) >= 12


# --- ClickHouse ---------------------------------------------------------------------------

def test_a_variable_value_with_a_quote_is_escaped_as_grafana_escapes_it(chdb_dsn):
    """Grafana's `singlequote` format puts a backslash before each ' of a value (its
    format registry); ClickHouse reads that back as the value."""
    sql = expand_sql("SELECT arrayJoin([${channel:singlequote}])", 0, 1,
                     {"channel": ["o'brien's shop", "app"]})
    assert sql == "SELECT arrayJoin(['o\\'brien\\'s shop','app'])"
    rows = connect(parse_dsn(chdb_dsn)).query(sql).result_rows
    assert rows == [("o'brien's shop",), ("app",)]


@pytest.fixture(scope="module")
def filled(chdb_dsn, tmp_path_factory):
    """A replay of 6,000 simulated orders with every fault, in the embedded ClickHouse."""
    d = tmp_path_factory.mktemp("dash")
    sim = orderwatch("simulate", "--out", str(d / "events.jsonl"), "--orders", "6000",
                     "--faults", "all", "--seed", "31")
    assert sim.returncode == 0, sim.stderr
    settings = Settings(clickhouse_dsn=chdb_dsn)
    execute(JsonlSource([str(d / "events.jsonl")]), settings,
            [JsonlNotifier(str(d / "alerts.jsonl"))])
    client = connect(parse_dsn(chdb_dsn))
    start, end = client.query(
        "SELECT toUnixTimestamp64Milli(min(occurred_at)), toUnixTimestamp64Milli("
        "max(occurred_at)) FROM orderwatch.events").result_rows[0]
    # replayed events carry February's event time; dead letters are stamped when received
    return client, start / 1000, max(end / 1000, time.time())


def run_sql(client, query: PanelQuery, start: float, end: float) -> list:
    return client.query(expand_sql(query.text, start, end, VARIABLES)).result_rows


@pytest.mark.parametrize("query", SQL, ids=lambda q: q.id)
def test_clickhouse_panel_returns_rows(filled, query):
    client, start, end = filled
    rows = run_sql(client, query, start, end)
    assert rows, f"no rows: {expand_sql(query.text, start, end, VARIABLES)}"


def test_a_broken_clickhouse_panel_fails(filled):
    client, start, end = filled
    typo = PanelQuery("x", "typo", "grafana-clickhouse-datasource",
                      "SELECT count() FROM orderwatch.alert WHERE $__timeFilter_ms(starts_at)")
    with pytest.raises(Exception, match="alert"):
        run_sql(client, typo, start, end)
    empty = PanelQuery("x", "empty", "grafana-clickhouse-datasource",
                       "SELECT * FROM orderwatch.alerts WHERE $__timeFilter_ms(starts_at) "
                       "AND labels['gateway'] IN (${gateway:singlequote}) AND alert = 'nope'")
    assert run_sql(client, empty, start, end) == []


# --- Prometheus ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """Prometheus scraping a live `orderwatch run` (snapshotting its state every second, so
    that the recovery panels have data) every second, with the rules loaded."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: install Debian's prometheus package (see .ci/run)"
    d = tmp_path_factory.mktemp("prom")
    ow_port, prom_port = free_port(), free_port()
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"  # the same rules, evaluated fast enough for a test
    (d / "rules.yml").write_text(yaml.safe_dump(rules))
    (d / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(d / "rules.yml")],
        "scrape_configs": [{"job_name": "orderwatch",
                            "static_configs": [{"targets": [f"127.0.0.1:{ow_port}"]}]}]}))
    exe = orderwatch_exe()
    log = (d / "orderwatch.log").open("w")
    ow = subprocess.Popen([exe, "run", "--rate", "5000", "--data", str(d / "data"),
                           "--seed", "9", "-r", str(d / "recovery"), "-s", "1"], stdout=log, stderr=subprocess.STDOUT,
                          env={"ORDERWATCH_METRICS_PORT": str(ow_port), "PATH": "/usr/bin:/bin"})
    prom = subprocess.Popen([binary, f"--config.file={d / 'prometheus.yml'}",
                             f"--storage.tsdb.path={d / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{prom_port}/api/v1/query"
    try:
        yield api, wait_for_data(api)
    finally:
        prom.terminate()
        ow.terminate()
        prom.wait(30)
        ow.wait(60)
        log.close()


def query(api: str, expr: str) -> list:
    body = httpx.get(api, params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for_data(api: str, timeout: float = 180) -> float:
    """Until every series the panels and rules read has samples; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    # rate() needs two samples of a series: wait for the rates the panels draw, not just
    # for the counters to exist (a carrier's first scan may land in the latest scrape)
    needed = ["orderwatch:callback_failure_ratio:rate5m", "orderwatch:lock_wait_seconds:p95_5m",
              "rate(orderwatch_carrier_scans_total[5m])", "rate(orderwatch_shipments_total[5m])",
              "rate(orderwatch_clickhouse_write_seconds_bucket[5m])",
              "orderwatch_dead_letters_total", "rate(orderwatch_lock_acquisitions_total[5m])",
              "rate(orderwatch_snapshot_seconds_sum[5m])"]
    started = time.monotonic()
    missing = needed
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError, ValueError, AssertionError):
            missing = [expr for expr in needed if not query(api, expr)]  # may be starting
        if not missing:
            return time.monotonic() - started
        time.sleep(2)
    raise AssertionError(f"no data after {timeout:.0f} s for: {missing}")


@pytest.mark.parametrize("panel", PROMQL, ids=lambda q: q.id)
def test_prometheus_panel_returns_data(prometheus, panel):
    api, _ = prometheus
    expr = expand_promql(panel.text, VARIABLES)
    assert query(api, expr), f"no data: {expr}"


def rule_expressions() -> list[tuple[str, str]]:
    """Recording rules as written; alerting rules by each side of their conditions (the
    thresholds themselves are proven by `promtool test rules`)."""
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                out += [(rule["record"], rule["expr"]), (rule["record"] + " (series)",
                                                         rule["record"])]
                continue
            for i, part in enumerate(_conditions(rule["expr"])):
                out.append((f"{rule['alert']} [{i}]", part))
    return out


def _conditions(expr: str) -> list[str]:
    import re

    parts = re.split(r"\)?\s+\b(?:and|or|unless)\b\s+\(?", expr.strip().strip("()"))
    return [re.split(r"\s*(?:>=|<=|==|!=|>|<)\s*[\d.]+\)*\s*$", p.strip())[0] for p in parts]


@pytest.mark.parametrize(("name", "expr"), rule_expressions(), ids=lambda v: str(v)[:60])
def test_prometheus_rule_expression_returns_data(prometheus, name, expr):
    api, _ = prometheus
    assert query(api, expr), f"{name}: no data for {expr}"


def test_a_broken_promql_panel_fails(prometheus):
    api, _ = prometheus
    assert query(api, "sum(rate(orderwatch_event_total[1m]))") == []  # a typo: no data
    with pytest.raises(AssertionError):
        query(api, "sum(rate(orderwatch_events_total[1m])")  # a syntax error


# --- promtool -----------------------------------------------------------------------------

def test_promtool_checks_and_tests_the_rules():
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: install Debian's prometheus package"
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", "rules.test.yml"], capture_output=True,
                           text=True, cwd=RULES.parent)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_every_alerting_rule_has_a_chinese_summary_for_the_robots():
    """The relay's robot messages are Chinese by default: a rule without `summary_zh`
    would put its English summary in a Chinese frame."""
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"] if "alert" in rule]
    assert rules
    for rule in rules:
        zh = rule["annotations"].get("summary_zh", "")
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh), rule["alert"]
