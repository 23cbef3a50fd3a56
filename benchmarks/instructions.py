"""Instructions per event in OrderWatch's own code, for this checkout and a baseline.

    python -m benchmarks.instructions [--baseline REV] [--events 20000]

Seconds on this machine move with the day; the instructions retired for the same work do
not. This runs `benchmarks/instruction_loop.py` (decode → order shard → aggregate shard,
without Bytewax or ClickHouse) under valgrind's callgrind on the first 2,000 and the first
N events of the throughput file's shop (every fault, seed 8), and divides the difference
by the events between, so start-up and imports cancel out. With --baseline, the same runs
on a git worktree of REV, in the same run, through the same loop. Takes about 3 minutes per
checkout. Writes `benchmarks/reports/instructions.json` and `instructions.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.performance import shop_file
from benchmarks.report_files import write_report

ROOT = Path(__file__).resolve().parents[1]
LOOP = Path(__file__).with_name("instruction_loop.py")
FIRST = 2_000  # the events whose cost (with start-up) is taken off


def instructions(root: Path, events: Path, n: int, work: Path) -> tuple[int, str]:
    """(instructions retired, the loop's output) for the first n events, checkout at root."""
    out_file = work / f"callgrind.{n}.out"
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
         sys.executable, str(LOOP), str(root), str(events), str(n)],
        capture_output=True, text=True, check=False, cwd=work)
    if done.returncode:
        raise SystemExit(f"the loop failed under callgrind at {root}: {done.stderr[-2000:]}")
    found = re.search(r"^summary: (\d+)$", out_file.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no summary line in {out_file}")
    return int(found.group(1)), done.stdout.strip().splitlines()[-1]


def per_event(root: Path, events: Path, n: int, work: Path) -> dict:
    first, _ = instructions(root, events, FIRST, work)
    total, output = instructions(root, events, n, work)
    return {"instructions_per_event": round((total - first) / (n - FIRST)),
            "loop_output": output}


@contextlib.contextmanager
def worktree(rev: str, work: Path) -> Iterator[tuple[Path, str]]:
    """A detached git worktree of rev, removed afterwards; yields (path, full commit)."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = work / "baseline"
    git("worktree", "add", "--detach", str(path), commit)
    try:
        yield path, commit
    finally:
        git("worktree", "remove", "--force", str(path))


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"git {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--baseline", metavar="REV",
                        help="a commit to measure beside this checkout, in the same run")
    parser.add_argument("--events", type=int, default=20_000,
                        help="events measured (the first 2,000 are taken off)")
    args = parser.parse_args(argv)
    if args.events <= FIRST:
        parser.error(f"--events must be more than {FIRST:,}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory(prefix="ow-instr-") as tmp:
        work = Path(tmp)
        events = work / "events.jsonl"
        shop_file(events, orders=args.events // 8 + 1_000)  # ~12 events an order
        report: dict = {"events": args.events, "first_taken_off": FIRST, "checkouts": []}
        if args.baseline:
            with worktree(args.baseline, work) as (path, commit):
                report["checkouts"].append(
                    {"checkout": f"baseline {commit[:7]}", **per_event(path, events,
                                                                       args.events, work)})
                print(f"baseline {commit[:7]}: {report['checkouts'][-1]}", flush=True)
        status = git("status", "--porcelain", "--untracked-files=no")
        here = git("rev-parse", "--short=7", "HEAD") + (" with changes" if status else "")
        report["checkouts"].append({"checkout": f"this checkout ({here})",
                                    **per_event(ROOT, events, args.events, work)})
        print(f"this checkout: {report['checkouts'][-1]}", flush=True)
    if args.baseline:
        before, after = (c["instructions_per_event"] for c in report["checkouts"])
        report["change"] = round(after / before - 1, 4)
    write_report("instructions", report, markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    lines = [f"Instructions per event (callgrind), events {r['first_taken_off']:,} to "
             f"{r['events']:,} of the shop, decode → order shard → aggregate shard.", "",
             "| checkout | instructions per event | loop output |", "|---|---|---|"]
    for c in r["checkouts"]:
        lines.append(f"| {c['checkout']} | {c['instructions_per_event']:,} | "
                     f"{c['loop_output']} |")
    if "change" in r:
        lines += ["", f"Change against the baseline: {r['change']:+.1%}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
