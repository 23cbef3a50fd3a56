"""The weekly health-check robot over a simulated fortnight.

The engine simulates two weeks of orders with every fault (the fault windows in the second
week); the events are cut at the second week's Monday 10:00, when the report runs. The
report's four checks, for the week and the week before, are compared with figures this
test computes itself from the raw events, and cross-checked with the engine's labels.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import time
from collections import defaultdict
from datetime import datetime

import orjson
import pytest
from fake_robot import FakeRobots
from PIL import Image

from orderwatch.alerts.weekly_checks import Week
from orderwatch.engine.faults import parse_fault_list
from orderwatch.engine.simulator import SimConfig, simulate
from orderwatch.engine.state_machine import FINISHED, PENDING_PAYMENT, STATUS_ZH
from orderwatch.timestamps import from_rfc3339, zone

from conftest import orderwatch

TZ = "Asia/Shanghai"
HOUR = 3600.0
WEEK = Week.parse("2026-W08", TZ)
REPORT_AT = WEEK.end + 10 * HOUR  # Monday 10:00 after the week


@pytest.fixture(scope="module")
def fortnight(tmp_path_factory):
    """Events of 2026-W07 and W08 (as the report sees them on Monday 10:00) and labels."""
    out = tmp_path_factory.mktemp("weekly")
    config = SimConfig(seed=11, orders=12_000, orders_per_minute=0.6,
                       start=WEEK.previous().start,
                       faults=parse_fault_list("all") - {"malformed_events"},
                       first_window_at=8 * 24 * HOUR)  # the windows fall in W08
    events: list[dict] = []
    labels = simulate(config, events.append)
    events = [e for e in events if from_rfc3339(e["occurred_at"]) <= REPORT_AT]
    path = out / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    dsn = f"chdb://{out / 'ch'}"
    orderwatch("replay", str(path), "--clickhouse", dsn, "--alerts-out", str(out / "a.jsonl"))
    return dsn, events, labels


def expected_checks(events: list[dict], week: Week, as_of: float) -> dict[str, tuple]:
    """The four checks from the definitions in shared/domain.md, straight from the events."""
    seen: set[str] = set()
    orders: dict[str, list[tuple[float, dict]]] = defaultdict(list)
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            orders[e["order_no"]].append((from_rfc3339(e["occurred_at"]), e))
    start, end = week.start, week.end
    pending = [0, 0]
    silent = [0, 0, set()]
    settle = [0, 0, set()]
    ship = [0, 0, 0, set()]
    for order_no, timeline in orders.items():
        timeline.sort(key=lambda x: x[0])
        ops = [(t, e) for t, e in timeline if e["stream"] == "order"]
        created = next((t for t, e in ops if e["action"] == "create"), None)
        if created is not None and start <= created < end and created <= as_of - 2 * HOUR:
            left = next((t for t, e in ops if t >= created and e["status"] != PENDING_PAYMENT),
                        None)
            pending[0] += 1
            pending[1] += left is None or left > created + 2 * HOUR
        shipped = next((t for t, e in ops if e["action"] == "ship" and e["result"] == "ok"),
                       None)
        if shipped is not None and start <= shipped < end and shipped <= as_of - 24 * HOUR:
            scan = next((t for t, e in timeline if e["stream"] == "logistics"), None)
            silent[0] += 1
            if scan is None or scan > shipped + 24 * HOUR:
                silent[1] += 1
                silent[2].add(order_no)
        completed = next((t for t, e in ops if e["status"] == "completed"), None)
        if completed is not None and start <= completed < end:
            settle[0] += 1
            if not any(e["action"] == "settle" and e["result"] == "ok" for _, e in ops):
                settle[1] += 1
                settle[2].add(order_no)
        requests = [(t, e["request_id"]) for t, e in ops if e["action"] == "ship_request"]
        if requests and start <= requests[0][0] < end:
            n = len({rid for _, rid in requests})
            ship[0] += 1
            ship[1] = max(ship[1], n)
            if n >= 2:
                ship[2] += 1
                ship[3].add(order_no)
    return {"pending_payment_over_2h": (pending[1] / pending[0], pending[1], pending[0]),
            "no_tracking_after_24h": (float(silent[1]), silent[1], silent[0], silent[2]),
            "settlement_failed": (settle[1] / settle[0] if settle[0] else 0.0, settle[1],
                                  settle[0], settle[2]),
            "ship_requests_per_order": (float(ship[1]), ship[2], ship[0], ship[3])}


def labelled(labels: list[dict], fault: str, week: Week, until: float) -> set[str]:
    return {x["order_no"] for x in labels if x["fault"] == fault
            and week.start <= from_rfc3339(x["start"]) < min(week.end, until)}


def test_week_boundaries_follow_iso_weeks_in_the_display_zone():
    assert datetime.fromtimestamp(WEEK.start, zone(TZ)).isoformat() == \
        "2026-02-16T00:00:00+08:00"
    assert WEEK.end - WEEK.start == 7 * 24 * HOUR
    assert str(WEEK.previous()) == "2026-W07" and str(Week.parse("2026-w01", TZ)) == "2026-W01"
    assert str(Week.parse("2020-W53", TZ).following()) == "2021-W01"  # 2020 has 53 weeks
    for text, said in (("2026-W54", "2026 has weeks W01 to W53"),
                       ("2025-W53", "2025 has weeks W01 to W52"),  # was "must look like"
                       ("2026W08", "must look like 2026-W08"),
                       ("9999-W52", "1971 to 2098"),  # its next week overflowed: exit 1
                       ("0001-W01", "1971 to 2098")):  # its week before overflowed
        with pytest.raises(ValueError, match=said):
            Week.parse(text, TZ)


def test_the_weekly_report_shows_the_four_checks_with_the_right_figures(fortnight, tmp_path):
    dsn, events, labels = fortnight
    wecom_key, ding_token, secret = "wk-weekly", "dt-weekly", "SECweekly"
    fake = FakeRobots(time.time, wecom_keys={wecom_key},
                      dingtalk={ding_token: {"secret": secret, "keyword": "OrderWatch"}})
    base = fake.start()
    robots = tmp_path / "robots.yml"
    robots.write_text("robots:\n"
                      "  ops: {kind: wecom, url_env: T_WECOM}\n"
                      "  pay: {kind: dingtalk, url_env: T_DING, secret_env: T_SECRET,"
                      " keyword: OrderWatch}\n")
    env = {**os.environ, "T_WECOM": f"{base}/cgi-bin/webhook/send?key={wecom_key}",
           "T_DING": f"{base}/robot/send?access_token={ding_token}", "T_SECRET": secret,
           "ORDERWATCH_STATE_DIR": str(tmp_path / "state")}
    try:
        result = orderwatch("-v", "report", "weekly", "--week", "2026-W08", "--clickhouse",
                            dsn, "--html", str(tmp_path / "r.html"), "--png", str(tmp_path / "c.png"),
                            "--json", str(tmp_path / "r.json"), "--send", "--robots",
                            str(robots), env=env)
    finally:
        fake.stop()
    assert result.returncode == 0, result.stderr
    # -v logs each request (httpx), with the robots' keys and signatures starred
    assert "send?key=*** " in result.stderr and "access_token=***&" in result.stderr
    assert wecom_key not in result.stderr and ding_token not in result.stderr
    report = orjson.loads((tmp_path / "r.json").read_bytes())

    as_of = max(from_rfc3339(e["occurred_at"]) for e in events)
    assert report["as_of"] == pytest.approx(as_of, abs=0.001)
    for key, week in (("checks", WEEK), ("previous", WEEK.previous())):
        want = expected_checks(events, week, as_of)
        got = {c["name"]: c for c in report[key]}
        for name, (value, count, judged, *_) in want.items():
            assert (got[name]["value"], got[name]["count"], got[name]["judged"]) == \
                (pytest.approx(value), count, judged), (week, name)
        # the engine's ground truth names the same orders
        assert want["settlement_failed"][3] == labelled(labels, "settlement_missing", week,
                                                         as_of)
        assert want["ship_requests_per_order"][3] == labelled(
            labels, "duplicate_ship_request", week, as_of)
        silent = {x["order_no"] for x in labels if x["fault"] == "silent_shipment"
                  and week.start <= from_rfc3339(x["start"]) < week.end
                  and from_rfc3339(x["start"]) <= as_of - 24 * HOUR
                  and from_rfc3339(x["end"]) - from_rfc3339(x["start"]) > 24 * HOUR}
        assert want["no_tracking_after_24h"][3] == silent
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["no_tracking_after_24h"]["count"] > 0  # faults were injected: not all green
    assert checks["ship_requests_per_order"]["value"] == 2 and not \
        checks["ship_requests_per_order"]["healthy"]
    assert checks["pending_payment_over_2h"]["value"] > \
        {c["name"]: c for c in report["previous"]}["pending_payment_over_2h"]["value"]

    # the gateways hit by the WAF block and the expired certificate lead the worst list;
    # each list ranks by alerts on the dimension itself, then by the share of alerted orders
    worst = report["worst"]
    assert {r["value"] for r in worst["gateway"][:2]} == {"alipay", "wechatpay"}
    assert worst["gateway"][0] == {**worst["gateway"][0], "value": "wechatpay"} and \
        worst["gateway"][0]["aggregate_alerts"] >= 1  # callback_cert_expired
    for rows in worst.values():
        keys = [(-r["aggregate_alerts"], -r["problem_orders"] / r["orders"]) for r in rows]
        assert len(rows) == 3 and keys == sorted(keys)
    # riskiest open orders: open at report time, riskiest first, with reasons
    last_status = {}
    for e in sorted(events, key=lambda e: from_rfc3339(e["occurred_at"])):
        if e["stream"] == "order":
            last_status[e["order_no"]] = e["status"]
    risky = report["riskiest"]
    assert risky and [r["risk"] for r in risky] == sorted((r["risk"] for r in risky),
                                                          reverse=True)
    for r in risky:
        assert last_status[r["order_no"]] not in FINISHED and r["risk"] >= 40 and r["reasons"]
    shown = STATUS_ZH[risky[0]["status"]]  # 待发货, not awaiting_shipment

    # the chart is a real PNG; the HTML stands alone with it inside
    png = (tmp_path / "c.png").read_bytes()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size[0] > 500
    page = (tmp_path / "r.html").read_text()
    assert base64.b64encode(png).decode() in page and "src=\"http" not in page
    assert f"<td>{shown}</td>" in page
    assert all(x in page for x in ("待支付超 2 小时占比", "发货后 24 小时无物流轨迹",
                                   "已完成订单分账失败率", "同一订单发货请求次数"))

    # the robots: WeCom markdown + the chart as an image, DingTalk signed markdown
    by_robot = defaultdict(list)
    for r in fake.received:
        by_robot[r.robot].append(r)
    (md, image), (ding,) = by_robot[wecom_key], by_robot[ding_token]
    assert md.payload["msgtype"] == "markdown" and "2026-W08" in md.text
    assert f"{checks['no_tracking_after_24h']['count']:,} 单" in md.text
    assert f"({shown}):" in md.text
    data = base64.b64decode(image.payload["image"]["base64"])
    assert data == png and image.payload["image"]["md5"] == hashlib.md5(png).hexdigest()
    assert ding.payload["msgtype"] == "markdown" and "OrderWatch" in ding.payload[
        "markdown"]["title"] and "健康自检" in ding.text
    assert set(fake.answers) == {0}  # signatures, keyword and sizes all accepted
    # DingTalk takes no image: its message carries each check's 14 days as text bars
    assert "逐日趋势" in ding.text and "逐日趋势" not in md.text
    for name, label in (("no_tracking_after_24h", "发货后 24 小时无物流轨迹"),
                        ("ship_requests_per_order", "同一订单发货请求次数")):
        days = [d["values"][name] for d in report["daily"]]
        assert len(days) == 14 and max(days) > 0
        bars = re.search(rf"{label}: `(\S{{7}}) \| (\S{{7}})`", ding.text)
        assert bars, ding.text
        drawn = bars[1] + bars[2]
        assert [d == max(days) for d in days] == [b == "█" for b in drawn]
        assert [d == 0 for d in days] == [b == "▁" for b in drawn]
    sent = orjson.loads((tmp_path / "state" / "weekly-sent.json").read_bytes())
    assert sorted(sent["2026-W08"]) == ["ops", "pay"]


def test_a_week_without_orders_is_not_called_healthy(fortnight, tmp_path):
    """A week outside the data used to read four OKs (0.00% of 0/0): the weekly robot
    said all was well about orders it never saw."""
    dsn = fortnight[0]
    result = orderwatch("report", "weekly", "--week", "1999-W01", "--clickhouse", dsn,
                        "--language", "en", "--html", str(tmp_path / "r.html"),
                        "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert [(c["judged"], c["healthy"]) for c in report["checks"]] == [(0, None)] * 4
    checks = [line for line in result.stdout.splitlines() if "healthy" in line]
    assert len(checks) == 4 and all(line.startswith("N/A ") for line in checks), checks
    assert all("no orders to judge — week before no orders to judge" in line
               for line in checks)
    assert "<tr class=unjudged>" in (tmp_path / "r.html").read_text()


def test_the_weekly_robot_posts_on_schedule_once_per_week(chdb_dsn, tmp_path):
    from orderwatch.alerts.robot_config import load_robots
    from orderwatch.alerts.weekly_robot import WeeklyRobot, next_run
    from orderwatch.config import Settings
    from orderwatch.pipelines.clickhouse_client import connect, parse_dsn
    from orderwatch.pipelines.clickhouse_schema import migrate
    from orderwatch.pipelines.reader import reader

    settings = Settings(clickhouse_dsn=chdb_dsn, clickhouse_database="weekly_schedule",
                        state_dir=str(tmp_path / "state"))
    migrate(connect(parse_dsn(chdb_dsn)), "weekly_schedule")
    fake = FakeRobots(time.time, wecom_keys={"wk"})
    base = fake.start()
    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\nweekly: {at: 'TUE 09:30'}\n")
    config = load_robots(path, {"U": f"{base}/cgi-bin/webhook/send?key=wk"})
    due = next_run(time.time(), config.weekly, TZ)
    assert datetime.fromtimestamp(due, zone(TZ)).strftime("%a %H:%M") == "Tue 09:30"
    offset = due - time.time() - 1.0  # a clock one second before the scheduled time
    robot = WeeklyRobot(reader(settings), settings, config, clock=lambda: time.time() + offset)
    try:
        robot.start()
        deadline = time.time() + 30
        while len(fake.received) < 2 and time.time() < deadline:
            time.sleep(0.1)
        robot.stop()
        week = Week.containing(due, TZ).previous()
        assert [r.payload["msgtype"] for r in fake.received] == ["markdown", "image"]
        assert str(week) in fake.received[0].text
        assert (tmp_path / "state" / "reports" / f"weekly-{week}.html").exists()
        assert robot.deliver(week) == {}  # a restart that same Monday posts nothing twice
        assert len(fake.received) == 2
    finally:
        robot.stop()
        fake.stop()


def test_a_report_that_fell_due_while_stopped_goes_out_at_the_next_start(chdb_dsn, tmp_path):
    """A restart at 10:05 on a Monday (a deploy) used to skip that week's report: the
    schedule only looked forward. The ledger now holds when the next report was due."""
    from orderwatch.alerts.robot_config import load_robots
    from orderwatch.alerts.weekly_robot import Ledger, WeeklyRobot
    from orderwatch.config import Settings
    from orderwatch.pipelines.clickhouse_client import connect, parse_dsn
    from orderwatch.pipelines.clickhouse_schema import migrate
    from orderwatch.pipelines.reader import reader

    migrate(connect(parse_dsn(chdb_dsn)), "weekly_missed")
    fake = FakeRobots(time.time, wecom_keys={"wk"})
    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\n")
    config = load_robots(path, {"U": f"{fake.start()}/cgi-bin/webhook/send?key=wk"})

    def start_and_stop(state: str, at: str) -> Ledger:
        """A weekly robot started at local time `at` and stopped once it waits."""
        settings = Settings(clickhouse_dsn=chdb_dsn, clickhouse_database="weekly_missed",
                            state_dir=str(tmp_path / state))
        offset = from_rfc3339(at) - time.time()
        robot = WeeklyRobot(reader(settings), settings, config,
                            clock=lambda: time.time() + offset)
        ledger = robot.ledger
        robot.start()
        deadline = time.time() + 30
        while (ledger.next_due() or 0) <= robot.clock() and time.time() < deadline:
            time.sleep(0.05)
        robot.stop()
        robot.join(5)
        return ledger

    try:
        before = start_and_stop("state", "2026-03-01T22:00:00+08:00")  # Sunday night
        assert before.next_due() == from_rfc3339("2026-03-02T10:00:00+08:00")
        assert fake.received == []
        after = start_and_stop("state", "2026-03-02T10:05:00+08:00")  # down over 10:00
        assert [r.payload["msgtype"] for r in fake.received] == ["markdown", "image"]
        assert "2026-W09" in fake.received[0].text
        assert after.next_due() == from_rfc3339("2026-03-09T10:00:00+08:00")
        start_and_stop("state", "2026-03-02T10:30:00+08:00")  # a second restart
        start_and_stop("fresh", "2026-03-02T10:30:00+08:00")  # a first start ever
        assert len(fake.received) == 2
    finally:
        fake.stop()


def test_a_failing_robot_is_retried_and_every_retry_is_said(chdb_dsn, tmp_path, caplog):
    """The retries take minutes in all; `report weekly --send` used to stay silent
    through them."""
    from orderwatch.alerts.robot_config import load_robots
    from orderwatch.alerts.robots import Robot
    from orderwatch.alerts.weekly_robot import build, post
    from orderwatch.config import Settings
    from orderwatch.pipelines.clickhouse_client import connect, parse_dsn
    from orderwatch.pipelines.clickhouse_schema import migrate
    from orderwatch.pipelines.reader import reader

    settings = Settings(clickhouse_dsn=chdb_dsn, clickhouse_database="weekly_retry")
    migrate(connect(parse_dsn(chdb_dsn)), "weekly_retry")
    now = [0.0]
    fake = FakeRobots(lambda: now[0], wecom_keys={"wk"}, fail_until=10.0)
    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\n")
    try:
        config = load_robots(path, {"U": f"{fake.start()}/cgi-bin/webhook/send?key=wk"})
        built = build(reader(settings), settings, WEEK)
        with caplog.at_level("WARNING", logger="orderwatch.alerts.weekly_robot"):
            results = post(built, [Robot(config.robots["ops"], TZ)],
                           sleep=lambda s: now.__setitem__(0, now[0] + s))
    finally:
        fake.stop()
    assert results["ops"].ok and fake.answers == [500, 500, 500, 0, 0]  # text, then image
    assert [r.getMessage() for r in caplog.records] == [
        f"weekly report to robot ops: HTTP 500; retrying in {s} s" for s in (2, 5, 15)]


def test_weekly_send_with_its_robots_switched_off_says_which_variable_before_the_work(
        tmp_path):
    robots = tmp_path / "robots.yml"
    robots.write_text("robots:\n  ops: {kind: wecom, url_env: OW_TEST_OPS_URL}\n")
    result = orderwatch("report", "weekly", "--send", "--robots", str(robots), "--html",
                        str(tmp_path / "w.html"), "--data", str(tmp_path / "none"))
    assert result.returncode == 2, result.stderr
    assert "no robot to send to: ops ($OW_TEST_OPS_URL is empty)" in result.stderr


def test_next_run_is_the_next_monday_ten_in_shanghai():
    from orderwatch.alerts.robot_config import WeeklySchedule
    from orderwatch.alerts.weekly_robot import next_run

    monday = WeeklySchedule()
    sunday_night = datetime(2026, 2, 22, 23, 0, tzinfo=zone(TZ)).timestamp()
    at_ten = datetime(2026, 2, 23, 10, 0, tzinfo=zone(TZ)).timestamp()
    assert next_run(sunday_night, monday, TZ) == at_ten
    assert next_run(at_ten - 1, monday, TZ) == at_ten
    assert next_run(at_ten, monday, TZ) == at_ten + 7 * 24 * HOUR
    assert next_run(at_ten, monday, "UTC") == at_ten + 8 * HOUR  # Monday 10:00 UTC
