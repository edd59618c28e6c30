"""Offline attack simulation for the serving gateway's query monitor (no HTTP).

A 20-feature logistic regression is trained on synthetic data; attackers query it through a
label-only oracle while every query also goes, one at a time, through
`bastion.serve.detect.QueryMonitor` with its default configuration. For each attack the script
prints the first alarm, the agreement a copy trained on the labels so far reaches on held-out
data at that moment and at fixed budgets, and the first budget at which the copy reaches 95 %.
Then: ten benign keys and their closest approach to each threshold, Knockoff-style extraction
(in-distribution queries, undetectable) up to 10k queries, the equation-solving baseline with
full probabilities, and the monitor's cost per query.

    .venv/bin/python benchmarks/attack_sim_offline.py --seed 7
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy
import sklearn
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from bastion.serve.detect import Alarm, DetectorConfig, QueryMonitor, TrainingProfile

N_FEATURES = 20
N_TRAIN = 10_000
N_BENIGN_KEYS = 10
BENIGN_QUERIES = 2_000
N_KNOCKOFF = 10_000
N_EVAL = 5_000
BUDGETS = (150, 500, 1_000, 2_000)
KNOCKOFF_BUDGETS = (50, 100, 150, 500, 1_000, 2_000, 5_000, 10_000)
# Agreement is evaluated at these prefixes to find the first at which the copy reaches 95 %.
GRID = (*range(10, 300, 10), *range(300, 2_001, 50), *range(2_500, 10_001, 500))

Oracle = Callable[[np.ndarray], np.ndarray]


@dataclass
class World:
    x_train: np.ndarray
    y_train: np.ndarray
    benign: np.ndarray
    knockoff: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    target: LogisticRegression
    target_eval: np.ndarray
    profile: TrainingProfile

    def label(self, q: np.ndarray) -> np.ndarray:
        """The default output policy: the top-1 label only."""
        labels: np.ndarray = self.target.predict(q)
        return labels


def build_world(seed: int) -> World:
    total = N_TRAIN + N_BENIGN_KEYS * BENIGN_QUERIES + N_KNOCKOFF + N_EVAL
    x, y = make_classification(
        n_samples=total, n_features=N_FEATURES, n_informative=10, n_redundant=2, random_state=seed
    )
    a, b, c = N_TRAIN, N_TRAIN + N_BENIGN_KEYS * BENIGN_QUERIES, N_TRAIN + N_BENIGN_KEYS * BENIGN_QUERIES + N_KNOCKOFF
    target = LogisticRegression(max_iter=2_000).fit(x[:a], y[:a])
    return World(
        x_train=x[:a],
        y_train=y[:a],
        benign=x[a:b],
        knockoff=x[b:c],
        x_eval=x[c:],
        y_eval=y[c:],
        target=target,
        target_eval=target.predict(x[c:]),
        profile=TrainingProfile.from_data(x[:a]),
    )


def fit_copy(q: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The attacker's copy: the same model family, trained on the labels it got back."""
    classes = np.unique(labels)
    if classes.size < 2:
        constant = classes[0] if classes.size else 0
        return lambda x: np.full(x.shape[0], constant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=2_000).fit(q, labels)
    predict: Callable[[np.ndarray], np.ndarray] = model.predict
    return predict


def agreement(world: World, q: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(fit_copy(q, labels)(world.x_eval) == world.target_eval))


# --- attacks: each yields its queries in the order it sends them (label-only oracle) ---


def uniform_box(world: World, n: int, rng: np.random.Generator, widen: float = 0.5) -> np.ndarray:
    """Uniform over the data's bounding box widened by `widen` x its range on each side."""
    low, high = world.x_train.min(axis=0), world.x_train.max(axis=0)
    span = high - low
    return rng.uniform(low - widen * span, high + widen * span, size=(n, N_FEATURES))


