"""Attack simulation over HTTP: the offline attacks, sent one row at a time to a real gateway.

The target and the attacks are those of `benchmarks/attack_sim_offline.py` (its world, seed
and generators are imported, not copied): a 20-feature logistic regression trained on 10,000
synthetic records. Here it is exported to ONNX, signed, registered, promoted and served by the
real gateway (`bastion.serve.run.assemble`, uvicorn on 127.0.0.1, via `tests/corpus/gateway_env.py`),
and every query is a `POST /v2/models/{name}/infer` with one row and the key in
`Authorization: Bearer`, over one keep-alive connection per key. Nothing is simulated in
process: alarms are the gateway's own (its `QueryMonitor` with the default configuration, read
back from the gateway's audit chain after the server stops), refusals are the answers it gave.

For each attack and each alarm action (`suspend`, `throttle`) the attacker sends its whole
plan, 2,000 queries, and carries on after refusals as a real one would. Its copy (the same
model family, `attack_sim_offline.fit_copy`) is trained only on the labels the gateway
actually returned; agreement with the target is measured on 5,000 held-out records. The table
gives: the first alarm (the index of the query that raised it among those sent, and its kind);
the first refusal after it (403 `suspended`, 429 `rate`); the copy's agreement when the alarm
fired and after 150/500/1,000/2,000 queries sent ("stopped": the key was refused before); the
queries answered in all, and the agreement of the copy trained on all of them (the attacker
carried on to 2,000, so a throttle may have let a few more through); and, for comparison, the
agreement the copy would reach after 2,000 queries on a gateway that answered everything
("open").

Then: ten benign keys, each sending 2,000 held-out records; the in-distribution (Knockoff)
attack, which no detector tells from real use, up to the default daily quota and one query
past it (refused 429 `daily-quota`); and the equation-solving baseline for a key granted full
probabilities.

Attack keys get a rate limit of 1,000/s (the default, 10/s, only slows an attacker down: 2,000
queries in 200 s) and the default daily quota (10,000); benign keys 1,000/s and no quota.

    .venv/bin/python benchmarks/attack_sim.py --seed 7         # ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import sklearn
from sklearn.exceptions import ConvergenceWarning

_ROOT = Path(__file__).resolve().parent.parent
for _folder in (_ROOT / "benchmarks", _ROOT / "tests"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))  # last: its audit.py, scan.py, sign.py must not shadow packages

import attack_sim_offline as offline  # noqa: E402

from bastion.audit import AuditEntry  # noqa: E402
from bastion.registry import Principal  # noqa: E402
from bastion.serve.detect import DetectorConfig  # noqa: E402
from bastion.serve.gateway import AlarmPolicy  # noqa: E402
from bastion.serve.keys import DEFAULT_QUOTA, ApiKey, KeySpec  # noqa: E402
from bastion.serve.limits import Quota, RateLimit  # noqa: E402
from bastion.serve.run import Assembled, GatewaySettings, assemble  # noqa: E402
from bastion.sign.keys import generate_key, save_keypair  # noqa: E402
from bastion.sign.ossf import sign_model  # noqa: E402
from corpus.gateway_env import INPUT, RegistryEnv, ServerThread, make_registry  # noqa: E402
from corpus.serving import LABELS, Dataset, write_model  # noqa: E402

MODEL = "attack-target"
FAST = RateLimit(per_second=100_000.0, burst=100_000)
BUDGETS = offline.BUDGETS  # (150, 500, 1000, 2000)
QUERIES = 2_000
ACTIONS = ("suspend", "throttle")
LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}
REFUSED = -1  # the label of a query the gateway did not answer


# --- the target, served ---------------------------------------------------------------------


@dataclass
class Target:
    """The offline world, with its target replaced by the model the gateway serves."""

    world: offline.World
    env: RegistryEnv


def build_target(home: Path, seed: int) -> Target:
    """The offline world for `seed`; its training data's model, as ONNX, signed, promoted to production."""
    world = offline.build_world(seed)
    folder = home / "model"
    data = Dataset(world.x_train, world.y_train, world.x_eval, world.y_eval)
    served = write_model(folder, "onnx", data)
    key = generate_key("ecdsa-p256")
    public = save_keypair(key, home / "signer.key")
    sign_model(folder, key)
    env = make_registry(home / "registry", [public])
    env.publish(MODEL, folder)
    return Target(replace(world, target=served, target_eval=served.predict(world.x_eval)), env)


