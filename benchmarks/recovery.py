"""What Bytewax recovery snapshots cost `orderwatch replay` (issue #8).

    python -m benchmarks.recovery [--orders 20000] [--open-orders 300000]

A snapshot pickles each order shard whole, and every shard is woken by every batch (for
the watermark), so each snapshot interval costs time in proportion to the open orders.
Two files, each replayed without recovery (the baseline, in the same run), then with
`-r DIR -s 10` (the default interval) and `-s 1`: a simulated shop (every fault scenario)
and create-only orders that all stay open. Writes `benchmarks/reports/recovery.json` and
`recovery.md`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.performance import first_create, open_orders_file, replay, shop_file
from benchmarks.report_files import write_report

INTERVALS_S = (None, 10.0, 1.0)  # None: no recovery directory, the baseline


def measure(events: Path, work: Path) -> list[dict]:
    runs = []
    for interval in INTERVALS_S:
        extra = () if interval is None else (
            "-r", str(work / f"recovery-{time.monotonic_ns()}"), "-s", str(interval))
        run = replay(events, work, *extra)
        runs.append({"snapshot_interval_s": interval, "events": run["events"],
                     "flow_s": run["flow_s"], "events_per_s": run["events_per_s"],
                     "open_orders_at_end": run["open_orders"]})
        print(f"{events.name:16} -s {interval or '-':>4}  {run['events_per_s']:>7,} events/s",
              flush=True)
    for run in runs:
        run["of_baseline"] = round(run["events_per_s"] / runs[0]["events_per_s"], 2)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recovery")
    parser.add_argument("--orders", type=int, default=20_000,
                        help="orders in the simulated file (20,000 ≈ 265,000 events)")
    parser.add_argument("--open-orders", type=int, default=300_000)
    args = parser.parse_args(argv)
    report: dict = {"python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory(prefix="ow-recovery-") as tmp:
        work = Path(tmp)
        shop = work / "shop.jsonl"
        shop_file(shop, args.orders)
        opened = work / "open.jsonl"
        open_orders_file(opened, args.open_orders, first_create(shop))
        report["simulated"] = {"orders": args.orders, "runs": measure(shop, work)}
        report["open"] = {"orders": args.open_orders, "runs": measure(opened, work)}
    write_report("recovery", report, markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    lines = [f"Python {r['python']} on {r['machine']}.", "",
             "| file | snapshots | events/s | of no recovery |", "|---|---|---|---|"]
    for key, label in (("simulated", "simulated shop, {:,} orders"),
                       ("open", "{:,} create-only orders, all open")):
        for run in r[key]["runs"]:
            interval = run["snapshot_interval_s"]
            lines.append(f"| {label.format(r[key]['orders'])} | "
                         f"{'none' if interval is None else f'every {interval:g} s'} | "
                         f"{run['events_per_s']:,} | {run['of_baseline']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
