"""The work of one event in OrderWatch's own code, outside Bytewax and ClickHouse.

    python benchmarks/instruction_loop.py ROOT EVENTS.jsonl N

Decodes the first N lines of EVENTS.jsonl in chunks of 2,000, passes each chunk through
one order shard and its output through one aggregate shard, as the dataflow does, and
prints `alerts A rows R`. The `orderwatch` package is loaded from the checkout at ROOT
(its `orderwatch/`, `detectors/`, `pipelines/`... folders), so that
`benchmarks/instructions.py` can measure a baseline checkout beside this one. A baseline
must share this loop's calls (`decode`, `OrderShard.process`, `ShardInput`,
`AggregateShard.process`): any commit since the shards took chunks.
"""

from __future__ import annotations

import gc
import importlib.util
import sys

PACKAGES = {"orderwatch": "orderwatch", "orderwatch.engine": "engine",
            "orderwatch.pipelines": "pipelines", "orderwatch.detectors": "detectors",
            "orderwatch.alerts": "alerts", "orderwatch.dashboards": "dashboards"}
CHUNK = 2_000


def load_checkout(root: str) -> None:
    """Import `orderwatch` and its subpackages from the folders of the checkout at root."""
    loaded = []
    for name, folder in PACKAGES.items():
        spec = importlib.util.spec_from_file_location(
            name, f"{root}/{folder}/__init__.py", submodule_search_locations=[f"{root}/{folder}"])
        assert spec is not None and spec.loader is not None, (root, folder)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append((spec, module))
    for spec, module in loaded:
        spec.loader.exec_module(module)  # type: ignore[union-attr]


def run(lines: list[bytes]) -> tuple[int, int]:
    """(alerts, ClickHouse rows) of the events in lines, through both kinds of shard."""
    from orderwatch.config import PipelineSettings, Settings
    from orderwatch.events import InvalidEvent, decode
    from orderwatch.pipelines.aggregate_shard import AggregateShard
    from orderwatch.pipelines.order_shard import OrderShard, ShardInput

    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1))
    orders, aggregates = OrderShard(settings, "000"), AggregateShard(settings, "000")
    alerts = rows = 0
    for start in range(0, len(lines), CHUNK):
        events = []
        for line in lines[start:start + CHUNK]:
            try:  # noqa: SIM105 (contextlib.suppress would add its own cost to every event)
                events.append(decode(line))
            except InvalidEvent:
                pass
        ended = start + CHUNK >= len(lines)
        out = orders.process(ShardInput("000", events, "p", max(e.ts for e in events),
                                        ended, 1))
        alerts += len(out.alerts)
        rows += sum(map(len, out.rows.values()))
        for _, inp in out.to_aggregates:
            alerts += len(aggregates.process(inp).alerts)
    return alerts, rows


def main(argv: list[str]) -> int:
    root, path, n = argv
    gc.set_threshold(100_000, 50, 100)  # as the pipeline's runner sets it
    load_checkout(root)
    with open(path, "rb") as f:
        lines = f.read().splitlines()[:int(n)]
    alerts, rows = run(lines)
    print(f"alerts {alerts} rows {rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
