"""Robot delivery that loses nothing: a SQLite outbox, 20 messages a minute, digests, retries.

Every notice for a robot is stored before anything is sent, keyed by its identity, so a
notice offered twice (a resumed dataflow, Alertmanager retrying) is kept once. Notices
belong to a group whose timers (`grouping.py`: group_wait, group_interval,
repeat_interval) are stored too and decide when they are due. `pump()`
sends what is due: as few messages as the robot's size limit allows (a digest), at
most 20 per robot per sliding minute (the window is stored too, so a restart does not
burst). A throttled, busy, 5xx or timed-out robot is retried with exponential backoff up
to a minute, indefinitely; a notice is marked sent only once the robot answered errcode 0.
`pump()` takes its time from `clock`, so tests drive it without waiting.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import httpx
import orjson

from orderwatch.alerts.grouping import IMMEDIATE, Grouping
from orderwatch.alerts.message_text import pack
from orderwatch.alerts.notice import Notice
from orderwatch.alerts.robots import PER_MINUTE, Outcome, Robot, post_payload

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    robot TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, grp TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | failed
    enqueued_at REAL NOT NULL, sent_at REAL, detail TEXT,
    PRIMARY KEY (robot, key));
CREATE INDEX IF NOT EXISTS pending ON notices (robot, state, enqueued_at);
CREATE TABLE IF NOT EXISTS sends (robot TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS backoff (robot TEXT PRIMARY KEY, failures INTEGER NOT NULL,
                                    next_try_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    robot TEXT NOT NULL, grp TEXT NOT NULL, interval_s REAL NOT NULL, repeat_s REAL NOT NULL,
    due_at REAL,   -- when its pending notices may go; NULL: none pending
    sent_at REAL,  -- its last message
    PRIMARY KEY (robot, grp));
CREATE TABLE IF NOT EXISTS firing (  -- each group's alerts still firing, for reminders
    robot TEXT NOT NULL, grp TEXT NOT NULL, ident TEXT NOT NULL, body BLOB NOT NULL,
    since REAL NOT NULL, PRIMARY KEY (robot, ident));
CREATE TABLE IF NOT EXISTS inhibitors (  -- inhibiting alerts firing now (dispatch.py)
    alert TEXT, label TEXT, value TEXT, PRIMARY KEY (alert, label, value));
"""
WINDOW_S = 60.0
MAX_BACKOFF_S = 60.0
FORGET_FIRING_S = 7 * 86400.0  # an alert never resolved stops being reminded after a week


