"""Detection quality on unseen seeds: every alert of the catalogue and the risk score.

    python -m benchmarks.detection [--seeds 2001,2002,2003] [--orders 20000]

For each seed (none used in training the risk model), the engine simulates traffic with
every fault scenario and the healthy noise on. `orderwatch replay` processes it as a
user would, and the alerts are matched to the ground-truth labels
(`engine/scoring.py`). The JSON report goes to `benchmarks/reports/detection.json`, and
the Markdown table to `benchmarks/reports/detection.md`, which the README quotes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from sklearn.metrics import roc_auc_score

from benchmarks.orderwatch_cli import orderwatch
from benchmarks.report_files import REPORTS, write_report
from orderwatch.config import DEFAULT_THRESHOLDS
from orderwatch.engine.scoring import AlertQuality, score

AGGREGATE = ("callback_failure_rate", "callback_cert_expired", "lock_contention",
             "pending_payment_backlog", "channel_degraded", "metric_anomaly")
# The `all` run labels no metric_anomaly: its scenario (gateway_degrading) is not part of
# `all`, and the run's cold start and fault aftermaths are real but unlabelled changes of
# the series. Its alerts are counted in the table and judged by tests/test_metric_anomaly.
UNJUDGED = ("metric_anomaly",)
# the contract's time thresholds: a per-order alert may come this late (+1 min)
THRESHOLD_S = {"callback_lost": 600, "silent_shipment": 24 * 3600, "stuck_order": 2 * 3600}


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def run_seed(seed: int, orders: int, work: Path) -> dict:
    events, labels, alerts = work / f"{seed}.jsonl", work / f"{seed}.labels.jsonl", \
        work / f"{seed}.alerts.jsonl"
    orderwatch("simulate", "--out", str(events), "--labels", str(labels), "--orders",
               str(orders), "--faults", "all", "--seed", str(seed))
    dsn = f"chdb://{work / f'ch-{seed}'}"
    started = time.monotonic()
    orderwatch("replay", str(events), "--clickhouse", dsn, "--alerts-out", str(alerts))
    replay_s = time.monotonic() - started
    risk = orderwatch("sql", "--clickhouse", dsn,
                      "SELECT order_no, max_risk FROM orderwatch.order_risk FINAL")
    max_risk = {line.split("\t")[0]: float(line.split("\t")[1])
                for line in risk.strip().splitlines()[1:]}
    return {"seed": seed, "labels": read_jsonl(labels), "alerts": read_jsonl(alerts),
            "max_risk": max_risk, "replay_s": replay_s}


def risk_quality(runs: list[dict]) -> dict:
    truth, scores, top_ok, top_n = [], [], 0, 0
    tp = fp = fn = 0
    review = DEFAULT_THRESHOLDS.risk_review
    for run in runs:
        faults: dict[str, set[str]] = {}
        for label in run["labels"]:
            if label["order_no"] and label["fault"] != "order_risk_high":
                faults.setdefault(label["order_no"], set()).add(label["fault"])
        broken = {label["order_no"] for label in run["labels"]
                  if label["fault"] == "order_risk_high"}
        for order_no, risk in run["max_risk"].items():
            is_broken = order_no in broken
            truth.append(is_broken)
            scores.append(risk)
            flagged = risk > review
            tp += flagged and is_broken
            fp += flagged and not is_broken
            fn += is_broken and not flagged
        first_reason: dict[str, str] = {}
        for alert in run["alerts"]:
            if alert["alert"] == "order_risk_high" and alert["status"] == "firing":
                first_reason.setdefault(alert["labels"]["order_no"], alert["labels"]["reason"])
        for order_no in broken:
            top_n += 1
            top_ok += first_reason.get(order_no) in faults.get(order_no, set())
    return {"orders": len(truth), "broken_orders": int(sum(truth)),
            "roc_auc": round(float(roc_auc_score(truth, scores)), 4),
            "review_threshold": review,
            "precision_at_review": round(tp / (tp + fp), 4) if tp + fp else 1.0,
            "recall_at_review": round(tp / (tp + fn), 4) if tp + fn else 1.0,
            "top_reason_names_fault": round(top_ok / top_n, 4) if top_n else 1.0}


def combine(runs: list[dict]) -> dict[str, AlertQuality]:
    total: dict[str, AlertQuality] = {}
    for run in runs:
        for name, q in score(run["alerts"], run["labels"]).items():
            t = total.setdefault(name, AlertQuality(name))
            t.labelled += q.labelled
            t.detected += q.detected
            t.alerts += q.alerts
            t.false_alerts += q.false_alerts
            t.delays_s.extend(q.delays_s)
    return total


def verdicts(alerts: dict[str, AlertQuality], risk: dict) -> list[str]:
    failures = []
    for name, q in sorted(alerts.items()):
        if name in UNJUDGED:
            continue
        floor = 0.95 if name in AGGREGATE else 0.98
        if q.precision < 0.98 or q.recall < floor:
            failures.append(f"{name}: precision {q.precision:.4f}, recall {q.recall:.4f}")
        if name not in AGGREGATE and q.delays_s:
            limit = THRESHOLD_S.get(name, 0) + 60
            if statistics.median(q.delays_s) > limit:
                failures.append(f"{name}: median delay {statistics.median(q.delays_s):.0f} s")
    if risk["roc_auc"] < 0.95:
        failures.append(f"risk ROC AUC {risk['roc_auc']}")
    if risk["top_reason_names_fault"] < 0.90:
        failures.append(f"top reason names the fault {risk['top_reason_names_fault']}")
    return failures


def markdown(alerts: dict[str, AlertQuality], risk: dict, seeds: list[int], orders: int) -> str:
    lines = [f"Seeds {', '.join(map(str, seeds))} (unseen in training), {orders:,} orders each, "
             "every fault scenario and the healthy noise on.", "",
             "| alert | kind | labelled | detected | false alerts | precision | recall | "
             "median delay |", "|---|---|---|---|---|---|---|---|"]
    for name, q in sorted(alerts.items()):
        delay = q.median_delay_s
        shown = "-" if delay is None else (f"{delay / 3600:.1f} h" if delay >= 7200
                                          else f"{delay / 60:.1f} min")
        kind = "aggregate" if name in AGGREGATE else "per order"
        if name in UNJUDGED:
            lines.append(f"| `{name}` | {kind} | not labelled in `all` | - | {q.alerts:,} "
                         "alerts | - | - | - |")
            continue
        lines.append(f"| `{name}` | {kind} | {q.labelled:,} | {q.detected:,} | "
                     f"{q.false_alerts:,} | {q.precision:.4f} | {q.recall:.4f} | {shown} |")
    lines += ["", "| risk score | value |", "|---|---|",
              f"| orders scored | {risk['orders']:,} ({risk['broken_orders']:,} broken) |",
              f"| ROC AUC (highest score per order) | {risk['roc_auc']:.4f} |",
              f"| precision at review threshold (> {risk['review_threshold']:.0f}) | "
              f"{risk['precision_at_review']:.4f} |",
              f"| recall at review threshold | {risk['recall_at_review']:.4f} |",
              f"| top reason names the injected fault | {risk['top_reason_names_fault']:.4f} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="2001,2002,2003")
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="orderwatch-detection-") as tmp:
        runs = [run_seed(seed, args.orders, Path(tmp)) for seed in seeds]
    alerts = combine(runs)
    risk = risk_quality(runs)
    failures = verdicts(alerts, risk)
    report = {"seeds": seeds, "orders_per_seed": args.orders,
              "alerts": {name: q.as_dict() for name, q in sorted(alerts.items())},
              "risk": risk, "replay_seconds": [round(r["replay_s"], 1) for r in runs],
              "targets_met": not failures, "misses": failures}
    table = markdown(alerts, risk, seeds, args.orders)
    write_report("detection", report, table, args.out)
    print(table)
    print("targets met" if not failures else "targets missed:\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