def jacobian_augmentation(
    world: World, n: int, rng: np.random.Generator, seeds: int = 10, step: float = 0.1, tau: int = 3
) -> np.ndarray:
    """Papernot et al. 2017: S_{r+1} = S_r + lambda_r * sign(dF_copy[O(x)]/dx), lambda flipping every tau rounds."""
    s = world.knockoff[rng.choice(world.knockoff.shape[0], size=seeds, replace=False)]
    labels = world.label(s)
    sent = [s]
    total, rnd = seeds, 0
    while total < n:
        copy = LogisticRegression(max_iter=2_000).fit(s, labels)
        # For a logistic regression the gradient of P(class c | x) is +-p(1-p) w: its sign is
        # sign(w) for class 1 and -sign(w) for class 0, the same for every point of a class.
        direction = np.sign(copy.coef_[0])[None, :] * np.where(labels == 1, 1.0, -1.0)[:, None]
        lam = step * (-1.0) ** (rnd // tau)
        new = s + lam * direction
        new_labels = world.label(new)
        sent.append(new)
        s, labels = np.vstack([s, new]), np.concatenate([labels, new_labels])
        total += new.shape[0]
        rnd += 1
    return np.vstack(sent)[:n]


def membership_probing(
    world: World, n: int, rng: np.random.Generator, records: int = 8, noise: float = 0.05, interleave: bool = False
) -> np.ndarray:
    """Label-only membership inference: each target record, then noisy copies of it (noise x std)."""
    picked = world.x_train[rng.choice(N_TRAIN, size=records, replace=False)]
    per = math.ceil(n / records)
    std = world.x_train.std(axis=0)
    blocks = []
    for record in picked:
        noisy = record + rng.normal(size=(per, N_FEATURES)) * noise * std
        noisy[0] = record
        blocks.append(noisy)
    q = np.stack(blocks, axis=1).reshape(-1, N_FEATURES) if interleave else np.vstack(blocks)
    return q[:n]


def knockoff(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    """Queries from the real data distribution (a disjoint sample of it)."""
    return world.knockoff[rng.permutation(world.knockoff.shape[0])[:n]]


# --- running an attack through the monitor ---


@dataclass
class Result:
    name: str
    alarm: Alarm | None
    at_alarm: float | None
    at_budget: dict[int, float]
    reaches_95: int | None


def first_alarm(monitor: QueryMonitor, key: str, q: np.ndarray) -> Alarm | None:
    for row in q:
        alarms = monitor.observe(key, row[None, :])
        if alarms:
            return alarms[0]
    return None


def run_attack(world: World, name: str, q: np.ndarray, budgets: tuple[int, ...] = BUDGETS) -> Result:
    monitor = QueryMonitor(world.profile, DetectorConfig())
    alarm = first_alarm(monitor, name, q)
    labels = world.label(q)
    at_alarm = agreement(world, q[: alarm.queries], labels[: alarm.queries]) if alarm else None
    at_budget = {b: agreement(world, q[:b], labels[:b]) for b in budgets if b <= q.shape[0]}
    reaches = next((g for g in GRID if g <= q.shape[0] and agreement(world, q[:g], labels[:g]) >= 0.95), None)
    return Result(name, alarm, at_alarm, at_budget, reaches)


def benign_margins(world: World) -> Iterator[tuple[str, int, float, float, float]]:
    """Each benign key's alarms and closest approach to each threshold over its stream."""
    monitor = QueryMonitor(world.profile, DetectorConfig())
    for k in range(N_BENIGN_KEYS):
        key = f"benign-{k}"
        stream = world.benign[k * BENIGN_QUERIES : (k + 1) * BENIGN_QUERIES]
        alarms, min_w, max_atypical, max_dup = 0, math.inf, 0.0, 0.0
        for i, row in enumerate(stream):
            alarms += len(monitor.observe(key, row[None, :]))
            stats = monitor.snapshot(key)
            assert stats is not None
            if not math.isnan(stats.prada_w):
                min_w = min(min_w, stats.prada_w)
            if i + 1 >= monitor.config.ood_min_queries:
                max_atypical = max(max_atypical, stats.atypical_share)
            if i + 1 >= monitor.config.dup_min_queries:
                max_dup = max(max_dup, stats.duplicate_share)
        yield key, alarms, min_w, max_atypical, max_dup


def equation_solving(world: World, rng: np.random.Generator) -> tuple[int, float, float, Alarm | None]:
    """With full probabilities, logit(p) = w.x + b: n_features + 1 queries determine w and b."""
    n = N_FEATURES + 1
    q = knockoff(world, n, rng)
    p = np.clip(world.target.predict_proba(q)[:, 1], 1e-15, 1 - 1e-15)
    design = np.hstack([q, np.ones((n, 1))])
    # Least squares, not solve: make_classification's redundant features are exact linear
    # combinations of informative ones, so w itself is not identifiable, only w.x on the data.
    theta = np.linalg.lstsq(design, np.log(p / (1 - p)), rcond=None)[0]
    logits = world.x_eval @ theta[:-1] + theta[-1]
    copy = (logits > 0).astype(int)
    error = float(np.max(np.abs(logits - world.target.decision_function(world.x_eval))))
    monitor = QueryMonitor(world.profile, DetectorConfig())
    return n, float(np.mean(copy == world.target_eval)), error, first_alarm(monitor, "eq", q)


def cost_per_query(world: World, rng: np.random.Generator) -> tuple[float, float]:
    monitor = QueryMonitor(world.profile, DetectorConfig())
    warm = world.benign[:BENIGN_QUERIES]
    for row in warm:
        monitor.observe("warm", row[None, :])
    rows = world.benign[BENIGN_QUERIES : 3 * BENIGN_QUERIES]
    start = time.perf_counter()
    for _ in range(5):
        for row in rows:
            monitor.observe("warm", row[None, :])
    single = (time.perf_counter() - start) / (5 * rows.shape[0])
    batches = rows.reshape(-1, 32, N_FEATURES)
    start = time.perf_counter()
    for _ in range(5):
        for batch in batches:
            monitor.observe("warm", batch)
    batched = (time.perf_counter() - start) / (5 * rows.shape[0])
    return single * 1e6, batched * 1e6


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--queries", type=int, default=2_000, help="queries per attack")
    args = parser.parse_args(argv)

    world = build_world(args.seed)
    print(
        f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()} "
        f"numpy {np.__version__} scipy {scipy.__version__} scikit-learn {sklearn.__version__}; seed {args.seed}"
    )
    print(
        f"# target: logistic regression, {N_FEATURES} features, trained on {N_TRAIN}; "
        f"accuracy on held-out {np.mean(world.target_eval == world.y_eval):.1%}; "
        f"agreement measured on {N_EVAL} held-out records; output policy: label only"
    )
    print(f"# detector: {DetectorConfig()}")
    print()

    n = args.queries
    attacks = [
        ("(a) uniform box, 2x data range", uniform_box(world, n, np.random.default_rng(args.seed + 1))),
        ("(a') uniform inside data range", uniform_box(world, n, np.random.default_rng(args.seed + 1), widen=0.0)),
        ("(b) Jacobian aug., lambda=0.1", jacobian_augmentation(world, n, np.random.default_rng(args.seed + 2))),
        (
            "(b') Jacobian aug., lambda=0.5",
            jacobian_augmentation(world, n, np.random.default_rng(args.seed + 2), step=0.5),
        ),
        ("(c) membership, 8x250, 0.05 std", membership_probing(world, n, np.random.default_rng(args.seed + 3))),
        (
            "(c') membership, interleaved, 0.01",
            membership_probing(world, n, np.random.default_rng(args.seed + 3), noise=0.01, interleave=True),
        ),
    ]
    header = f"{'attack':36} {'first alarm':>11} {'kind':32} {'@alarm':>7}" + "".join(
        f" {'@' + str(b):>7}" for b in BUDGETS
    )
    print(header + f" {'95% at':>7}")
    for name, q in attacks:
        r = run_attack(world, name, q)
        where = str(r.alarm.queries) if r.alarm else "none"
        kind = r.alarm.kind if r.alarm else "-"
        cells = "".join(f" {fmt(r.at_budget.get(b)):>7}" for b in BUDGETS)
        print(f"{name:36} {where:>11} {kind:32} {fmt(r.at_alarm):>7}{cells} {r.reaches_95 or '-':>7}")

    print()
    r = run_attack(
        world, "knockoff", knockoff(world, N_KNOCKOFF, np.random.default_rng(args.seed + 4)), KNOCKOFF_BUDGETS
    )
    print(
        f"(e) Knockoff (in-distribution), first alarm: {r.alarm.queries if r.alarm else 'none'}; copy reaches 95% at {r.reaches_95}"
    )
    print("    queries   " + "".join(f"{b:>8}" for b in KNOCKOFF_BUDGETS))
    print("    agreement " + "".join(f"{fmt(r.at_budget.get(b)):>8}" for b in KNOCKOFF_BUDGETS))

    print()
    print(f"(d) benign keys: {N_BENIGN_KEYS} x {BENIGN_QUERIES} held-out queries, one key each")
    cfg = DetectorConfig()
    print(
        f"    {'key':10} {'alarms':>6} {'min W':>7} (alarm < {cfg.prada_delta}) {'max atypical':>12} "
        f"(alarm >= {cfg.ood_share}) {'max near-dup':>12} (alarm >= {cfg.dup_share})"
    )
    total = 0
    for key, alarms, min_w, max_atypical, max_dup in benign_margins(world):
        total += alarms
        print(f"    {key:10} {alarms:>6} {min_w:>7.3f} {'':15} {max_atypical:>12.3f} {'':14} {max_dup:>12.3f}")
    print(f"    benign alarms in total: {total}")

    print()
    queries, agree, err, alarm = equation_solving(world, np.random.default_rng(args.seed + 5))
    print(
        f"baseline, full probabilities: equation-solving with {queries} in-distribution queries -> agreement "
        f"{agree:.2%}, max logit error on held-out {err:.1e}, alarm: {alarm.kind if alarm else 'none'}"
    )
    single, batched = cost_per_query(world, np.random.default_rng(args.seed + 6))
    print(f"monitor cost at steady state: {single:.1f} us/query one at a time, {batched:.1f} us/query in batches of 32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
