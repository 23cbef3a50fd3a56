"""Secrets never reach the logs, whichever library logs them."""

from __future__ import annotations

import pytest

from orderwatch.redaction import redact


@pytest.mark.parametrize(("text", "secret"), [
    ('HTTP Request: POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xx '
     '"HTTP/1.1 200 OK"', "693a91f6-7xx"),
    ("POST https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1795396047044"
     "&sign=Hr3Tkb9mCyo7of%3D", "abc123"),
    ("POST https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1795396047044"
     "&sign=Hr3Tkb9mCyo7of%3D", "Hr3Tkb9mCyo7of"),
    ("cannot use ClickHouse at http://ow:s3cr%40t@ch:8123/orderwatch", "s3cr%40t"),
    ("cannot use ClickHouse at http://ow:p@ss@ch:8123/orderwatch: refused", "ss@ch"),
    ("cannot use ClickHouse at http://ow:a/b#c?d@ch:8123/orderwatch", "b#c"),
    ("'http://ow:x@y@ch'", "y@"),
    ("Traceback …\nhttpx.ConnectError: https://x.test/hook?KEY=kk1", "kk1"),
])
def test_secrets_in_urls_are_starred(text, secret):
    shown = redact(text)
    assert secret not in shown and "***" in shown


def test_a_url_password_is_starred_up_to_its_host():
    assert redact("at http://ow:p@ss/w#rd@ch:8123/db: refused") == (
        "at http://ow:***@ch:8123/db: refused")
    assert redact("'http://ow:pw@ch:1/' 'a@b'") == "'http://ow:***@ch:1/' 'a@b'"


def test_what_is_not_a_secret_stays():
    text = ("POST https://oapi.dingtalk.com/robot/send?access_token=t&timestamp=1795396047044 "
            "to http://ch:8123/orderwatch?database=orderwatch, order_no=T0001 key=value")
    assert redact(text) == text.replace("access_token=t", "access_token=***")
