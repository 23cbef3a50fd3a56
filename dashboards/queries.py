"""Every query a dashboard runs, with Grafana's macros and variables expanded.

Used to prove panels against the real backends. The ClickHouse macros follow the
`grafana-clickhouse-datasource` documentation:
`$__timeFilter(c)` → `c >= toDateTime(from) AND c <= toDateTime(to)`,
`$__timeFilter_ms(c)` → the same with `fromUnixTimestamp64Milli(ms)`,
`$__fromTime`/`$__toTime` → `toDateTime(…)`,
`$__timeInterval(c)` → `toStartOfInterval(toDateTime(c), INTERVAL n second)`,
`$__timeInterval_ms(c)` → `toStartOfInterval(toDateTime64(c, 3), INTERVAL n millisecond)`,
`$__interval_s` → n. A multi-value variable with "All" selected expands to every value:
`${v:singlequote}` → `'a','b'` in SQL (a ' inside a value as \\'), `$v` → `(a|b)` as a
PromQL regex.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GRAFANA = Path(__file__).with_name("grafana")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    datasource: str  # "prometheus" or "grafana-clickhouse-datasource"
    text: str  # PromQL or SQL, as written in the panel

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel}"


def panel_queries(directory: Path = GRAFANA) -> Iterator[PanelQuery]:
    for path in sorted(directory.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                kind = (target.get("datasource") or panel["datasource"])["type"]
                text = target.get("expr") if kind == "prometheus" else target.get("rawSql")
                yield PanelQuery(board["uid"], f"{panel['title']} [{target.get('refId', 'A')}]",
                                 kind, text)


def expand_sql(sql: str, start: float, end: float, variables: dict[str, list[str]],
               interval_s: int = 60) -> str:
    def ms(ts: float) -> int:
        return round(ts * 1000)

    rules = [
        (r"\$__timeFilter_ms\(([^)]+)\)", lambda m: f"{m[1]} >= fromUnixTimestamp64Milli("
         f"{ms(start)}) AND {m[1]} <= fromUnixTimestamp64Milli({ms(end)})"),
        (r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m[1]} >= toDateTime({int(start)}) AND "
         f"{m[1]} <= toDateTime({int(end)})"),
        (r"\$__timeInterval_ms\(([^)]+)\)", lambda m: f"toStartOfInterval(toDateTime64("
         f"{m[1]}, 3), INTERVAL {interval_s * 1000} millisecond)"),
        (r"\$__timeInterval\(([^)]+)\)", lambda m: f"toStartOfInterval(toDateTime({m[1]}), "
         f"INTERVAL {interval_s} second)"),
        (r"\$__fromTime\b", lambda m: f"toDateTime({int(start)})"),
        (r"\$__toTime\b", lambda m: f"toDateTime({int(end)})"),
        (r"\$__interval_s\b", lambda m: str(interval_s)),
        (r"\$\{(\w+):singlequote\}",  # Grafana escapes ' with a backslash, nothing else
         lambda m: ",".join("'" + v.replace("'", "\\'") + "'" for v in variables[m[1]])),
    ]
    for pattern, replace in rules:
        sql = re.sub(pattern, replace, sql)
    return sql


def expand_promql(expr: str, variables: dict[str, list[str]]) -> str:
    return re.sub(r"\$(\w+)", lambda m: "(" + "|".join(variables[m[1]]) + ")"
                  if m[1] in variables else m[0], expr)
