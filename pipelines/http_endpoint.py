"""The process's HTTP endpoint: `/metrics`, `/-/healthy`, and read-only SQL on `/query`.

chDB keeps its data directory locked while `orderwatch run` writes to it, so another
process cannot open it; `/query?query=SELECT…` answers from the running process instead,
in ClickHouse's TabSeparatedWithNames (or `{"columns": …, "rows": …}` with
`format=json`), with `readonly=1` (no writes, no DDL). It is served only on a loopback
address.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from orderwatch.config import ConfigError
from orderwatch.pipelines.prometheus_export import Exporter, make_registry

MAX_QUERY_BYTES = 1 << 20
QueryRunner = Callable[[str], tuple[list[str], list[tuple]]]  # raises QueryFailed


class QueryFailed(ConfigError):
    """The query's own fault (syntax, an unknown table, a write on read-only data), in one
    line however it was run: directly, or through a running process's `/query`."""

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(reason.split())
        super().__init__(f"query failed: {self.reason}")


class BadRequest(Exception):
    """A request that cannot be read, answered with `status` and this text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def request_path(environ: dict) -> str:
    """The path as the client sent it: WSGI hands it over decoded as Latin-1 (PEP 3333),
    so a route named in Chinese would never match without this."""
    return environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")


def request_body(environ: dict, limit: int) -> bytes:
    raw = environ.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise BadRequest(400, f"bad Content-Length {raw!r}") from None
    if length < 0:
        raise BadRequest(400, f"bad Content-Length {raw!r}")
    if length > limit:
        raise BadRequest(413, f"payload too large: {length} bytes, at most {limit}")
    return environ["wsgi.input"].read(length)


class _Quiet(WSGIRequestHandler):
    timeout = 60  # a client that sends fewer bytes than it announced frees its thread

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the console: it is for alerts."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_app(exporter: Exporter, query: QueryRunner | None):
    metrics = make_wsgi_app(make_registry(exporter))

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = request_path(environ)
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/-/healthy":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"OK\n"]
        if path == "/query" and query is not None:
            return _query(environ, start_response, query)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /query?query=SELECT 1\n"]

    return app


def _query(environ: dict, start_response: Callable, query: QueryRunner) -> Iterable[bytes]:
    params = parse_qs(environ.get("QUERY_STRING", ""))
    sql = params.get("query", [""])[0]
    if environ.get("REQUEST_METHOD") == "POST":
        try:
            sql = request_body(environ, MAX_QUERY_BYTES).decode() or sql
        except UnicodeDecodeError:
            return answer_text(start_response, 400, "the query is not UTF-8")
        except BadRequest as exc:
            return answer_text(start_response, exc.status, exc.text)
    if not sql.strip():
        return answer_text(start_response, 400, "missing query: /query?query=SELECT 1")
    try:
        columns, rows = query(sql)
    except Exception as exc:
        failed = exc if isinstance(exc, QueryFailed) else QueryFailed(str(exc))
        return answer_text(start_response, 400, failed.reason)
    if params.get("format") == ["json"]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [orjson.dumps({"columns": columns, "rows": rows}, default=str)]
    start_response("200 OK", [("Content-Type", "text/tab-separated-values; charset=utf-8")])
    return [tab_separated(columns, rows).encode()]


def answer_text(start_response: Callable, status: int, text: str) -> list[bytes]:
    """A plain-text answer: one line, UTF-8."""
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", "text/plain; charset=utf-8")])
    return [f"{text}\n".encode()]


def tab_separated(columns: list[str], rows: Iterable[Sequence[Any]]) -> str:
    """ClickHouse's TabSeparatedWithNames: a header line, then a line per row (NULL as \\N);
    a backslash, tab or line feed inside a value is escaped as ClickHouse does, so a row
    stays one line and its fields stay apart."""
    lines = ["\t".join(map(_tsv_field, columns))]
    lines += ["\t".join("\\N" if v is None else _tsv_field(str(v)) for v in row)
              for row in rows]
    return "\n".join(lines) + "\n"


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})


def _tsv_field(text: str) -> str:
    return text.translate(_TSV_ESCAPES)


def check_listen(host: str, port: int) -> None:
    """Fail before any work (a banner, a data directory) if `host:port` cannot be served:
    binding for real comes later, once there is something to serve."""
    try:
        with socket.socket(ThreadingWSGIServer.address_family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            probe.bind((host, port))
    except (OSError, OverflowError) as exc:
        raise _cannot_listen(host, port, exc) from None


def _cannot_listen(host: str, port: int, exc: Exception) -> ConfigError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return ConfigError(f"cannot listen on {host}:{port}: {reason}")


def serve(exporter: Exporter, host: str, port: int, query: QueryRunner | None = None):
    """Serve /metrics (and /query on loopback) in a daemon thread; returns the server."""
    return serve_wsgi(make_app(exporter, query if is_loopback(host) else None), host, port,
                      "orderwatch-http")


def serve_wsgi(app: Callable, host: str, port: int, name: str):
    """Any WSGI app, threaded, without an access log, in a daemon thread named `name`;
    returns the server (call `shutdown()` to stop)."""
    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    except (OSError, OverflowError) as exc:  # in use, not ours, no such host, out of range
        raise _cannot_listen(host, port, exc) from None
    threading.Thread(target=server.serve_forever, daemon=True, name=name).start()
    return server
