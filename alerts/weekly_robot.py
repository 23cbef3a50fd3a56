"""The weekly health-check robot: build the report, write its HTML, post it, on a schedule.

Posting: the markdown to every chosen robot, and the trend chart as a WeCom image. DingTalk
robots cannot take an uploaded image, so their markdown carries the days as text bars
(`weekly_text.trend_lines`) and points at the HTML report for the chart. Throttled
or failing robots are retried with backoff for a few minutes. A ledger in the state
directory records which robots got which week, so a restart on Monday does not post twice,
and the time the next report is due, so a report that fell due while OrderWatch was
stopped goes out when it starts again (as a systemd timer with `Persistent=true` does).
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
    return _next_moment(now, schedule, tz).timestamp()


def last_run(now: float, schedule: WeeklySchedule, tz: str) -> float:
    """The latest scheduled moment at or before `now`: a week before the next one."""
    return (_next_moment(now, schedule, tz) - timedelta(days=7)).timestamp()


def _next_moment(now: float, schedule: WeeklySchedule, tz: str) -> datetime:
    local = datetime.fromtimestamp(now, zone(tz))
    at = local.replace(hour=schedule.hour, minute=schedule.minute, second=0, microsecond=0)
    at += timedelta(days=(schedule.weekday - local.weekday()) % 7)
    if at.timestamp() <= now:
        at += timedelta(days=7)
    return at


NEXT_DUE = "next_due"  # the ledger's one key that is not a week


class Ledger:
    """Which robots already got which week's report, and when the next report is due (a
    JSON file in the state directory: {"2026-W08": ["ops"], "next_due": 1772071200.0})."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict:
        try:
            loaded = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def sent(self) -> dict[str, list[str]]:
        return {k: v for k, v in self._load().items() if k != NEXT_DUE}

    def record(self, week: Week, robot: str) -> None:
        ledger = self._load()
        sent = ledger.setdefault(str(week), [])
        if robot not in sent:
            sent.append(robot)
        self._save(ledger)

    def next_due(self) -> float | None:
        """When a running weekly robot last expected to post; None if none ever ran."""
        due = self._load().get(NEXT_DUE)
        return float(due) if isinstance(due, int | float) else None

    def expect(self, due: float | None) -> None:
        """Note when the next report is due (None: the schedule is off)."""
        ledger = self._load()
        if ledger.get(NEXT_DUE) != due:
            if due is None:
                del ledger[NEXT_DUE]
            else:
                ledger[NEXT_DUE] = due
            self._save(ledger)

    def _save(self, ledger: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(ledger))
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
        self._deliver_missed()
        while not self.stopped.is_set():
            schedule, tz = self.schedule, self.settings.display_timezone
            due = next_run(self.clock(), schedule, tz) if schedule.enabled else None
            self.ledger.expect(due)
            self.woken.wait(None if due is None else max(0.0, due - self.clock()))
            if self.stopped.is_set():
                return
            self.woken.clear()
            if due is None or self.clock() < due:  # woken early: count again from now
                continue
            self._deliver_guarded(Week.containing(due, tz).previous())

    def _deliver_missed(self) -> None:
        """The report that fell due while no weekly robot was running, if one did: the
        ledger holds when the last one expected to post next. Only the latest week's."""
        expected = self.ledger.next_due()
        now = self.clock()
        if not self.schedule.enabled or expected is None or expected > now:
            return
        tz = self.settings.display_timezone
        due = max(expected, last_run(now, self.schedule, tz))
        week = Week.containing(due, tz).previous()
        if self.config is not None and set(self.config.weekly_robots()) <= set(
                self.ledger.sent().get(str(week), [])):
            return  # stopped after posting, before noting the next time
        log.warning("the weekly report of %s fell due while OrderWatch was stopped; "
                    "sending it now", week)
        self._deliver_guarded(week)

    def _deliver_guarded(self, week: Week) -> None:
        try:
            self.deliver(week)
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
