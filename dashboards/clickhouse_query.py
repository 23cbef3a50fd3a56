"""A `grafana-clickhouse-datasource` (v4) query for grafana-foundation-sdk panels.

The SDK ships builders for Prometheus and other core data sources but not for the
ClickHouse plugin. This builder emits the plugin's query model: raw SQL in the SQL
editor, as a table or a time series.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "orderwatch-clickhouse"}
TIMESERIES, TABLE = 0, 1  # the plugin's Format enum


class ClickHouseQuery(cogvariants.Dataquery):
    def __init__(self, raw_sql: str = "", fmt: int = TABLE, ref_id: str = "A") -> None:
        self.raw_sql = raw_sql
        self.format = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, Any]:
        return {"refId": self.ref_id, "datasource": DATASOURCE, "editorType": "sql",
                "queryType": "timeseries" if self.format == TIMESERIES else "table",
                "format": self.format, "rawSql": self.raw_sql}


class Query(cogbuilder.Builder[ClickHouseQuery]):
    def __init__(self, sql: str) -> None:
        self._internal = ClickHouseQuery(sql.strip())

    def build(self) -> ClickHouseQuery:
        return self._internal

    def time_series(self) -> Query:
        self._internal.format = TIMESERIES
        return self

    def ref_id(self, ref_id: str) -> Query:
        self._internal.ref_id = ref_id
        return self
