"""benchmarks/instruction_loop.py: the loop `benchmarks.instructions` runs under callgrind
does the dataflow's work, on the checkout it is pointed at."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from benchmarks import instruction_loop
from benchmarks.instructions import markdown
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig, Simulator

ROOT = Path(__file__).resolve().parents[1]


def test_the_loop_run_on_a_checkout_does_what_it_does_in_process(tmp_path):
    sim = Simulator(SimConfig(seed=8, orders=400, faults=frozenset(SCENARIOS)))
    lines = [orjson.dumps(data) for data in sim.events()][:4_500]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\nnot json\n")
    alerts, rows = instruction_loop.run([*lines, b"not json"])
    assert alerts > 10 and rows > len(lines)  # events, order states, risk, metrics
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "instruction_loop.py"),
                           str(ROOT), str(path), str(len(lines) + 1)],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip() == f"alerts {alerts} rows {rows}"
    # pointed at another checkout (a copy whose order shard writes no `events` rows), the
    # loop runs that checkout's code, not the installed package's
    other = tmp_path / "other"
    for folder in instruction_loop.PACKAGES.values():
        shutil.copytree(ROOT / folder, other / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shard = other / "pipelines" / "order_shard.py"
    code = shard.read_text()
    assert 'out.rows["events"] = batch.event_rows' in code
    shard.write_text(code.replace('out.rows["events"] = batch.event_rows', 'out.rows["events"] = []'))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "instruction_loop.py"),
                           str(other), str(path), str(len(lines) + 1)],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    fewer = rows - 4_300  # every event fresh but the redeliveries
    assert done.stdout.strip().startswith(f"alerts {alerts} rows ")
    assert int(done.stdout.split()[-1]) < fewer, (rows, done.stdout)


def test_the_report_says_the_change_against_the_baseline():
    report = {"events": 20_000, "first_taken_off": 2_000, "change": -0.076,
              "checkouts": [{"checkout": "baseline 5e3da93", "instructions_per_event": 269_873,
                             "loop_output": "alerts 1 rows 2"},
                            {"checkout": "this checkout (72e84e5)",
                             "instructions_per_event": 249_369,
                             "loop_output": "alerts 1 rows 2"}]}
    text = markdown(report)
    assert "| baseline 5e3da93 | 269,873 | alerts 1 rows 2 |" in text
    assert "Change against the baseline: -7.6%." in text
