"""`orderwatch sql` and `/query` answer in ClickHouse's TabSeparatedWithNames."""

from __future__ import annotations

import clickhouse_connect

from orderwatch.pipelines.http_endpoint import tab_separated


def test_tab_separated_is_what_clickhouse_itself_writes_null_included(chdb_dsn):
    """NULL used to print as an empty field, the same as an empty string; ClickHouse
    writes it as \\N."""
    query = ("SELECT NULL AS a, '' AS b, 'x\ty\\\\z\nw' AS `c\td`, toNullable(3) AS e, "
             "CAST(NULL AS Nullable(String)) AS f")
    columns = ["a", "b", "c\td", "e", "f"]
    rows = [(None, "", "x\ty\\z\nw", 3, None)]
    # The session's chDB path: chDB allows one data path per process.
    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    expected = client.raw_query(query, fmt="TabSeparatedWithNames").decode()
    assert tab_separated(columns, rows) == expected
