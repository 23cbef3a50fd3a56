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
        text = render(notices, self.config.language, self.tz)
        return size(self._body(text.headline, text.lines)) <= self._budget()

    def payload(self, notices: Sequence[Notice]) -> dict[str, Any]:
        text = render(notices, self.config.language, self.tz)
        return self._payload(text.headline, text.lines, notices)

    def _budget(self) -> int:
        c = self.config
        if c.kind == "wecom":
            return WECOM_TEXT_BYTES if c.message == "text" else WECOM_MARKDOWN_BYTES
        return DINGTALK_BODY_BYTES - 1000  # room for the JSON around the text

    def _mentions(self, notices: Sequence[Notice]) -> tuple[str, ...]:
        return self.config.mention_mobiles if any(
            n.status == "firing" and n.severity == "critical" for n in notices) else ()

    def _body(self, head: str, lines: Sequence[str]) -> str:
        c = self.config
        keyword = f"{c.keyword} " if c.keyword and c.keyword not in head else ""
        if c.message == "text":
            return "\n".join([keyword + head, *lines])
        return "\n\n".join([f"### {keyword}{head}", *(f"- {x}" for x in lines)])

    def _payload(self, head: str, lines: Sequence[str], notices: Sequence[Notice]
                 ) -> dict[str, Any]:
        c = self.config
        language = c.language
        mobiles = self._mentions(notices)
        at_text = " ".join(f"@{m}" for m in mobiles)
        keyword = f"{c.keyword} " if c.keyword and c.keyword not in head else ""
        budget = self._budget() - size(at_text) - 4
        if c.message == "text":
            content = fit_lines(keyword + head, lines, budget, language)
        else:
            content = fit_lines(f"### {keyword}{head}", [f"- {x}" for x in lines], budget,
                                language, "\n\n")
        if c.kind == "wecom":
            if c.message == "text":
                return {"msgtype": "text", "text": {"content": content,
                                                    "mentioned_mobile_list": list(mobiles)}}
            return {"msgtype": "markdown", "markdown": {"content": content}}
        if at_text:
            content = f"{content}\n\n{at_text}"
        at = {"atMobiles": list(mobiles), "isAtAll": False}
        if c.message == "text":
            return {"msgtype": "text", "text": {"content": content}, "at": at}
        title = keyword + head
        if c.message == "action_card":
            card: dict[str, Any] = {"title": title, "text": content}
            if c.dashboard_url:
                card.update(singleTitle="打开看板" if language == "zh" else "Open dashboard",
                            singleURL=c.dashboard_url)
            return {"msgtype": "actionCard", "actionCard": card, "at": at}
        return {"msgtype": "markdown", "markdown": {"title": title, "text": content}, "at": at}

    def image_payload(self, png: bytes) -> dict[str, Any]:
        """WeCom only: a picture (the weekly trend chart)."""
        if self.config.kind != "wecom":
            raise ValueError("image messages are a WeCom robot feature")
        if len(png) > WECOM_IMAGE_BYTES:
            raise ValueError(f"image is {len(png):,} bytes; WeCom takes at most 2 MB")
        return {"msgtype": "image", "image": {"base64": base64.b64encode(png).decode(),
                                              "md5": hashlib.md5(png).hexdigest()}}

    def markdown_payload(self, title: str, markdown: str) -> dict[str, Any]:
        """A free-form markdown message (the weekly report), cut to the robot's limit."""
        c = self.config
        keyword = f"{c.keyword} " if c.keyword and c.keyword not in title else ""
        budget = self._budget()
        lines = markdown.splitlines()
        content = fit_lines(f"### {keyword}{title}", lines, budget, c.language)
        if c.kind == "wecom":
            return {"msgtype": "markdown", "markdown": {"content": content}}
        return {"msgtype": "markdown", "markdown": {"title": keyword + title, "text": content}}


def dingtalk_signature(secret: str, timestamp_ms: int) -> str:
    """The query string DingTalk's 加签 mode wants: timestamp=…&sign=…"""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest).decode())
    return f"timestamp={timestamp_ms}&sign={sign}"
