"""One way to reach ClickHouse: clickhouse-connect, embedded (chDB) or a server.

`chdb:///path` (or a relative `chdb://./data/x.chdb`) is the in-process engine;
`http://[user:password@]host:8123/[database]` a server. chDB allows one data path per
process, so clients are shared per DSN.

A server password goes into the DSN as it is, or percent-encoded: docker-compose pastes
`CLICKHOUSE_PASSWORD` in unchanged, and a generated one holds `/`, `#`, `?` or `@`. The
host part cannot hold an `@`, so the last one ends the password.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from orderwatch.config import ConfigError, path_problem

_clients: dict[str, object] = {}
_read_only_clients: dict[str, object] = {}
_lock = threading.Lock()
write_lock = threading.RLock()  # chDB's session is not safe for concurrent inserts


@dataclass(frozen=True, slots=True)
class Target:
    dsn: str
    database: str
    embedded: bool
    # a server's address and credentials, read from its DSN
    host: str = ""
    port: int = 8123
    username: str = "default"
    password: str = field(default="", repr=False)
    secure: bool = False

    @property
    def path(self) -> str:
        """The embedded data directory (of a `chdb://` target)."""
        return self.dsn[len("chdb://"):]

    def redacted(self) -> str:
        return _without_password(self.dsn)


def _split(dsn: str) -> tuple[str, str | None, str]:
    """(scheme, user:password or None, host:port/path): the last @ ends the credentials,
    as the host part cannot hold one."""
    scheme, _, rest = dsn.partition("://")
    userinfo, at, address = rest.rpartition("@")
    return scheme, userinfo if at else None, address


def _without_password(dsn: str) -> str:
    """The DSN as it may be shown: its password starred. Split as `parse_dsn` splits it,
    so no character of the password (a space, a quote) shows."""
    scheme, userinfo, address = _split(dsn)
    if userinfo is None:
        return dsn
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{address}"


def parse_dsn(dsn: str, default_database: str = "orderwatch") -> Target:
    if dsn.startswith("chdb://"):
        path = dsn[len("chdb://"):]
        if not path:
            raise ConfigError("chdb:// DSN needs a path, e.g. chdb:///var/lib/orderwatch")
        return Target("chdb://" + os.path.abspath(path), _database(default_database), True)
    scheme, userinfo, address = _split(dsn)
    hostport, _, path = address.partition("/")
    parts = urlsplit(f"{scheme}://{hostport}")
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"unsupported ClickHouse DSN {_without_password(dsn)!r}: use "
                          "chdb:///path or http://host:8123/database")
    try:
        port = parts.port or (8443 if scheme == "https" else 8123)  # ClickHouse's defaults
    except ValueError:
        raise ConfigError(f"ClickHouse DSN {_without_password(dsn)!r}: the port after "
                          f"{parts.hostname!r} must be a number from 1 to 65535") from None
    username, _, password = (userinfo or "").partition(":")
    return Target(dsn, _database(path.strip("/") or default_database), False, parts.hostname,
                  port, unquote(username) or "default", unquote(password), scheme == "https")


def _database(name: str) -> str:
    """The database name goes into DDL, where values cannot be bound: it must be a plain name."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ConfigError(f"ClickHouse database name {name!r} must be letters, digits and _")
    return name


def connect(target: Target):
    with _lock:
        client = _clients.get(target.dsn)
        if client is None:
            if target.embedded:
                try:
                    os.makedirs(target.path, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"cannot use {target.path} for the embedded ClickHouse: "
                                      f"{path_problem(exc)}") from None
                client = clickhouse_connect.get_client(dsn=target.dsn)
            else:
                try:  # get_client asks the server for its version and settings
                    client = clickhouse_connect.get_client(
                        host=target.host, port=target.port, username=target.username,
                        password=target.password, secure=target.secure)
                except ClickHouseError as exc:
                    raise ConfigError(f"cannot use ClickHouse at {target.redacted()}: "
                                      f"{_reason(exc)}") from None
            _clients[target.dsn] = client
        return client


def _reason(exc: ClickHouseError) -> str:
    """The operating system's words when there are some ("Connection refused"), not the
    connection pool's paragraph around them; otherwise ClickHouse's, on one line."""
    text = " ".join(str(exc).split())
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found.group(1) if found else text


def connect_read_only(target: Target):
    """A separate client whose session is read-only for good (`SET readonly = 1`), one
    per DSN like the writer.

    Not the shared client: clickhouse-connect's chDB backend applies per-call settings
    with SET and cannot restore them once readonly is on, which would leave the writer's
    session read-only.
    """
    if not target.embedded:
        raise ConfigError("read-only queries through OrderWatch are for the embedded mode")
    connect(target)  # the embedded engine must be initialised (and the path checked) first
    with _lock:
        client = _read_only_clients.get(target.dsn)
        if client is None:
            client = clickhouse_connect.get_client(dsn=target.dsn)
            client.command("SET readonly = 1")
            _read_only_clients[target.dsn] = client
        return client


def held_by_another_process(target: Target) -> bool:
    """Does another process have this embedded data directory open (chDB's `status` lock)?"""
    if not target.embedded or target.dsn in _clients:
        return False
    status = os.path.join(target.path, "status")
    if not os.path.exists(status):
        return False
    with open(status, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
