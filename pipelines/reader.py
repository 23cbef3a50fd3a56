"""Read-only SQL on OrderWatch's ClickHouse, for any command.

A server, or embedded data no other process holds, is queried directly. Embedded data held
by a running `orderwatch run`/`consume` (chDB locks its directory) is queried through that
process's loopback `/query` endpoint, in JSON so numbers stay numbers.
"""

from __future__ import annotations

import os
import re

import httpx
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from orderwatch.config import ConfigError, Settings
from orderwatch.pipelines.clickhouse_client import (
    Target,
    connect,
    connect_read_only,
    held_by_another_process,
    parse_dsn,
    write_lock,
)
from orderwatch.pipelines.http_endpoint import QueryFailed, QueryRunner


def reader(settings: Settings) -> QueryRunner:
    target = parse_dsn(settings.clickhouse_dsn, settings.clickhouse_database)
    if target.embedded and not os.path.isdir(target.path):
        # opening it would create an empty one: a mistyped path would look like no data
        raise _no_data_yet(target)
    if held_by_another_process(target):
        return _through_running_process(f"http://{settings.metrics_host}:"
                                        f"{settings.metrics_port}/query?format=json")
    return read_only(target)


def _no_data_yet(target: Target) -> ConfigError:
    return ConfigError(f"no OrderWatch data in {target.redacted()} yet: run replay, run or "
                       "consume first")


def read_only(target: Target) -> QueryRunner:
    """Queries that cannot change the data: embedded, through a session with readonly=1,
    as a running process answers them; on a server, with the rights of the DSN's user."""
    client = connect_read_only(target) if target.embedded else connect(target)
    with write_lock:
        _use_orderwatch_database(client, target)

    def query(sql: str) -> tuple[list[str], list[tuple]]:
        try:
            with write_lock:  # one chDB engine per process, shared with this process's writer
                result = client.query(checked_query(sql, client))
        except DatabaseError as exc:
            raise QueryFailed(_FORMAT_QUERY_SCOPE.sub("", str(exc))) from None
        return list(result.column_names), result.result_rows

    return query


def _use_orderwatch_database(client: Client, target: Target) -> None:
    """Unqualified names are OrderWatch's tables (`FROM events`), as in ClickHouse's own
    client given a database. Not before the database exists: every query would fail."""
    if client.database == target.database:
        return
    found = client.query("SELECT count() FROM system.databases WHERE name = {d:String}",
                         parameters={"d": target.database}).result_rows[0][0]
    if not found:  # rather than "Database … does not exist"
        raise _no_data_yet(target)
    client.database = target.database


# ClickHouse's canonical text has plain 'strings' and `names` only (no heredocs, comments)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"")
# where a syntax error names our wrapper rather than the query the user typed
_FORMAT_QUERY_SCOPE = re.compile(r"\s*:?\s*In scope SELECT formatQuerySingleLine\(.*\)\.", re.S)


def checked_query(sql: str, client: Client) -> str:
    """The query as ClickHouse's own parser writes it, checked for what `readonly=1` does
    not stop: chDB writes `INTO OUTFILE` files as a client would. The parser refuses
    `a; b`, which chDB would otherwise run statement after statement (a server refuses
    them too). Results come back in a format orderwatch picks (clickhouse-connect appends
    its own FORMAT), so the query may not name one."""
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    canonical = client.query("SELECT formatQuerySingleLine({q:String})",
                             parameters={"q": text}).result_rows[0][0]
    code = _QUOTED.sub(" ", canonical)
    if re.search(r"\bINTO\s+OUTFILE\b", code, re.I):
        raise QueryFailed("INTO OUTFILE is not allowed: the results come back here")
    if re.search(r"\bFORMAT\s+\w+\s*$", code, re.I):
        raise QueryFailed("leave out the FORMAT clause: orderwatch picks the output format")
    return canonical


def _through_running_process(url: str) -> QueryRunner:
    def query(sql: str) -> tuple[list[str], list[tuple]]:
        try:
            response = httpx.post(url, content=sql.encode(), timeout=120)
        except httpx.TransportError as exc:
            raise ConfigError(f"the embedded data is locked by another process and {url} "
                              f"does not answer ({exc})") from None
        if response.status_code != 200:
            raise QueryFailed(response.text)
        answer = orjson.loads(response.content)
        return answer["columns"], [tuple(row) for row in answer["rows"]]

    return query
