"""A local stand-in for the WeCom and DingTalk robot webhooks, written from their documents.

It answers like the real services: HTTP 200 with `errcode`/`errmsg`; 20 messages per
minute per robot (WeCom 45009, DingTalk 130101); DingTalk signatures (HMAC-SHA256 of
"timestamp\\nsecret", base64, URL-encoded, timestamp within an hour) and keywords
(310000); size limits (WeCom text 2048 / markdown 4096 bytes, image 2 MB with a matching
md5; DingTalk body 20,000 bytes, 460101). `fail_until` makes it answer HTTP 500, as an
outage would. Time comes from `clock`, shared with the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass
class Received:
    kind: str
    robot: str
    payload: dict[str, Any]
    at: float

    @property
    def text(self) -> str:
        p = self.payload
        body = p.get(p["msgtype"], {})
        return body.get("content") or body.get("text") or ""


@dataclass
class FakeRobots:
    clock: Callable[[], float]
    wecom_keys: set[str] = field(default_factory=set)
    dingtalk: dict[str, dict[str, str | None]] = field(default_factory=dict)  # token → opts
    fail_until: float = 0.0
    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # every errcode (or HTTP status) given
    sends: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    gate: threading.Event | None = None  # if set up, requests wait for it (a slow robot)
    in_flight: threading.Event = field(default_factory=threading.Event)

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                status, answer = fake.handle(self.path, self.rfile.read(length))
                data = orjson.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()

    def _answer(self, code: int, message: str) -> tuple[int, dict]:
        self.answers.append(code)
        return 200, {"errcode": code, "errmsg": message}

    def handle(self, path: str, body: bytes) -> tuple[int, dict]:
        if self.gate is not None:
            self.in_flight.set()
            self.gate.wait(30)
        now = self.clock()
        if now < self.fail_until:
            self.answers.append(500)
            return 500, {"error": "upstream unavailable"}
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._answer(40001 if "webhook" in url.path else 43000, "invalid json")
        if url.path == "/cgi-bin/webhook/send":
            return self._wecom(query, payload, body, now)
        if url.path == "/robot/send":
            return self._dingtalk(query, payload, body, now)
        return 404, {"errcode": 404, "errmsg": "not found"}

    def _rate_ok(self, robot: str, now: float) -> bool:
        recent = [t for t in self.sends[robot] if t > now - 60]
        self.sends[robot] = recent
        if len(recent) >= 20:
            return False
        recent.append(now)
        return True

    def _wecom(self, query: dict, payload: dict, body: bytes, now: float) -> tuple[int, dict]:
        key = query.get("key", "")
        if key not in self.wecom_keys:
            return self._answer(93000, "invalid webhook url")
        kind = payload.get("msgtype")
        if kind == "text":
            content = payload["text"].get("content", "")
            if len(content.encode()) > 2048:
                return self._answer(40058, "text content exceed max length 2048")
        elif kind == "markdown":
            content = payload["markdown"].get("content", "")
            if len(content.encode()) > 4096:
                return self._answer(40058, "markdown content exceed max length 4096")
        elif kind == "image":
            raw = base64.b64decode(payload["image"]["base64"])
            if len(raw) > 2 * 1024 * 1024:
                return self._answer(40009, "invalid image size")
            if hashlib.md5(raw).hexdigest() != payload["image"]["md5"]:
                return self._answer(40009, "image md5 mismatch")
            if not raw.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8")):
                return self._answer(40009, "image must be jpg or png")
        else:
            return self._answer(40008, "invalid message type")
        if not self._rate_ok(key, now):
            return self._answer(45009, "api freq out of limit")
        self.received.append(Received("wecom", key, payload, now))
        return self._answer(0, "ok")

    def _dingtalk(self, query: dict, payload: dict, body: bytes, now: float
                  ) -> tuple[int, dict]:
        token = query.get("access_token", "")
        robot = self.dingtalk.get(token)
        if robot is None:
            return self._answer(300001, "token is not exist")
        secret = robot.get("secret")
        if secret:
            stamp = query.get("timestamp", "")
            if not stamp.isdigit() or abs(int(stamp) / 1000 - now) > 3600:
                return self._answer(310000, "sign not match, timestamp is invalid")
            digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(),
                              hashlib.sha256).digest()
            if query.get("sign", "") != base64.b64encode(digest).decode():  # parse_qs decoded it
                return self._answer(310000, "sign not match")
        if len(body) > 20_000:
            return self._answer(460101, "message too long")
        kind = payload.get("msgtype")
        if kind not in ("text", "markdown", "actionCard", "link", "feedCard"):
            return self._answer(40035, "invalid msgtype")
        text = Received("dingtalk", token, payload, now).text
        keyword = robot.get("keyword")
        title = (payload.get(kind) or {}).get("title", "")
        if keyword and keyword not in text and keyword not in title:
            return self._answer(310000, "keywords not in content")
        if not self._rate_ok(token, now):
            return self._answer(130101, "send too fast, exceed 20 times per minute")
        self.received.append(Received("dingtalk", token, payload, now))
        return self._answer(0, "ok")
