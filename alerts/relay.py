"""`orderwatch relay`: Alertmanager webhooks (version 4) to WeCom and DingTalk robots.

    POST /alertmanager/<route>   deliver the payload's alerts to the robots of <route>
    GET  /-/healthy, /-/ready    liveness; readiness (robots loaded, outbox writable)
    POST /-/reload               re-read the robots file (as Prometheus tools do)

Delivery goes through the same outbox as OrderWatch's own alerts: deduplicated, 20 per
minute per robot, digests. A payload is tried at once; if a robot fails transiently the
payload's notices are withdrawn and the answer is 503, so Alertmanager retries it (it
owns the retry). Notices only held back by the rate limit are stored and answered 200.
Off loopback a bearer token is required (`ORDERWATCH_RELAY_TOKEN`).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from orderwatch.alerts.notice import Notice, from_alertmanager
from orderwatch.alerts.outbox import Outbox, OutboxWorker
from orderwatch.alerts.robot_config import RobotsConfig, load_robots
from orderwatch.alerts.robots import Robot
from orderwatch.config import ConfigError
from orderwatch.pipelines.http_endpoint import (
    BadRequest,
    answer_text,
    is_loopback,
    request_body,
    request_path,
    serve_wsgi,
)

log = logging.getLogger(__name__)
MAX_BODY = 4 * 1024 * 1024


class Relay:
    def __init__(self, robots_file: str | Path, state_dir: str | Path, token: str | None,
                 tz: str = "Asia/Shanghai") -> None:
        self.robots_file = robots_file
        self.token = token
        self.tz = tz
        self.lock = threading.Lock()
        self.config = load_robots(robots_file)
        self.outbox = Outbox(Path(state_dir) / "relay-outbox.sqlite3", self._robots())
        self.worker = OutboxWorker(self.outbox)
        self.on_reload: list[Callable[[RobotsConfig], None]] = []  # the weekly robot

    def _robots(self) -> dict[str, Robot]:
        return {name: Robot(c, self.tz) for name, c in self.config.robots.items()}

    def reload(self) -> None:
        config = load_robots(self.robots_file)  # raises ConfigError: the old config stays
        with self.lock:
            self.config = config
            self.outbox.robots = self._robots()
        for listener in self.on_reload:
            listener(config)

    def deliver(self, route_name: str, payload: dict[str, Any]) -> tuple[int, str]:
        if str(payload.get("version")) != "4":
            return 400, "expected an Alertmanager webhook payload with version 4"
        route = self.config.route(route_name)
        if route is None:
            return 404, f"no route {route_name!r} in the robots file"
        try:
            # One notification per alert per minute: a retry of a payload we answered
            # but Alertmanager did not hear is dropped; its repeat_interval reminders go out.
            minute = int(self.outbox.clock() // 60)
            alerts = payload.get("alerts") or []
            if not isinstance(alerts, list):
                raise ValueError(f"alerts must be a list, got {type(alerts).__name__}")
            notices = [replace(n, key=f"{n.key}:{minute}") for n in map(from_alertmanager, alerts)]
        except (ValueError, TypeError) as exc:
            return 400, f"bad alert in payload: {exc}"
        robots = [r for r in route.robots if r in self.config.robots]
        fresh: dict[str, list[Notice]] = {}
        with self.lock:
            for robot in robots:
                fresh[robot] = [n for n in notices if self.outbox.enqueue(robot, n)]
            for robot in robots:
                self.outbox.pump_robot(robot)
            failed = [r for r in robots if self.outbox.backing_off(r) and any(
                self.outbox.state_of(r, n.key) == "pending" for n in fresh[r])]
            for robot in failed:
                self.outbox.withdraw(robot, [n.key for n in fresh[robot]])
        self.worker.wake()
        if failed:
            return 503, f"robot(s) {', '.join(failed)} failed for now; retry later"
        return 200, f"{len(notices)} alert(s) accepted for {len(robots)} robot(s)"

    def app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = request_path(environ), environ.get("REQUEST_METHOD", "GET")

        def answer(status: int, text: str) -> list[bytes]:
            return answer_text(start_response, status, text)

        if path == "/-/healthy":
            return answer(200, "OK")
        if path == "/-/ready":
            return answer(200, "ready") if self.config.robots else \
                answer(503, "no robot configured (check the URL variables)")
        if method != "POST":
            return answer(405, "POST only")
        if not self._authorized(environ):
            return answer(401, "missing or wrong bearer token")
        if path == "/-/reload":
            try:
                self.reload()
            except ConfigError as exc:
                return answer(500, f"reload failed, old robots kept: {exc}")
            return answer(200, "reloaded")
        if not path.startswith("/alertmanager/"):
            return answer(404, "not found: POST /alertmanager/<route>")
        try:
            payload = orjson.loads(request_body(environ, MAX_BODY))
        except BadRequest as exc:
            return answer(exc.status, exc.text)
        except orjson.JSONDecodeError as exc:
            return answer(400, f"not JSON: {exc}")
        if not isinstance(payload, dict):
            return answer(400, "payload must be a JSON object")
        return answer(*self.deliver(path.removeprefix("/alertmanager/"), payload))

    def _authorized(self, environ: dict) -> bool:
        if self.token is None:
            return True
        given = environ.get("HTTP_AUTHORIZATION", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())


def serve_relay(relay: Relay, host: str, port: int):
    """Start the worker and the HTTP server (a daemon thread); returns the server."""
    if relay.token is None and not is_loopback(host):
        raise ConfigError(f"relay on {host} needs a bearer token: set ORDERWATCH_RELAY_TOKEN")
    relay.worker.start()
    return serve_wsgi(relay.app, host, port, "orderwatch-relay")
