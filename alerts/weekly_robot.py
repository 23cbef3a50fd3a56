"""The weekly health-check robot: build the report, write its HTML, post it, on a schedule.

Posting: the markdown to every chosen robot, and the trend chart as a WeCom image. DingTalk
robots cannot take an uploaded image, so their markdown carries the days as text bars
(`weekly_text.trend_lines`) and points at the HTML report for the chart. Throttled
or failing robots are retried with backoff for a few minutes. A ledger in the state
directory records which robots got which week, so a restart on Monday does not post twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import orjson

from orderwatch.alerts.robot_config import RobotsConfig, WeeklySchedule
from orderwatch.alerts.robots import Outcome, Robot, post_payload
from orderwatch.alerts.weekly_chart import trend_png
from orderwatch.alerts.weekly_checks import (
    Query,
    Week,
    WeeklyReport,
    latest_event_time,
    weekly_report,
)
from orderwatch.alerts.weekly_text import html_page, markdown_lines, title
from orderwatch.config import Settings
from orderwatch.timestamps import zone

log = logging.getLogger(__name__)
RETRY_DELAYS_S = (2.0, 5.0, 15.0, 30.0, 60.0, 60.0, 60.0)


@dataclass
class BuiltReport:
    report: WeeklyReport
    png: bytes
    html: str
    headline: str
    lines: list[str]


def build(query: Query, settings: Settings, week: Week | None = None,
          language: str | None = None) -> BuiltReport:
    """The report for `week`; by default the last complete week before the latest data."""
    tz = settings.display_timezone
    language = language or settings.language
    if week is None:
        latest = latest_event_time(query, settings.clickhouse_database) or time.time()
        week = Week.containing(latest, tz).previous()
    report = weekly_report(query, settings.clickhouse_database, week, settings.thresholds)
    png = trend_png(report)
    return BuiltReport(report, png, html_page(report, png, language, tz),
                       title(report, language), markdown_lines(report, language, tz))


def post(built: BuiltReport, robots: list[Robot], client: httpx.Client | None = None,
         sleep: Callable[[float], None] = time.sleep) -> dict[str, Outcome]:
    """Post the report to each robot; its outcome (ok, or the last failure)."""
    client = client or httpx.Client(timeout=10.0)
    results: dict[str, Outcome] = {}
    for robot in robots:
        robot_lines = markdown_lines(built.report, robot.config.language, robot.tz,
                                     inline_trend=not robot.takes_images)
        payloads = [robot.report_payload(title(built.report, robot.config.language),
                                         robot_lines)]
        if robot.takes_images:
            payloads.append(robot.image_payload(built.png))
        for payload in payloads:
            outcome = _post_with_retries(client, robot, payload, sleep)
            results[robot.name] = outcome
            if not outcome.ok:
                log.error("weekly report to robot %s failed: %s", robot.name, outcome.detail)
                break
    return results


def send(built: BuiltReport, config: RobotsConfig, tz: str, ledger: Ledger,
         again: bool = False) -> dict[str, Outcome]:
    """Post to the robots `weekly:` names (default all) that have not had this week's
    report yet (`again`: to all of them), and record who got it."""
    week = built.report.week
    done = set() if again else set(ledger.sent().get(str(week), []))
    results = post(built, [Robot(config.robots[n], tz) for n in config.weekly_robots()
                           if n not in done])
    for name, outcome in results.items():
        if outcome.ok:
            ledger.record(week, name)
    return results


def _post_with_retries(client: httpx.Client, robot: Robot, payload: dict,
                       sleep: Callable[[float], None]) -> Outcome:
    for delay in (*RETRY_DELAYS_S, None):
        outcome = post_payload(client, robot.url(), payload)
        if outcome.ok or not outcome.retry or delay is None:
            return outcome
        log.warning("weekly report to robot %s: %s; retrying in %.0f s", robot.name,
                    outcome.detail, delay)  # minutes in all: say so as it goes
        sleep(delay)
    raise AssertionError("unreachable")


def next_run(now: float, schedule: WeeklySchedule, tz: str) -> float:
    """The first scheduled moment strictly after `now`."""
    local = datetime.fromtimestamp(now, zone(tz))
    at = local.replace(hour=schedule.hour, minute=schedule.minute, second=0, microsecond=0)
    at += timedelta(days=(schedule.weekday - local.weekday()) % 7)
    if at.timestamp() <= now:
        at += timedelta(days=7)
    return at.timestamp()


class Ledger:
    """Which robots already got which week's report (a JSON file in the state directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def sent(self) -> dict[str, list[str]]:
        try:
            return orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}

    def record(self, week: Week, robot: str) -> None:
        sent = self.sent()
        sent.setdefault(str(week), [])
        if robot not in sent[str(week)]:
            sent[str(week)].append(robot)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(sent))
        tmp.replace(self.path)


class WeeklyRobot(threading.Thread):
    """Runs beside `orderwatch run` and `orderwatch relay`: at the scheduled time, the
    report of the week that just ended goes to the robots (or the console) and to
    `<state>/reports/weekly-<week>.html`."""

    def __init__(self, query: Query, settings: Settings, robots: RobotsConfig | None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(daemon=True, name="orderwatch-weekly")
        self.query = query
        self.settings = settings
        self.config = robots
        self.clock = clock
        self.schedule = robots.weekly if robots is not None else WeeklySchedule()
        self.ledger = Ledger(Path(settings.state_dir) / "weekly-sent.json")
        self.stopped = threading.Event()
        self.woken = threading.Event()  # by stop() or by a new robots file

    def run(self) -> None:
        while not self.stopped.is_set():
            schedule, tz = self.schedule, self.settings.display_timezone
            due = next_run(self.clock(), schedule, tz) if schedule.enabled else None
            self.woken.wait(None if due is None else max(0.0, due - self.clock()))
            if self.stopped.is_set():
                return
            self.woken.clear()
            if due is None or self.clock() < due:  # woken early: count again from now
                continue
            try:
                self.deliver(Week.containing(due, tz).previous())
            except Exception:  # a broken report must not stop the process or next week's
                log.exception("weekly report failed")

    def reconfigure(self, robots: RobotsConfig) -> None:
        """A reloaded robots file (the relay's `POST /-/reload`): its robots and its
        schedule from now on, `off` included."""
        self.config = robots
        self.schedule = robots.weekly
        self.woken.set()

    def deliver(self, week: Week) -> dict[str, Outcome]:
        built = build(self.query, self.settings, week)
        reports = Path(self.settings.state_dir) / "reports"
        reports.mkdir(parents=True, exist_ok=True)
        (reports / f"weekly-{week}.html").write_text(built.html, encoding="utf-8")
        if self.config is None:
            print("\n".join([built.headline, *built.lines]), flush=True)
            return {}
        return send(built, self.config, self.settings.display_timezone, self.ledger)

    def stop(self) -> None:
        self.stopped.set()
        self.woken.set()
