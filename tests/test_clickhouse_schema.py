"""Migrations on the real embedded engine (chDB through clickhouse-connect)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orderwatch.config import ConfigError
from orderwatch.pipelines.clickhouse_client import connect, connect_read_only, parse_dsn
from orderwatch.pipelines.clickhouse_schema import COLUMNS, MIGRATIONS, TABLES, migrate


@pytest.fixture(scope="module")
def chdb(chdb_dsn):
    return connect(parse_dsn(chdb_dsn))


def test_migrations_are_idempotent_and_create_every_table(chdb):
    assert migrate(chdb, "schema_test") == MIGRATIONS[-1][0]
    assert migrate(chdb, "schema_test") == MIGRATIONS[-1][0]
    versions = chdb.query("SELECT count() FROM schema_test.schema_migrations FINAL").result_rows
    assert versions == [(len(MIGRATIONS),)]
    for table in TABLES:
        columns = {row[0] for row in chdb.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
            parameters={"db": "schema_test", "t": table}).result_rows}
        assert set(COLUMNS[table]) <= columns, table


def test_dsn_parsing():
    embedded = parse_dsn("chdb://./data/x")
    assert embedded.embedded and embedded.dsn.startswith("chdb:///")
    server = parse_dsn("http://ow:secret@ch:8123/shop")
    assert not server.embedded and server.database == "shop"
    assert "secret" not in server.redacted()
    for bad in ("chdb://", "ftp://x", "ch:8123", "http://ch:8123/x;DROP TABLE y"):
        with pytest.raises(ConfigError):
            parse_dsn(bad)


@pytest.mark.parametrize("password", ["p@ss", "a/b", "x#y", "q?r", "%2F+ok", "plain", "sp ace'q"])
def test_a_server_password_may_hold_what_a_url_reserves(password):
    """docker-compose pastes CLICKHOUSE_PASSWORD into the DSN unchanged; "x#y" used to
    end in "Port could not be cast to integer value as 'x'", "a/b" in a database 'b@ch'."""
    server = parse_dsn(f"https://ow:{password}@ch.example:8443/shop")
    assert (server.host, server.port, server.username, server.database, server.secure) == (
        "ch.example", 8443, "ow", "shop", True)
    assert server.password == password.replace("%2F", "/")  # percent-encoding still works
    assert server.redacted() == "https://ow:***@ch.example:8443/shop"


def test_a_dsn_port_that_is_no_number_is_a_configuration_error():
    with pytest.raises(ConfigError, match=r"port after 'ch' must be a number") as refused:
        parse_dsn("http://ow:s3cret@ch:80a/shop")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ConfigError) as quoted:  # the log redaction stops at a quote
        parse_dsn("http://ow:it's secret@ch:80a/shop")
    assert "secret" not in str(quoted.value) and "http://ow:***@ch:80a" in str(quoted.value)
    assert parse_dsn("http://ch").port == 8123 and parse_dsn("http://ch").username == "default"
    assert parse_dsn("https://ch/x").port == 8443  # was 8123, ClickHouse's plain HTTP port


def test_raw_data_expires_by_arrival_time_not_event_time(chdb):
    migrate(chdb, "ttl_test")
    ddl = chdb.query("SELECT name, create_table_query FROM system.tables "
                     "WHERE database = 'ttl_test'").result_rows
    ttl = {name for name, query in ddl if " TTL " in query}
    assert ttl == {"events", "dead_letters"}
    old, new = datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC)
    columns = ["event_id", "stream", "order_no", "occurred_at", "kind", "payload", "ingested_at"]
    chdb.insert("ttl_test.events", [["expired", "order", "O1", new, "create", "{}", old],
                                    ["backfill", "order", "O2", old, "create", "{}", new]],
                column_names=columns)
    chdb.command("OPTIMIZE TABLE ttl_test.events FINAL")
    kept = chdb.query("SELECT event_id FROM ttl_test.events").result_rows
    assert kept == [("backfill",)]


def test_the_read_only_client_is_one_per_data_path_and_refuses_writes(chdb, chdb_dsn):
    """The weekly robot asks for a query runner per query; each used to open a session."""
    migrate(chdb, "read_only_test")
    target = parse_dsn(chdb_dsn, "read_only_test")
    reader = connect_read_only(target)
    assert connect_read_only(target) is reader
    assert reader.query("SELECT count() FROM read_only_test.events").result_rows == [(0,)]
    with pytest.raises(Exception, match="readonly"):
        reader.command("DROP TABLE read_only_test.events")
    assert chdb.query("EXISTS TABLE read_only_test.events").result_rows == [(1,)]


def test_the_server_is_asked_with_the_password_as_written(tmp_path):
    """What reaches the server: a listener on loopback keeps the first request's
    credentials and answers 500, which clickhouse-connect reports as a failure."""
    import base64
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            seen.append(conn.recv(65536))
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n"
                         b"Connection: close\r\n\r\nnope")
        listener.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(ConfigError, match="cannot use ClickHouse at http://ow:\\*\\*\\*@127"):
        connect(parse_dsn(f"http://ow:p@ss/w#rd@127.0.0.1:{port}/shop"))
    credentials = base64.b64encode(b"ow:p@ss/w#rd")
    assert b"Authorization: Basic " + credentials in seen[0], seen[0]