@dataclass
class Served:
    """An assembled gateway serving its inference port (what `gateway_env.RunningGateway` offers)."""

    assembled: Assembled
    inference: ServerThread
    caller: Principal  # who assembled it; key management is checked against it

    @property
    def url(self) -> str:
        return self.inference.url

    def key(self, name: str, **spec: Any) -> tuple[ApiKey, str]:
        """A new API key, seen by this gateway at once."""
        key, text = self.assembled.gateway.store.create(self.caller, KeySpec(name, **spec))
        self.assembled.gateway.refresh()
        return key, text

    def stop(self) -> None:
        """Stop the server, then close the gateway (flushing its audit log)."""
        self.inference.stop()
        self.assembled.close()


def open_gateway(target: Target, action: str) -> Served:
    """The gateway with its defaults but for the alarm action, on a real socket."""
    settings = GatewaySettings(models=(MODEL,), alarm_policy=AlarmPolicy(action=action))
    assembled = assemble(target.env.registry, target.env.admin, settings)
    assert MODEL in assembled.gateway.models, assembled.refused
    return Served(assembled, ServerThread(assembled.gateway.app()).start(), target.env.admin)


@contextmanager
def serving(target: Target, action: str) -> Iterator[Served]:
    gateway = open_gateway(target, action)
    try:
        yield gateway
    finally:
        gateway.stop()


# --- one key's conversation with the gateway -------------------------------------------------


@dataclass
class Answer:
    status: int
    reason: str  # the x-bastion-refusal header, "" for an answer
    label: int  # REFUSED unless status is 200
    probabilities: list[float] | None = None


class Caller:
    """One API key sending one row per request over a keep-alive connection."""

    def __init__(self, gateway: Served, key: str, key_id: str) -> None:
        self.key_id = key_id
        self.url = f"{gateway.url}/v2/models/{MODEL}/infer"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.client = httpx.Client(headers=headers, timeout=30.0)

    def ask(self, row: np.ndarray) -> Answer:
        body = {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [1, row.shape[0]], "data": row.tolist()}]}
        response = self.client.post(self.url, content=orjson.dumps(body))
        if response.status_code != 200:
            return Answer(response.status_code, response.headers.get("x-bastion-refusal", ""), REFUSED)
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        return Answer(200, "", LABEL_INDEX[outputs["label"][0]], outputs.get("probabilities"))

    def close(self) -> None:
        self.client.close()


def new_caller(gateway: Served, name: str, **spec: Any) -> Caller:
    key, text = gateway.key(name, **spec)
    return Caller(gateway, text, key.key_id)


