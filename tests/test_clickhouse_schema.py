"""Migrations on the real embedded engine (chDB through clickhouse-connect)."""

from __future__ import annotations

import pytest

from orderwatch.config import ConfigError
from orderwatch.pipelines.clickhouse_client import connect, parse_dsn
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
    for bad in ("chdb://", "ftp://x", "ch:8123"):
        with pytest.raises(ConfigError):
            parse_dsn(bad)
