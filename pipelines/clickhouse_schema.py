"""ClickHouse tables, as numbered migrations that run the same on chDB and on a server.

Every table is a ReplacingMergeTree keyed on the row's identity, so at-least-once
delivery and replaying a file twice converge to the same rows. `settle()` merges parts
(OPTIMIZE … FINAL) so plain `count()` already sees the converged state.
"""

from __future__ import annotations

from collections.abc import Sequence

# (version, statement); a statement uses {db} for the database name.
MIGRATIONS: Sequence[tuple[int, str]] = (
    (1, """
CREATE TABLE IF NOT EXISTS {db}.events (
    event_id     String,
    stream       LowCardinality(String),
    order_no     String,
    occurred_at  DateTime64(3, 'UTC'),
    kind         LowCardinality(String),
    payload      String,
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (order_no, event_id)
"""),
    (2, """
CREATE TABLE IF NOT EXISTS {db}.order_state (
    order_no        String,
    status          LowCardinality(String),
    status_at       DateTime64(3, 'UTC'),
    created_at      Nullable(DateTime64(3, 'UTC')),
    left_pending_at Nullable(DateTime64(3, 'UTC')),
    user_id         String,
    channel         LowCardinality(String),
    gateway         LowCardinality(String),
    amount          Nullable(Float64),
    warehouse       LowCardinality(String),
    carrier         LowCardinality(String),
    waybill_no      String,
    events          UInt32,
    last_event_at   DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(events)
ORDER BY order_no
"""),
    (3, """
CREATE TABLE IF NOT EXISTS {db}.health_metrics (
    bucket     DateTime('UTC'),
    metric     LowCardinality(String),
    dimension  LowCardinality(String),
    dim_value  String,
    value      Float64
) ENGINE = ReplacingMergeTree
ORDER BY (metric, dimension, dim_value, bucket)
"""),
    (4, """
CREATE TABLE IF NOT EXISTS {db}.alerts (
    alert        LowCardinality(String),
    status       LowCardinality(String),
    severity     LowCardinality(String),
    fingerprint  String,
    labels       Map(String, String),
    order_no     String,
    starts_at    DateTime64(3, 'UTC'),
    ends_at      Nullable(DateTime64(3, 'UTC')),
    value        Float64,
    summary      String
) ENGINE = ReplacingMergeTree
ORDER BY (alert, fingerprint, status, starts_at)
"""),
    (5, """
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    id           FixedString(16),
    source       String,
    position     UInt64,
    payload      String,
    reason       String,
    received_at  DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY id
"""),
    (6, """
CREATE TABLE IF NOT EXISTS {db}.order_risk (
    order_no      String,
    risk          Float32,
    max_risk      Float32,
    reasons       Array(String),
    reason_codes  Array(LowCardinality(String)),
    channel       LowCardinality(String),
    updated_at    DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY order_no
"""),
    (7, "ALTER TABLE {db}.order_state ADD COLUMN IF NOT EXISTS paid_at "
        "Nullable(DateTime64(3, 'UTC'))"),
    (8, "ALTER TABLE {db}.order_state ADD COLUMN IF NOT EXISTS shipped_at "
        "Nullable(DateTime64(3, 'UTC'))"),
    (9, "ALTER TABLE {db}.order_state ADD COLUMN IF NOT EXISTS first_scan_at "
        "Nullable(DateTime64(3, 'UTC'))"),
    # Raw data expires by arrival time, not event time: a backfill of old events is kept.
    # Change the retention with the same ALTER and another INTERVAL.
    (10, "ALTER TABLE {db}.events MODIFY TTL toDateTime(ingested_at) + INTERVAL 90 DAY"),
    (11, "ALTER TABLE {db}.dead_letters MODIFY TTL toDateTime(received_at) + INTERVAL 30 DAY"),
)


def ticks_ms(ts: float | None) -> int | None:
    """POSIX seconds → a DateTime64(3) value as clickhouse-connect writes ints: as they are.
    Rounded to the microsecond then truncated to the millisecond, as a datetime would be;
    skipping the datetime saves two conversions per value on the hot path."""
    return None if ts is None else round(ts * 1_000_000) // 1000


TABLES = ("events", "order_state", "health_metrics", "alerts", "dead_letters", "order_risk")

COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("event_id", "stream", "order_no", "occurred_at", "kind", "payload"),
    "order_state": ("order_no", "status", "status_at", "created_at", "left_pending_at",
                    "user_id", "channel", "gateway", "amount", "warehouse", "carrier",
                    "waybill_no", "events", "last_event_at", "paid_at", "shipped_at",
                    "first_scan_at"),
    "health_metrics": ("bucket", "metric", "dimension", "dim_value", "value"),
    "alerts": ("alert", "status", "severity", "fingerprint", "labels", "order_no",
               "starts_at", "ends_at", "value", "summary"),
    "dead_letters": ("id", "source", "position", "payload", "reason"),
    "order_risk": ("order_no", "risk", "max_risk", "reasons", "reason_codes", "channel",
                   "updated_at"),
}


def migrate(client, database: str) -> int:
    """Create the database and apply pending migrations; returns the schema version."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version")
    done = {row[0] for row in client.query(
        f"SELECT version FROM {database}.schema_migrations").result_rows}
    for version, statement in MIGRATIONS:
        if version in done:
            continue
        client.command(statement.format(db=database))
        client.insert(f"{database}.schema_migrations", [[version]], column_names=["version"])
    return max(v for v, _ in MIGRATIONS)


def settle(client, database: str) -> None:
    """Merge all parts so duplicates from redelivery or a second replay are gone."""
    for table in TABLES:
        client.command(f"OPTIMIZE TABLE {database}.{table} FINAL")