@dataclass
class Trace:
    """What one key sent and what it got back, in order."""

    key_id: str
    queries: list[np.ndarray] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.monotonic() of each answer

    def record(self, row: np.ndarray, answer: Answer) -> None:
        self.queries.append(row)
        self.answers.append(answer)
        self.received_at.append(time.monotonic())

    def seconds_after(self, index: int) -> float:
        """Seconds from the answer to the `index`-th query sent (1-based) to the last answer."""
        return self.received_at[-1] - self.received_at[index - 1]

    @property
    def x(self) -> np.ndarray:
        return np.asarray(self.queries)

    @property
    def labels(self) -> np.ndarray:
        return np.array([a.label for a in self.answers])

    @property
    def statuses(self) -> np.ndarray:
        return np.array([a.status for a in self.answers])

    def answered(self, first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The queries among the first `first` sent that were answered, and their labels."""
        x, labels = self.x[:first], self.labels[:first]
        ok = labels != REFUSED
        return x[ok], labels[ok]

    def first_refusal(self, statuses: tuple[int, ...] = (403, 429)) -> tuple[int, str] | None:
        """(1-based index among queries sent, reason) of the first refusal with one of `statuses`."""
        return next(((i + 1, a.reason) for i, a in enumerate(self.answers) if a.status in statuses), None)


def send_all(caller: Caller, q: np.ndarray) -> Trace:
    trace = Trace(caller.key_id)
    for row in q:
        trace.record(row, caller.ask(row))
    return trace


class GatewayOracle:
    """`attack_sim_offline.World` as an adaptive attack sees it: `label` asks the gateway.

    Labels the gateway refuses are filled in with the attacker's own copy's guess (it keeps
    augmenting as best it can); past `budget` queries nothing more is sent, and the plan is cut
    to `budget` by the generator itself.
    """

    def __init__(self, world: offline.World, caller: Caller, budget: int) -> None:
        self.knockoff = world.knockoff
        self.caller = caller
        self.budget = budget
        self.trace = Trace(caller.key_id)

    def label(self, q: np.ndarray) -> np.ndarray:
        labels = np.empty(q.shape[0], dtype=int)
        guess: Callable[[np.ndarray], np.ndarray] | None = None
        for i, row in enumerate(q):
            answer = self.caller.ask(row) if len(self.trace.answers) < self.budget else None
            if answer is not None:
                self.trace.record(row, answer)
            if answer is not None and answer.label != REFUSED:
                labels[i] = answer.label
                continue
            if guess is None:
                guess = offline.fit_copy(*self.trace.answered())
            labels[i] = int(guess(row[None, :])[0])
        return labels


# --- attacks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    run: Callable[[offline.World, Caller, int], Trace]
    plan: Callable[[offline.World, int], np.ndarray]  # what it would send to an open gateway


def _fixed(make: Callable[[offline.World, int], np.ndarray]) -> Callable[[offline.World, Caller, int], Trace]:
    return lambda world, caller, n: send_all(caller, make(world, n))


def _jacobian_run(step: float, seed: int) -> Callable[[offline.World, Caller, int], Trace]:
    def run(world: offline.World, caller: Caller, n: int) -> Trace:
        oracle = GatewayOracle(world, caller, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            offline.jacobian_augmentation(oracle, n, np.random.default_rng(seed), step=step)  # type: ignore[arg-type]
        return oracle.trace

    return run


def _jacobian_plan(step: float, seed: int) -> Callable[[offline.World, int], np.ndarray]:
    def plan(world: offline.World, n: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return offline.jacobian_augmentation(world, n, np.random.default_rng(seed), step=step)

    return plan


def attacks(seed: int) -> list[Attack]:
    """The offline script's six label-only attacks, with its seeds (seed + 1, + 2, + 3)."""

    def uniform(widen: float) -> Callable[[offline.World, int], np.ndarray]:
        return lambda world, n: offline.uniform_box(world, n, np.random.default_rng(seed + 1), widen=widen)

    def membership(noise: float, interleave: bool) -> Callable[[offline.World, int], np.ndarray]:
        return lambda world, n: offline.membership_probing(
            world, n, np.random.default_rng(seed + 3), noise=noise, interleave=interleave
        )

    fixed = [
        ("uniform box, 2x data range", uniform(0.5)),
        ("uniform inside data range", uniform(0.0)),
        ("membership, 8x250, 0.05 std", membership(0.05, interleave=False)),
        ("membership, interleaved, 0.01", membership(0.01, interleave=True)),
    ]
    jacobian = [
        Attack(f"Jacobian aug., lambda={step}", _jacobian_run(step, seed + 2), _jacobian_plan(step, seed + 2))
        for step in (0.1, 0.5)
    ]
    out = [Attack(name, _fixed(make), make) for name, make in fixed[:2]]
    return [*out, *jacobian, *(Attack(name, _fixed(make), make) for name, make in fixed[2:])]


# --- measurements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmSeen:
    kind: str
    queries: int  # the monitor's count when it fired: queries answered, or refused as out of range
    action: str


def alarms_by_key(entries: list[AuditEntry]) -> dict[str, list[AlarmSeen]]:
    """The gateway's "alarm" audit entries, per key id, in order."""
    found: dict[str, list[AlarmSeen]] = {}
    for entry in entries:
        if entry.action == "alarm":
            d = entry.details
            found.setdefault(entry.actor, []).append(AlarmSeen(d["kind"], int(d["queries"]), d["action"]))
    return found


def agreement(world: offline.World, x: np.ndarray, labels: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return offline.agreement(world, x, labels)


@dataclass(frozen=True)
class Outcome:
    """One attack against one gateway: where it was stopped and what the copy learnt."""

    attack: str
    action: str
    sent: int
    answered: int
    alarm: AlarmSeen | None
    alarm_at: int | None  # index among queries sent of the query that raised it
    refusal: tuple[int, str] | None  # first 403/429: (index among sent, reason)
    answered_after_refusal: int
    # Seconds from the first refusal to the last answer: a throttle's allowance grows with it,
    # and a loaded machine stretches it (300 queries took longer, so more got through at 1 per 5 s).
    seconds_after_refusal: float
    at_alarm: float | None
    at_budget: dict[int, float]
    final: float  # the copy from every answer received
    open_final: float  # the copy had the gateway answered all `sent`

    @property
    def best(self) -> float:
        """The most the copy reached at any point measured."""
        return max([self.final, *self.at_budget.values(), *([self.at_alarm] if self.at_alarm is not None else [])])


def measure(
    world: offline.World, name: str, action: str, trace: Trace, alarms: list[AlarmSeen], plan: np.ndarray
) -> Outcome:
    labels = trace.labels
    answered_idx = np.flatnonzero(labels != REFUSED)
    alarm = min(alarms, key=lambda a: a.queries) if alarms else None
    # The detectors see answered queries and well-formed ones refused as out of range (400).
    observed_idx = np.flatnonzero((labels != REFUSED) | (trace.statuses == 400))
    alarm_at = int(observed_idx[alarm.queries - 1]) + 1 if alarm and alarm.queries <= observed_idx.size else None
    refusal = trace.first_refusal()
    after = int(np.sum(answered_idx >= refusal[0])) if refusal else 0
    return Outcome(
        attack=name,
        action=action,
        sent=len(trace.answers),
        answered=int(answered_idx.size),
        alarm=alarm,
        alarm_at=alarm_at,
        refusal=refusal,
        answered_after_refusal=after,
        seconds_after_refusal=trace.seconds_after(refusal[0]) if refusal else 0.0,
        at_alarm=agreement(world, *trace.answered(alarm_at)) if alarm_at else None,
        at_budget={b: agreement(world, *trace.answered(b)) for b in BUDGETS if b <= len(trace.answers)},
        final=agreement(world, *trace.answered()),
        open_final=agreement(world, plan, world.label(plan)),
    )


def run_attacks(target: Target, action: str, chosen: list[Attack], n: int = QUERIES) -> list[Outcome]:
    """Each attack from a key of its own (fast rate, default quota) on one gateway with `action`."""
    traces: list[tuple[Attack, Trace]] = []
    with serving(target, action) as gateway:
        for attack in chosen:
            caller = new_caller(gateway, f"attacker {attack.name}", rate=FAST)
            try:
                traces.append((attack, attack.run(target.world, caller, n)))
            finally:
                caller.close()
    alarms = alarms_by_key(target.env.audit_entries())
    return [
        measure(target.world, a.name, action, t, alarms.get(t.key_id, []), a.plan(target.world, n)) for a, t in traces
    ]


@dataclass(frozen=True)
class BenignOutcome:
    keys: int
    queries: int
    refused: int
    alarms: int
    seconds: float


def run_benign(target: Target, keys: int, queries: int, action: str = "suspend") -> BenignOutcome:
    """`keys` keys, each sending `queries` held-out records (its own slice of them)."""
    world = target.world
    started = time.perf_counter()
    traces = []
    with serving(target, action) as gateway:
        for k in range(keys):
            caller = new_caller(gateway, f"benign {k}", rate=FAST, quota=None)
            try:
                traces.append(send_all(caller, world.benign[k * queries : (k + 1) * queries]))
            finally:
                caller.close()
    seconds = time.perf_counter() - started
    alarms = alarms_by_key(target.env.audit_entries())
    refused = sum(int(np.sum(t.statuses != 200)) for t in traces)
    return BenignOutcome(keys, queries, refused, sum(len(alarms.get(t.key_id, [])) for t in traces), seconds)


@dataclass(frozen=True)
class KnockoffOutcome:
    quota: int
    answered: int
    refusal: tuple[int, str] | None  # (index among sent, reason) of the first refusal
    at_budget: dict[int, float]
    alarms: list[AlarmSeen]


def run_knockoff(target: Target, quota: int, budgets: tuple[int, ...], seed: int, extra: int = 5) -> KnockoffOutcome:
    """In-distribution queries from a key with a daily quota of `quota`, and `extra` past it."""
    pool = offline.knockoff(target.world, offline.N_KNOCKOFF, np.random.default_rng(seed + 4))
    q = np.resize(pool, (quota + extra, pool.shape[1]))  # past the pool (10,000), it repeats
    with serving(target, "suspend") as gateway:
        caller = new_caller(gateway, "knockoff", rate=FAST, quota=Quota(daily=quota, monthly=None))
        try:
            trace = send_all(caller, q)
        finally:
            caller.close()
    alarms = alarms_by_key(target.env.audit_entries()).get(trace.key_id, [])
    at = {b: agreement(target.world, *trace.answered(b)) for b in budgets if b <= quota}
    answered = int(np.sum(trace.labels != REFUSED))
    return KnockoffOutcome(quota, answered, trace.first_refusal((400, 403, 429)), at, alarms)


@dataclass(frozen=True)
class EquationOutcome:
    queries: int
    agreement: float
    max_logit_error: float
    max_coefficient_error: float
    alarms: list[AlarmSeen]


def run_equation_solving(target: Target, seed: int) -> EquationOutcome:
    """A key granted full probabilities: logit(p) = w.x + b, so 21 in-distribution queries give w and b."""
    world = target.world
    n = offline.N_FEATURES + 1
    q = offline.knockoff(world, n, np.random.default_rng(seed + 5))
    with serving(target, "suspend") as gateway:
        caller = new_caller(gateway, "probabilities", rate=FAST, output="probabilities")
        try:
            answers = [caller.ask(row) for row in q]
        finally:
            caller.close()
    alarms = alarms_by_key(target.env.audit_entries()).get(caller.key_id, [])
    assert all(a.probabilities is not None for a in answers), [a.status for a in answers]
    p = np.clip(np.array([a.probabilities[1] for a in answers]), 1e-15, 1 - 1e-15)  # type: ignore[index]
    design = np.hstack([q, np.ones((n, 1))])
    # Redundant features are exact linear combinations of informative ones: only directions the
    # data spans are identifiable, so drop singular values below 1e-6 of the largest (the target,
    # L2-regularised, has no component outside them either).
    theta = np.linalg.lstsq(design, np.log(p / (1 - p)), rcond=1e-6)[0]
    logits = world.x_eval @ theta[:-1] + theta[-1]
    truth = np.concatenate([world.target.coef_[0], world.target.intercept_])
    return EquationOutcome(
        queries=n,
        agreement=float(np.mean((logits > 0).astype(int) == world.target_eval)),
        max_logit_error=float(np.max(np.abs(logits - world.target.decision_function(world.x_eval)))),
        max_coefficient_error=float(np.max(np.abs(theta - truth))),
        alarms=alarms,
    )


# --- report -----------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_attacks(outcomes: list[Outcome]) -> None:
    header = (
        f"{'attack':31} {'action':8} {'alarm at':>8} {'kind':31} {'refused at':>16} {'@alarm':>7}"
        + "".join(f" {'@' + str(b):>7}" for b in BUDGETS)
        + f" {'answered':>8} {'copy':>6} {'open@' + str(QUERIES):>9}"
    )
    print(header)
    for o in outcomes:
        where = str(o.alarm_at) if o.alarm_at else "none"
        kind = o.alarm.kind if o.alarm else "-"
        refused = f"{o.refusal[0]} {o.refusal[1]}" if o.refusal else "never"
        cells = "".join(
            f" {'stopped' if o.refusal is not None and b > o.refusal[0] else fmt(o.at_budget.get(b)):>7}"
            for b in BUDGETS
        )
        print(
            f"{o.attack:31} {o.action:8} {where:>8} {kind:31} {refused:>16} {fmt(o.at_alarm):>7}{cells}"
            f" {o.answered:>8} {fmt(o.final):>6} {fmt(o.open_final):>9}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--benign-keys", type=int, default=offline.N_BENIGN_KEYS)
    parser.add_argument("--knockoff-quota", type=int, default=DEFAULT_QUOTA.daily)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bastion-attack-sim-") as tmp:
        target = build_target(Path(tmp), args.seed)
        world = target.world
        print(f"# command: .venv/bin/python benchmarks/attack_sim.py {' '.join(argv or sys.argv[1:])}".rstrip())
        print(
            f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
            f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, httpx {httpx.__version__}; seed {args.seed}"
        )
        print(
            f"# target: offline world, logistic regression as ONNX, {offline.N_FEATURES} features, trained on "
            f"{offline.N_TRAIN}; held-out accuracy {np.mean(world.target_eval == world.y_eval):.1%}; agreement on "
            f"{offline.N_EVAL} held-out records; every query one POST /v2/models/{MODEL}/infer of one row"
        )
        print(f"# gateway defaults: output label only, detector {DetectorConfig()}")
        print(f"# attack keys: rate {FAST.per_second:.0f}/s, daily quota {DEFAULT_QUOTA.daily}; {QUERIES} queries each")
        print()
        outcomes = [o for action in ACTIONS for o in run_attacks(target, action, attacks(args.seed))]
        print_attacks(outcomes)
        print(
            "    alarm at: index, among the queries sent, of the one that raised it; refused at: first 403/429 (400s,"
            " outside the declared input range, are not counted); stopped: refused before this budget;\n"
            f"    copy: agreement of the copy from every answer received in {QUERIES} queries sent (the attacker"
            " carried on); open: had the gateway answered every query"
        )
        leaks = [o for o in outcomes if o.answered_after_refusal]
        for o in leaks:
            why = (
                "the throttle lets one query through every 5 s"
                if o.action == "throttle"
                else "a suspended key answered"
            )
            print(f"    {o.attack} / {o.action}: {o.answered_after_refusal} answered after the first refusal ({why})")
        print()

        benign = run_benign(target, args.benign_keys, offline.BENIGN_QUERIES)
        print(
            f"benign: {benign.keys} keys x {benign.queries} held-out queries (action suspend, rate 100,000/s, no quota): "
            f"{benign.alarms} alarms, {benign.refused} refusals ({benign.seconds:.1f} s)"
        )

        budgets = tuple(b for b in offline.KNOCKOFF_BUDGETS if b <= args.knockoff_quota)
        knock = run_knockoff(target, args.knockoff_quota, budgets, args.seed)
        refusal = f"query {knock.refusal[0]}: 429 {knock.refusal[1]}" if knock.refusal else "none"
        print(
            f"Knockoff (in-distribution), daily quota {knock.quota}: {knock.answered} answered, first refusal "
            f"{refusal}, alarms: {[a.kind for a in knock.alarms] or 'none'}"
        )
        print("    queries   " + "".join(f"{b:>8}" for b in budgets))
        print("    agreement " + "".join(f"{fmt(knock.at_budget.get(b)):>8}" for b in budgets))

        eq = run_equation_solving(target, args.seed)
        print(
            f"baseline, key granted full probabilities: equation-solving with {eq.queries} queries -> agreement "
            f"{eq.agreement:.2%}, max logit error on held-out {eq.max_logit_error:.1e}, max coefficient error "
            f"{eq.max_coefficient_error:.1e}, alarms: {[a.kind for a in eq.alarms] or 'none'}"
        )
        print(f"# total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
