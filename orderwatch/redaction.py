"""Secrets out of whatever OrderWatch prints or logs.

Robot keys and signatures travel in URL queries (WeCom `?key=`, DingTalk
`?access_token=…&sign=…`) and ClickHouse passwords in DSNs (`http://user:pw@host`).
Libraries log those URLs as they are: httpx logs every request at INFO, so `-v` would
print each robot's key. Every log line goes through `redact` (see `RedactingFormatter`).
"""

from __future__ import annotations

import logging
import re

_QUERY_SECRET = re.compile(
    r"([?&](?:key|access_token|sign|token|secret|password)=)[^&\s\"'#]+", re.IGNORECASE)
# up to the last @ of the URL, as a DSN's password may hold / # ? and @ themselves (an @
# in a query after it hides more than the password: rather that than a piece of it shown)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^\s'\"]+@(?=[^@\s/'\"]*(?:[/\s'\"]|$))")


def redact(text: str) -> str:
    """`text` with URL passwords and secret query values replaced by `***`."""
    return _URL_PASSWORD.sub(r"\1***@", _QUERY_SECRET.sub(r"\1***", text))


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record: message, arguments and traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
