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