class Outbox:
    def __init__(self, path: str | Path, robots: Mapping[str, Robot],
                 client: httpx.Client | None = None, clock: Callable[[], float] = time.time,
                 per_minute: int = PER_MINUTE) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(notices)")}
        if "grp" not in columns:  # an outbox written before grouping existed
            self.db.execute("ALTER TABLE notices ADD COLUMN grp TEXT NOT NULL DEFAULT ''")
        self.robots = dict(robots)
        self.client = client or httpx.Client(timeout=10.0)
        self.clock = clock
        self.per_minute = per_minute
        self.lock = threading.RLock()  # the database; never held across an HTTP request
        self._sending: dict[str, threading.Lock] = {}  # one pump per robot at a time

    def enqueue(self, robot: str, notice: Notice, grouping: Grouping = IMMEDIATE) -> bool:
        """Store a notice for a robot; False when it was already there."""
        grp = grouping.key(notice)
        with self.lock:
            now = self.clock()
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO notices (robot, key, grp, body, enqueued_at) "
                "VALUES (?,?,?,?,?)", (robot, notice.key, grp, _body(notice), now))
            if cursor.rowcount != 1:
                return False
            self._track_firing(robot, grp, notice, now)
            row = self.db.execute("SELECT due_at, sent_at FROM groups WHERE robot=? AND grp=?",
                                  (robot, grp)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO groups VALUES (?,?,?,?,?,NULL)",
                                (robot, grp, grouping.interval_s, grouping.repeat_s,
                                 now + grouping.wait_s))
            elif row[0] is None:
                due = (now + grouping.wait_s if row[1] is None
                       else max(now, row[1] + grouping.interval_s))
                self.db.execute("UPDATE groups SET due_at=?, interval_s=?, repeat_s=? "
                                "WHERE robot=? AND grp=?",
                                (due, grouping.interval_s, grouping.repeat_s, robot, grp))
            return True

    def _track_firing(self, robot: str, grp: str, notice: Notice, now: float) -> None:
        ident = orjson.dumps([notice.alert, sorted(
            (k, v) for k, v in notice.labels.items() if k != "inhibited_by")]).decode()
        if notice.status == "firing":
            self.db.execute("INSERT OR REPLACE INTO firing VALUES (?,?,?,?,?)",
                            (robot, grp, ident, _body(notice), now))
        else:
            self.db.execute("DELETE FROM firing WHERE robot=? AND ident=?", (robot, ident))

    def withdraw(self, robot: str, keys: list[str]) -> None:
        """Forget pending notices (the relay hands a failed batch back to Alertmanager)."""
        with self.lock:
            self.db.executemany("DELETE FROM notices WHERE robot=? AND key=? AND state='pending'",
                                [(robot, k) for k in keys])

    def note_inhibitor(self, alert: str, label: str, value: str, firing: bool) -> None:
        """Remember whether an inhibiting alert fires for this label value; kept with the
        notices so that a restart keeps inhibiting."""
        with self.lock:
            if firing:
                self.db.execute("INSERT OR IGNORE INTO inhibitors VALUES (?,?,?)",
                                (alert, label, value))
            else:
                self.db.execute("DELETE FROM inhibitors WHERE alert=? AND label=? AND value=?",
                                (alert, label, value))

    def inhibitor_fires(self, alert: str, label: str, value: str) -> bool:
        with self.lock:
            return self.db.execute(
                "SELECT 1 FROM inhibitors WHERE alert=? AND label=? AND value=?",
                (alert, label, value)).fetchone() is not None

    def pending(self, robot: str | None = None) -> int:
        sql = "SELECT count() FROM notices WHERE state='pending'"
        args: tuple = ()
        if robot is not None:
            sql, args = sql + " AND robot=?", (robot,)
        with self.lock:
            return self.db.execute(sql, args).fetchone()[0]

    def state_of(self, robot: str, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT state FROM notices WHERE robot=? AND key=?",
                                  (robot, key)).fetchone()
        return row[0] if row else None

    def backing_off(self, robot: str) -> bool:
        """Did the robot's last attempt fail transiently (and is it waiting to retry)?"""
        with self.lock:
            return self.db.execute("SELECT 1 FROM backoff WHERE robot=?",
                                   (robot,)).fetchone() is not None

    def pump(self, flush_all: bool = False) -> float | None:
        """Send what is due now (with `flush_all`, every pending notice regardless of its
        group's timers); seconds until the next pump is useful (None: idle)."""
        waits = [w for w in (self.pump_robot(name, flush_all) for name in self.robots)
                 if w is not None]
        return min(waits) if waits else None

    def pump_robot(self, name: str, flush_all: bool = False) -> float | None:
        """Send one robot's due messages. Enqueueing goes on meanwhile: the database lock
        is taken per statement, never across a request to the robot."""
        robot = self.robots[name]
        with self.lock:
            sending = self._sending.setdefault(name, threading.Lock())
        with sending:
            with self.lock:
                now = self.clock()
                self._remind(name, now)
                pending = self._pending_notices(name, None if flush_all else now)
                if not pending:
                    return self._next_due(name, now)
                row = self.db.execute("SELECT failures, next_try_at FROM backoff WHERE robot=?",
                                      (name,)).fetchone()
                if row and row[1] > now:
                    return row[1] - now
                self.db.execute("DELETE FROM sends WHERE at <= ?", (now - WINDOW_S,))
                recent = [r[0] for r in self.db.execute(
                    "SELECT at FROM sends WHERE robot=? ORDER BY at", (name,))]
            budget = self.per_minute - len(recent)
            if budget <= 0:
                return recent[0] + WINDOW_S - now
            flushed: set[str] = set()
            try:
                fits = lambda message: robot.fits([n for _, n in message])  # noqa: E731
                for message in pack(pending, fits)[:budget]:
                    notices = [n for _, n in message]
                    outcome = self._send(robot, notices)
                    if not outcome.ok:
                        return self._failed(name, notices, outcome, row[0] if row else 0)
                    flushed.update(grp for grp, _ in message)
            finally:
                with self.lock:
                    self._flushed(name, flushed, self.clock())
            with self.lock:
                self.db.execute("DELETE FROM backoff WHERE robot=?", (name,))
                if self._pending_notices(name, None if flush_all else self.clock()):
                    return 0.0
                return self._next_due(name, self.clock())

    def _pending_notices(self, name: str, due_by: float | None) -> list[tuple[str, Notice]]:
        """(group, notice) pending for a robot, oldest first; only due groups' unless
        `due_by` is None."""
        rows = self.db.execute(
            "SELECT n.grp, n.body FROM notices n LEFT JOIN groups g "
            "ON g.robot = n.robot AND g.grp = n.grp WHERE n.robot=? AND n.state='pending' "
            "AND (? IS NULL OR g.due_at IS NULL OR g.due_at <= ?) "
            "ORDER BY n.enqueued_at, n.rowid", (name, due_by, due_by)).fetchall()
        return [(grp, Notice.from_json(orjson.loads(body))) for grp, body in rows]

    def _remind(self, name: str, now: float) -> None:
        """Queue the firing alerts of groups silent for their repeat_interval again."""
        self.db.execute("DELETE FROM firing WHERE robot=? AND since < ?",
                        (name, now - FORGET_FIRING_S))
        due = self.db.execute(
            "SELECT grp FROM groups WHERE robot=? AND repeat_s > 0 AND due_at IS NULL "
            "AND sent_at IS NOT NULL AND sent_at + repeat_s <= ?", (name, now)).fetchall()
        for (grp,) in due:
            rows = self.db.execute("SELECT body FROM firing WHERE robot=? AND grp=? "
                                   "ORDER BY since", (name, grp)).fetchall()
            for (body,) in rows:
                notice = Notice.from_json(orjson.loads(body))
                reminder = replace(notice, key=f"{notice.key}:reminder:{now:.3f}",
                                   reminder=True)
                self.db.execute("INSERT OR IGNORE INTO notices (robot, key, grp, body, "
                                "enqueued_at) VALUES (?,?,?,?,?)",
                                (name, reminder.key, grp, _body(reminder), now))
            self.db.execute("UPDATE groups SET due_at=? WHERE robot=? AND grp=?",
                            (now if rows else None, name, grp))

    def _flushed(self, name: str, groups: set[str], now: float) -> None:
        """Groups that sent a message: restart their interval; forget the quiet ones."""
        for grp in groups:
            left = self.db.execute("SELECT 1 FROM notices WHERE robot=? AND grp=? AND "
                                   "state='pending' LIMIT 1", (name, grp)).fetchone()
            firing = self.db.execute("SELECT 1 FROM firing WHERE robot=? AND grp=? LIMIT 1",
                                     (name, grp)).fetchone()
            if left is None and firing is None:
                self.db.execute("DELETE FROM groups WHERE robot=? AND grp=?", (name, grp))
            else:
                self.db.execute("UPDATE groups SET sent_at=?, due_at=CASE WHEN ? THEN due_at "
                                "END WHERE robot=? AND grp=?", (now, left is not None, name, grp))

    def _next_due(self, name: str, now: float) -> float | None:
        """Seconds until a group of this robot is due or owes a reminder (None: never)."""
        row = self.db.execute(
            "SELECT min(CASE WHEN due_at IS NOT NULL THEN due_at "
            "WHEN repeat_s > 0 AND sent_at IS NOT NULL AND EXISTS (SELECT 1 FROM firing f "
            "WHERE f.robot = g.robot AND f.grp = g.grp) THEN sent_at + repeat_s END) "
            "FROM groups g WHERE robot=?", (name,)).fetchone()
        return None if row[0] is None else max(0.0, row[0] - now)

    def _send(self, robot: Robot, group: list[Notice]) -> Outcome:
        payload = robot.payload(group)
        now = self.clock()
        with self.lock:
            self.db.execute("INSERT INTO sends (robot, at) VALUES (?, ?)", (robot.name, now))
        outcome = post_payload(self.client, robot.url(int(now * 1000)), payload)
        if outcome.ok:
            with self.lock:
                self.db.executemany(
                    "UPDATE notices SET state='sent', sent_at=? WHERE robot=? AND key=?",
                    [(now, robot.name, n.key) for n in group])
        return outcome

    def _failed(self, name: str, group: list[Notice], outcome: Outcome, failures: int
                ) -> float:
        if not outcome.retry:  # the robot refuses this message: keep it, marked, and go on
            log.error("robot %s refused a message of %d notices (%s)", name, len(group),
                      outcome.detail)
            with self.lock:
                self.db.executemany("UPDATE notices SET state='failed', detail=? "
                                    "WHERE robot=? AND key=?",
                                    [(outcome.detail, name, n.key) for n in group])
            return 0.0
        delay = min(MAX_BACKOFF_S, 2.0 ** failures)
        log.warning("robot %s: %s; retrying in %.0f s (%d pending)", name, outcome.detail,
                    delay, self.pending(name))
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO backoff VALUES (?, ?, ?)",
                            (name, failures + 1, self.clock() + delay))
        return delay

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _body(notice: Notice) -> bytes:
    return orjson.dumps(notice.to_json())


class OutboxWorker(threading.Thread):
    """Pumps an outbox in the background: at once when woken, else when something is due."""

    def __init__(self, outbox: Outbox, idle_s: float = 5.0) -> None:
        super().__init__(daemon=True, name="orderwatch-robots")
        self.outbox = outbox
        self.idle_s = idle_s
        self.woken = threading.Event()
        self.stopped = threading.Event()
        self.flush_all = False  # stopping: send what is pending without waiting for timers

    def wake(self) -> None:
        self.woken.set()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.woken.clear()
            try:
                wait = self.outbox.pump(self.flush_all)
            except Exception:  # a bug must not stop deliveries for good: log, go on
                log.exception("robot delivery failed")
                wait = self.idle_s
            self.woken.wait(self.idle_s if wait is None else max(0.05, wait))

    def stop(self, drain_s: float = 5.0) -> None:
        """Give pending messages a few seconds, then stop; the rest wait in the outbox."""
        deadline = time.monotonic() + drain_s
        self.flush_all = True
        while self.outbox.pending() and time.monotonic() < deadline:
            self.wake()
            time.sleep(0.1)
        self.stopped.set()
        self.wake()
        self.join(10)
