"""WeCom group robots and DingTalk custom robots: message bodies, signing, limits, answers.

WeCom (企业微信群机器人): POST {"msgtype": "text"|"markdown"|"image", …} to the webhook
URL; text content ≤ 2048 bytes with `mentioned_mobile_list`, markdown content ≤ 4096
bytes, image as base64 + md5 of a JPG/PNG ≤ 2 MB; 20 messages per minute (errcode 45009).

DingTalk (钉钉自定义机器人): POST {"msgtype": "text"|"markdown"|"actionCard", "at": …};
with 加签 the URL carries `timestamp` (ms) and `sign` = urlencode(base64(HMAC-SHA256(secret,
f"{timestamp}\\n{secret}"))); a keyword robot needs the keyword in the message; an
@-mention needs both `at.atMobiles` and "@mobile" in the text; body ≤ 20,000 bytes;
20 messages per minute (errcode 130101).

Both answer HTTP 200 with a non-zero `errcode` on failure: that is a failure too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from orderwatch.alerts.message_text import fit_lines, render, size
from orderwatch.alerts.notice import Notice
from orderwatch.alerts.robot_config import RobotConfig

WECOM_TEXT_BYTES = 2048
WECOM_MARKDOWN_BYTES = 4096
WECOM_IMAGE_BYTES = 2 * 1024 * 1024
DINGTALK_BODY_BYTES = 20_000
PER_MINUTE = 20
# Answers worth trying again: throttled (WeCom 45009, DingTalk 130101), busy (-1).
RETRY_ERRCODES = frozenset({45009, 130101, -1})


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    retry: bool  # a transient failure: keep the message and try later
    detail: str  # errcode and errmsg, or the HTTP status; never the URL


def classify(status_code: int, body: bytes) -> Outcome:
    if status_code >= 500 or status_code == 429:
        return Outcome(False, True, f"HTTP {status_code}")
    if status_code != 200:
        return Outcome(False, False, f"HTTP {status_code}")
    try:
        answer = orjson.loads(body)
        code = int(answer.get("errcode", -2))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return Outcome(False, True, "HTTP 200 with an unreadable body")
    if code == 0:
        return Outcome(True, False, "ok")
    return Outcome(False, code in RETRY_ERRCODES, f"errcode {code}: {answer.get('errmsg', '')}")


def post_payload(client: httpx.Client, url: str, payload: dict[str, Any]) -> Outcome:
    """One request to a robot; a time-out or refused connection is worth retrying."""
    try:
        response = client.post(url, content=orjson.dumps(payload),
                               headers={"Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        return Outcome(False, True, type(exc).__name__)
    return classify(response.status_code, response.content)


class Robot:
    """Turns notices into request bodies for one configured robot."""

    def __init__(self, config: RobotConfig, tz: str = "Asia/Shanghai") -> None:
        self.config = config
        self.tz = tz

    @property
    def name(self) -> str:
        return self.config.name

    def url(self, now_ms: int | None = None) -> str:
        c = self.config
        if c.kind != "dingtalk" or not c.secret:
            return c.url
        return c.url + ("&" if "?" in c.url else "?") + dingtalk_signature(
            c.secret, now_ms if now_ms is not None else int(time.time() * 1000))

    def fits(self, notices: Sequence[Notice]) -> bool:
        """Would these notices go in one message without cutting anything?"""
        _, head, lines, join = self._parts(notices)
        return size(join.join([head, *lines])) <= self._content_budget(notices)

    def payload(self, notices: Sequence[Notice]) -> dict[str, Any]:
        title, head, lines, join = self._parts(notices)
        content = fit_lines(head, lines, self._content_budget(notices), self.config.language,
                            join)
        return self._wrap(title, content, self._mentions(notices))

    def _budget(self) -> int:
        c = self.config
        if c.kind == "wecom":
            return WECOM_TEXT_BYTES if c.message == "text" else WECOM_MARKDOWN_BYTES
        return DINGTALK_BODY_BYTES - 1000  # room for the JSON around the text

    def _content_budget(self, notices: Sequence[Notice]) -> int:
        """The budget left once DingTalk's "\n\n@mobile …" is appended to the text."""
        return self._budget() - size(_at_text(self._mentions(notices))) - 4

    def _mentions(self, notices: Sequence[Notice]) -> tuple[str, ...]:
        return self.config.mention_mobiles if any(
            n.status == "firing" and n.severity == "critical" for n in notices) else ()

    def _parts(self, notices: Sequence[Notice]) -> tuple[str, str, list[str], str]:
        text = render(notices, self.config.language, self.tz)
        return self._frame(text.headline, text.lines)

    def _frame(self, headline: str, lines: Sequence[str]) -> tuple[str, str, list[str], str]:
        """Title (headline with the robot's keyword), first line, item lines, separator."""
        keyword = self.config.keyword
        title = headline if not keyword or keyword in headline else f"{keyword} {headline}"
        if self.config.message == "text":
            return title, title, list(lines), "\n"
        return title, f"### {title}", [f"- {x}" for x in lines], "\n\n"

    def report_payload(self, headline: str, lines: Sequence[str]) -> dict[str, Any]:
        """A report (the weekly health check): headline and lines, cut to the robot's limit."""
        title, head, items, join = self._frame(headline, lines)
        return self._wrap(title, fit_lines(head, items, self._budget(), self.config.language,
                                           join), ())

    def _wrap(self, title: str, content: str, mobiles: tuple[str, ...]) -> dict[str, Any]:
        c = self.config
        if c.kind == "wecom":
            if c.message == "text":
                return {"msgtype": "text", "text": {"content": content,
                                                    "mentioned_mobile_list": list(mobiles)}}
            return {"msgtype": "markdown", "markdown": {"content": content}}
        if mobiles:  # DingTalk pings only if "@mobile" is in the text too
            content = f"{content}\n\n{_at_text(mobiles)}"
        at = {"atMobiles": list(mobiles), "isAtAll": False}
        if c.message == "text":
            return {"msgtype": "text", "text": {"content": content}, "at": at}
        if c.message == "action_card":
            card: dict[str, Any] = {"title": title, "text": content}
            if c.dashboard_url:
                card.update(singleTitle="打开看板" if c.language == "zh" else "Open dashboard",
                            singleURL=c.dashboard_url)
            return {"msgtype": "actionCard", "actionCard": card, "at": at}
        return {"msgtype": "markdown", "markdown": {"title": title, "text": content}, "at": at}

    @property
    def takes_images(self) -> bool:
        """Can it be sent a picture? WeCom robots can; DingTalk robots take no upload."""
        return self.config.kind == "wecom"

    def image_payload(self, png: bytes) -> dict[str, Any]:
        """WeCom only: a picture (the weekly trend chart)."""
        if not self.takes_images:
            raise ValueError("image messages are a WeCom robot feature")
        if len(png) > WECOM_IMAGE_BYTES:
            raise ValueError(f"image is {len(png):,} bytes; WeCom takes at most 2 MB")
        return {"msgtype": "image", "image": {"base64": base64.b64encode(png).decode(),
                                              "md5": hashlib.md5(png).hexdigest()}}


def _at_text(mobiles: tuple[str, ...]) -> str:
    return " ".join(f"@{m}" for m in mobiles)


def dingtalk_signature(secret: str, timestamp_ms: int) -> str:
    """The query string DingTalk's 加签 mode wants: timestamp=…&sign=…"""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest).decode())
    return f"timestamp={timestamp_ms}&sign={sign}"
