"""Train the risk model on engine-labelled traffic; one reproducible command:

    python -m orderwatch.detectors.risk_training --seeds 101,102,103 --orders 20000

Each seed's simulated traffic (every fault on) runs through the order detectors in event
time. The risk scorer records its feature vector at every scoring moment. A snapshot is
positive when its order is broken and the fault is already visible at that time (the
ground truth of `order_risk_high`, from `engine.simulator.derived_labels`). A
scikit-learn logistic regression fits the snapshots; its coefficients go to
`risk_model.json` with the seeds, sizes and a hold-out check. Scoring needs no
scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from orderwatch.config import DEFAULT_THRESHOLDS
from orderwatch.detectors.base import run_on
from orderwatch.detectors.catalogue import order_detectors
from orderwatch.detectors.risk import FEATURE_NAMES, MODEL_PATH, RiskModel, RiskScorer
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.events import InvalidEvent, validate
from orderwatch.timestamps import from_rfc3339


def snapshots(seed: int, orders: int) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Feature snapshots of one simulated run, their labels and the broken orders."""
    sim = Simulator(SimConfig(seed=seed, orders=orders, faults=frozenset(SCENARIOS)))
    events = []
    for data in sim.events():
        try:
            events.append(validate(data))
        except InvalidEvent:
            continue  # a garbled record: the pipeline dead-letters it
    scorer = RiskScorer(DEFAULT_THRESHOLDS, model=None)
    scorer.snapshots = []
    run_on(events, order_detectors(DEFAULT_THRESHOLDS), risk=scorer)
    broken = {label["order_no"]: from_rfc3339(label["start"]) for label in sim.labels
              if label["fault"] == "order_risk_high"}
    x = np.array([features for _, _, features in scorer.snapshots], dtype=float)
    y = np.array([order_no in broken and t >= broken[order_no]
                  for order_no, t, _ in scorer.snapshots], dtype=int)
    return x, y, [order_no for order_no, _, _ in scorer.snapshots], broken


def per_order_auc(model: RiskModel, x: np.ndarray, order_ids: list[str],
                  broken: dict) -> float:
    """ROC AUC of each order's highest score against whether it is broken."""
    best: dict[str, float] = {}
    for row, order_no in zip(x, order_ids, strict=True):
        risk, _ = model.score(list(row))
        best[order_no] = max(best.get(order_no, 0.0), risk)
    truth = [order_no in broken for order_no in best]
    return float(roc_auc_score(truth, list(best.values())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="101,102,103")
    parser.add_argument("--holdout-seed", type=int, default=104)
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.monotonic()
    parts = [snapshots(seed, args.orders) for seed in seeds]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    fit = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)
    model = RiskModel([float(c) for c in fit.coef_[0]], float(fit.intercept_[0]), {})
    hx, _, hids, hbroken = snapshots(args.holdout_seed, args.orders)
    auc = per_order_auc(model, hx, hids, hbroken)
    document = {
        "features": list(FEATURE_NAMES),
        "coef": [round(c, 6) for c in model.coef],
        "intercept": round(model.intercept, 6),
        "trained": {
            "command": "python -m orderwatch.detectors.risk_training --seeds "
                       f"{args.seeds} --orders {args.orders} --holdout-seed "
                       f"{args.holdout_seed}",
            "seeds": seeds, "orders_per_seed": args.orders, "snapshots": len(y),
            "positive_snapshots": int(y.sum()), "estimator": "LogisticRegression(C=1.0)",
            "scikit_learn": sklearn.__version__, "holdout_seed": args.holdout_seed,
            "holdout_order_auc": round(auc, 4),
        },
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"trained on {len(y):,} snapshots ({int(y.sum()):,} positive) from seeds {seeds} "
          f"in {time.monotonic() - started:.0f} s; hold-out seed {args.holdout_seed}: "
          f"per-order ROC AUC {auc:.4f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
