"""Attack simulation over HTTP: textbook and adaptive model theft, and benign clients, against a real gateway.

Two targets, each trained, exported to ONNX, signed, registered, promoted and served by the real
gateway (`bastion.serve.run.assemble`, uvicorn on 127.0.0.1, via `tests/corpus/gateway_env.py`):

- `logistic`: the offline world of `benchmarks/attack_sim_offline.py` (its data, seed and
  generators are imported, not copied), a 20-feature logistic regression on 10,000 records;
- `mlp`: an MLP (32, 32) on 20 features whose classes are four clusters each
  (`tests/corpus/serving.py: write_nonlinear_model`), laid out like the offline world.

Every query is a `POST /v2/models/{name}/infer` with the key in `Authorization: Bearer`, one
keep-alive connection per key. Nothing is simulated in process: alarms are the gateway's own
(read back from its audit chain: kind, the stream if the entry names one, else the key's), and
refusals are the answers it gave. Each scenario runs on a gateway of its own (fresh detector
state), with the gateway's defaults but for the alarm action. The attacker's copy is trained
only on the labels the gateway returned (a logistic regression for `logistic`; an MLP (64) for
`mlp`); agreement is measured on 5,000 held-out records.

What the attacker has: the model's `serving.yaml` (its profile: per-feature minimum, maximum,
quantiles, standard deviation), and 200 public rows (held out from training, evaluation and the
benign clients). Label-only keys with the defaults (rate raised to 100,000/s: the default 10/s
only slows an attacker down), each scenario's keys new. Adaptive attacks:

- (a) `ranges + boundary`: each feature independently uniform on the centre of its published
  range (half-width sqrt(3) x the standard deviation a normal feature with that range would have:
  what a detector that checks ranges and the mean squared z-score accepts); 50 such queries, then
  rounds of boundary sampling: from 20x as many candidates, those the copy is least sure of,
  never within 0.3 sd (root mean square over features) of any row sent before;
- (b) `marginals + boundary`: the same, each feature drawn from its published quantiles;
- (c) `dilution`: (a)'s queries, each sent in one request with four fillers: public rows
  jittered by 0.35 sd, or rows recombined feature by feature from public rows (every answer,
  fillers' too, trains the copy);
- (d) `Sybil`: (a) over ten keys x 19 queries, in one account, and in ten accounts (when keys
  have accounts) each from its own /24 network (127.0.k.1);
- (e) 64-row requests of uniform rows inside the data range (every version's detectors alarm on
  them: this measures what an alarmed key still gets): one key
  under throttle (it honours Retry-After, for `--throttle-seconds`), one key under suspend, and
  ten keys of one account x one request;
- (f) Jacobian augmentation (Papernot et al. 2017) from ten public rows, each step's length
  drawn from the distances between public rows and their nearest earlier one (what benign
  traffic shows PRADA), each new row pulled back inside the ranges and the typical band of the
  mean squared z-score.

Benign clients, each ten keys x 2,000 queries from held-out records (each key its own account
and /24 network), under `suspend` so a false alarm shows as refusals: held-out as is; 5 % and
10 % retries (exact resends of one of the last five calls); a nightly re-score of the same 200
rows for ten nights; 12 of 20 features set to the training mean; 16-row requests sorted by one
feature; every feature shifted by +0.3 sd.

For each: the alarms by stream kind, the first alarm (index among rows sent, kind, stream), the
first refusal (row index, status and reason; 400 for an input outside the declared range is not
counted), the copy's
agreement at the first alarm and at the first refusal (from the rows answered before it), the
rows answered in all and the agreement of the copy trained on all of them.

Then the textbook attacks (uniform box, Jacobian steps 0.1 and 0.5, membership probing; 2,000
queries, one row per request, a gateway each, under `suspend` and `throttle`), the
in-distribution (Knockoff) attack up to the default daily quota, and (logistic only) equation
solving with a key granted probabilities.

The model's price. Each target is registered as its owner would: with the report of `bastion
assess --only extraction` on held-out data, whose `extraction_queries_95` the gateway reads. The
adaptive attacks and the benign clients run without account budgets (the detectors alone are
measured) unless `--account-budget-share` gives one; Knockoff, which no detector sees, runs twice:
without a budget, and with the gateway's default (each account `DEFAULT_BUDGET_SHARE` of the
measured cost a month), so its refusal at the budget and the copy's agreement there are shown.

Features of issue 12 are detected, not assumed: keys with accounts (`KeySpec.account`), rows per
request (`KeySpec.max_rows`), joint-distribution detectors (`bastion.serve.detect.RowJudge`),
checks before the answer (`bastion.serve.guard.RequestGuard` in the gateway), exact repeats
counted once (`bastion.serve.detect.RepeatFilter`), and the measured extraction cost
(`bastion.assess.extraction`); the header says which are present.

    .venv/bin/python benchmarks/attack_sim.py --seed 7            # full: about 45 minutes on a busy 2-core machine
    .venv/bin/python benchmarks/attack_sim.py --seed 7 --quick    # CI-sized: about 4 minutes

`--targets logistic`, `--only "(d)"` (adaptive attacks by name prefix), `--actions suspend`,
`--skip-benign` and `--skip-textbook` cut it down; progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import ipaddress
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import sklearn
import yaml
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

_ROOT = Path(__file__).resolve().parent.parent
for _folder in (_ROOT / "benchmarks", _ROOT / "tests"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))  # last: its audit.py, scan.py, sign.py must not shadow packages

import attack_sim_offline as offline  # noqa: E402
from _table import render_table  # noqa: E402

import bastion.serve.detect as detect_module  # noqa: E402
from bastion.audit import AuditEntry, AuditLog  # noqa: E402
from bastion.registry import Principal  # noqa: E402
from bastion.serve.detect import DetectorConfig, TrainingProfile  # noqa: E402
from bastion.serve.gateway import DEFAULT_BUDGET_SHARE, AlarmPolicy  # noqa: E402
from bastion.serve.keys import DEFAULT_QUOTA, ApiKey, KeySpec  # noqa: E402
from bastion.serve.limits import Quota, RateLimit  # noqa: E402
from bastion.serve.run import AUDIT_CHAIN, Assembled, GatewaySettings, assemble  # noqa: E402
from bastion.sign.keys import generate_key, save_keypair  # noqa: E402
from bastion.sign.ossf import sign_model  # noqa: E402
from corpus.gateway_env import INPUT, RegistryEnv, ServerThread, make_registry  # noqa: E402
from corpus.serving import LABELS, Dataset, fit_nonlinear, nonlinear_data, write_folder, write_model  # noqa: E402

MODEL = "attack-target"
NONLINEAR_MODEL = "attack-target-mlp"
TARGETS = ("logistic", "mlp")
FAST = RateLimit(per_second=100_000.0, burst=100_000)
BUDGETS = offline.BUDGETS  # (150, 500, 1000, 2000)
QUERIES = 2_000
ACTIONS = ("suspend", "throttle")
LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}
REFUSED = -1  # the label of a query the gateway did not answer
PUBLIC_ROWS = 200
MIN_RMS = 0.3  # the adaptive attacker never comes closer than this (sd, root mean square) to a row it sent
FILLERS = 4
JITTER = 0.35
BIG_ROWS = 64
# 403s that are about the request, not the key ("alarm": these rows are refused, the key may go
# on); any other 403 (suspended, or a reason of a newer gateway's) and any 401 end the key for good.
NOT_DEAD = frozenset({"out-of-scope", "token-from-token", "alarm"})
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Sizes:
    """How much each part sends; `FULL` for the note, `QUICK` for CI."""

    adaptive_queries: int = 3_000  # (a), (b), (f): rows sent
    dilution_queries: int = 3_000  # (c): synthetic rows, each with FILLERS fillers
    sybil_keys: int = 10
    sybil_per_key: int = 19
    big_goal_rows: int = 2_000  # (e): a key stops once this many rows were answered
    throttle_seconds: float = 60.0  # (e) under throttle: how long the attacker keeps asking
    benign_keys: int = 10
    benign_queries: int = 2_000
    textbook_queries: int = QUERIES
    knockoff_quota: int = DEFAULT_QUOTA.daily or 10_000
    actions: tuple[str, ...] = ACTIONS  # for the adaptive and textbook attacks
    textbook: bool = True


FULL = Sizes()
QUICK = Sizes(
    adaptive_queries=400,
    dilution_queries=200,
    big_goal_rows=640,
    throttle_seconds=6.0,
    benign_keys=1,
    textbook_queries=300,
    knockoff_quota=500,
    actions=("suspend",),
    textbook=False,
)


# --- what this gateway has of issue 12 ----------------------------------------------------------


def key_fields() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(KeySpec))


def has_accounts() -> bool:
    """Keys belong to accounts (`KeySpec.account`, issue 12 package C)."""
    return "account" in key_fields()


def has_row_limits() -> bool:
    """Keys carry a most rows per request (`KeySpec.max_rows`, issue 12 package C)."""
    return "max_rows" in key_fields()


def has_joint_detectors() -> bool:
    """The detectors judge each row against the joint distribution (`RowJudge`, issue 12 package B)."""
    return hasattr(detect_module, "RowJudge")


def judges_before_answering() -> bool:
    """The gateway judges rows before the model answers (issue 12 integration: `bastion.serve.guard`)."""
    try:
        guard = importlib.import_module("bastion.serve.guard")
    except ImportError:
        return False
    return hasattr(guard, "RequestGuard") and "RequestGuard" in vars(importlib.import_module("bastion.serve.gateway"))


def extraction_module() -> Any | None:
    """`bastion.assess.extraction` (issue 12 package A), or None before it lands."""
    try:
        return importlib.import_module("bastion.assess.extraction")
    except ImportError:
        return None


def features_line() -> str:
    marks = {
        "accounts": has_accounts(),
        "rows per request": has_row_limits(),
        "joint detectors": has_joint_detectors(),
        "judged before answering": judges_before_answering(),
        "repeats counted once": counts_repeats_once(),
        "extraction cost": extraction_module() is not None,
    }
    return "# issue 12 features: " + ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in marks.items())


def key_spec(name: str, **spec: Any) -> KeySpec:
    """`KeySpec(name, **spec)`, with a message that names the missing field on an older gateway."""
    unknown = sorted(set(spec) - key_fields())
    if unknown:
        raise TypeError(f"KeySpec has no {', '.join(unknown)}: this gateway predates the change that adds it")
    return KeySpec(name, **spec)


# --- the targets, served ----------------------------------------------------------------------

Predict = Callable[[np.ndarray], np.ndarray]
CopyFamily = Callable[[np.ndarray, np.ndarray], Any]  # (x, labels) -> a fitted classifier (predict, predict_proba)


class _Constant:
    """A copy that has seen one class only."""

    def __init__(self, label: int) -> None:
        self.label = label

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(x.shape[0], self.label)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.zeros((x.shape[0], len(LABELS)))
        p[:, self.label] = 1.0
        return p


def _fitted(make: Callable[[int], Any]) -> CopyFamily:
    def fit(x: np.ndarray, labels: np.ndarray) -> Any:
        classes = np.unique(labels)
        if classes.size < 2:
            return _Constant(int(classes[0]) if classes.size else 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return make(x.shape[0]).fit(x, labels)

    return fit


linear_copy = _fitted(lambda n: LogisticRegression(max_iter=2_000))
# The measured copy of the MLP: a hidden layer of 64 trained to convergence (it reaches 95 % from
# about 2,000 in-distribution labels). Inside the attack loop a faster one chooses the queries.
mlp_copy = _fitted(lambda n: MLPClassifier((64,), max_iter=300, random_state=0))
mlp_selector = _fitted(
    lambda n: MLPClassifier((32, 32), max_iter=200, early_stopping=n >= 500, n_iter_no_change=5, random_state=0)
)


@dataclass(frozen=True)
class Published:
    """What `serving.yaml` tells whoever has it: the profile's per-feature ranges, quantiles, spread."""

    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    levels: np.ndarray
    quantiles: np.ndarray  # (levels, features)
    n_samples: int
    typical_score: tuple[float, float]  # the band of mean squared z-scores the detector calls typical

    @classmethod
    def read(cls, folder: Path) -> Published:
        profile = yaml.safe_load((folder / "serving.yaml").read_text())["profile"]
        return cls(
            minimum=np.asarray(profile["minimum"]),
            maximum=np.asarray(profile["maximum"]),
            mean=np.asarray(profile["mean"]),
            std=np.asarray(profile["std"]),
            levels=np.asarray(profile["quantile_levels"]),
            quantiles=np.asarray(profile["quantiles"]),
            n_samples=int(profile["n_samples"]),
            typical_score=tuple(profile.get("typical_score", (0.0, 2.0))),
        )


@dataclass
class Target:
    """A world (data pools and the model), served by a registry's gateway, and what an attacker has of it."""

    world: offline.World
    env: RegistryEnv
    name: str = "logistic"
    model: str = MODEL
    folder: Path = Path()
    published: Published | None = None
    public: np.ndarray = field(default_factory=lambda: np.empty((0, offline.N_FEATURES)))
    copy: CopyFamily = linear_copy
    selector: CopyFamily = linear_copy
    audit_seen: int = 0  # the gateway chain's entries read so far (the chain only grows)
    # The registered assessment's measured cost (None before bastion.assess), and the share of it
    # each account's monthly budget is (the gateway's `account_budget_share`; None: no budget,
    # so the detectors alone are measured).
    extraction_95: int | None = None
    assessment: str = "no assessment registered"
    budget_share: float | None = None

    def agreement(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Agreement with the target, on held-out records, of a copy trained on (x, labels)."""
        if x.shape[0] == 0:
            return float(np.mean(self.world.target_eval == 0))  # a copy that knows nothing guesses the first label
        return float(np.mean(self.copy(x, labels).predict(self.world.x_eval) == self.world.target_eval))


def nonlinear_world(seed: int) -> offline.World:
    """The offline world's layout (training, benign, Knockoff and evaluation pools) with the MLP target."""
    n_benign = offline.N_BENIGN_KEYS * offline.BENIGN_QUERIES
    total = offline.N_TRAIN + n_benign + offline.N_KNOCKOFF + offline.N_EVAL
    x, y = nonlinear_data(seed, total)
    a, b = offline.N_TRAIN, offline.N_TRAIN + n_benign
    c = b + offline.N_KNOCKOFF
    model = fit_nonlinear(Dataset(x[:a], y[:a], x[c:], y[c:]))
    return offline.World(
        x_train=x[:a],
        y_train=y[:a],
        benign=x[a:b],
        knockoff=x[b:c],
        x_eval=x[c:],
        y_eval=y[c:],
        target=model,
        target_eval=model.predict(x[c:]),
        profile=TrainingProfile.from_data(x[:a]),
    )


def build_target(
    home: Path, seed: int, kind: str = "logistic", progress: Callable[[str], None] = lambda _: None, *, assessed: bool = True
) -> Target:
    """A target for `seed`: its world, and its model as ONNX, signed, promoted to production in a new registry.

    `kind`: "logistic" (the offline world's logistic regression) or "mlp" (the MLP on clustered classes).
    """
    folder = home / "model"
    if kind == "logistic":
        world = offline.build_world(seed)
        served = write_model(folder, "onnx", Dataset(world.x_train, world.y_train, world.x_eval, world.y_eval))
        world = replace(world, target=served, target_eval=served.predict(world.x_eval))
        name, copy, selector = MODEL, linear_copy, linear_copy
    elif kind == "mlp":
        world = nonlinear_world(seed)
        write_folder(folder, world.target, "onnx", Dataset(world.x_train, world.y_train, world.x_eval, world.y_eval))
        name, copy, selector = NONLINEAR_MODEL, mlp_copy, mlp_selector
    else:
        raise ValueError(f"unknown target kind {kind!r}: use one of {TARGETS}")
    key = generate_key("ecdsa-p256")
    public_key = save_keypair(key, home / "signer.key")
    sign_model(folder, key)
    env = make_registry(home / "registry", [public_key])
    assessment, extraction_95, summary = (
        assess(folder, world, home, seed, progress) if assessed else (None, None, "no assessment registered")
    )
    env.publish(name, folder, assessment=assessment)
    # The attacker's own rows: from the Knockoff pool, which neither training, evaluation nor the benign clients use.
    public = world.knockoff[np.random.default_rng(seed + 11).permutation(world.knockoff.shape[0])[:PUBLIC_ROWS]]
    return Target(
        world, env, kind, name, folder, Published.read(folder), public, copy, selector,
        extraction_95=extraction_95, assessment=summary,
    )


def assess(
    folder: Path, world: offline.World, home: Path, seed: int, progress: Callable[[str], None]
) -> tuple[Path | None, int | None, str]:
    """What the owner does before serving: `bastion assess FOLDER --only extraction --data HELD_OUT`,
    the report registered with the version, where the gateway reads the model's price (a few
    tens of seconds per target).

    Returns the report's path, its `extraction_queries_95` and a line saying what it measured
    (no report where `bastion.assess` has not landed).
    """
    if extraction_module() is None:
        return None, None, "no assessment: bastion.assess.extraction not available on this branch"
    from bastion.assess.assessment import assess_extraction  # noqa: PLC0415 - only where package A landed

    heldout = home / "owner-heldout.npy"
    np.save(heldout, world.x_eval)
    document, cost = assess_extraction(folder, data=heldout, seed=seed, progress=progress)
    report = home / "assessment.json"
    report.write_bytes(orjson.dumps(document))
    metrics = cost.metrics()
    line = "assessment registered (bastion assess --only extraction --data held-out, label only): " + ", ".join(
        f"{metric} {value:.0f}" for metric, value in sorted(metrics.items())
    )
    return report, int(metrics["extraction_queries_95"]), line


@dataclass
class Served:
    """An assembled gateway serving its inference port (what `gateway_env.RunningGateway` offers)."""

    assembled: Assembled
    inference: ServerThread
    caller: Principal  # who assembled it; key management is checked against it
    model: str = MODEL

    @property
    def url(self) -> str:
        return self.inference.url

    def key(self, name: str, **spec: Any) -> tuple[ApiKey, str]:
        """A new API key, seen by this gateway at once."""
        key, text = self.assembled.gateway.store.create(self.caller, key_spec(name, **spec))
        self.assembled.gateway.refresh()
        return key, text

    def stop(self) -> None:
        """Stop the server, then close the gateway (flushing its audit log)."""
        self.inference.stop()
        self.assembled.close()


def open_gateway(target: Target, action: str, **settings: Any) -> Served:
    """The gateway with its defaults but for the alarm action (and `settings`), on a real socket."""
    settings = {
        "models": (target.model,),
        "alarm_policy": AlarmPolicy(action=action),
        "account_budget_share": target.budget_share,
        **settings,
    }
    assembled = assemble(target.env.registry, target.env.admin, GatewaySettings(**settings))
    assert target.model in assembled.gateway.models, assembled.refused
    return Served(assembled, ServerThread(assembled.gateway.app()).start(), target.env.admin, target.model)


@contextmanager
def serving(target: Target, action: str, **settings: Any) -> Iterator[Served]:
    gateway = open_gateway(target, action, **settings)
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


@dataclass(frozen=True)
class Reply:
    """The gateway's answer to one request of one or more rows."""

    status: int
    reason: str
    labels: np.ndarray  # one per row; REFUSED unless status is 200
    retry_after: float | None  # seconds, from Retry-After


class Caller:
    """One API key over a keep-alive connection, from `source` (a local address) if given."""

    def __init__(self, gateway: Served, key: str, key_id: str, source: str | None = None) -> None:
        self.key_id = key_id
        self.url = f"{gateway.url}/v2/models/{gateway.model}/infer"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        transport = httpx.HTTPTransport(local_address=source) if source else None
        self.client = httpx.Client(headers=headers, timeout=30.0, transport=transport)

    def _post(self, rows: np.ndarray) -> httpx.Response:
        tensor = {"name": INPUT, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        return self.client.post(self.url, content=orjson.dumps({"inputs": [tensor]}))

    def ask(self, row: np.ndarray) -> Answer:
        response = self._post(row[None, :])
        if response.status_code != 200:
            return Answer(response.status_code, response.headers.get("x-bastion-refusal", ""), REFUSED)
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        return Answer(200, "", LABEL_INDEX[outputs["label"][0]], outputs.get("probabilities"))

    def ask_rows(self, rows: np.ndarray) -> Reply:
        response = self._post(rows)
        wait = response.headers.get("retry-after")
        if response.status_code != 200:
            refused = np.full(rows.shape[0], REFUSED)
            return Reply(response.status_code, response.headers.get("x-bastion-refusal", ""), refused, _seconds(wait))
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        return Reply(200, "", np.array([LABEL_INDEX[label] for label in outputs["label"]]), None)

    def close(self) -> None:
        self.client.close()


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


def new_caller(gateway: Served, name: str, *, source: str | None = None, **spec: Any) -> Caller:
    key, text = gateway.key(name, **spec)
    return Caller(gateway, text, key.key_id, source)


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

    def exchanges(self) -> list[Exchange]:
        """The trace as one-row requests."""
        return [
            Exchange(self.key_id, q[None, :], Reply(a.status, a.reason, np.array([a.label]), None), at)
            for q, a, at in zip(self.queries, self.answers, self.received_at, strict=True)
        ]

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

    def __init__(self, target: Target, caller: Caller, budget: int) -> None:
        self.target = target
        self.knockoff = target.world.knockoff
        self.caller = caller
        self.budget = budget
        self.trace = Trace(caller.key_id)

    def label(self, q: np.ndarray) -> np.ndarray:
        labels = np.empty(q.shape[0], dtype=int)
        guess: Predict | None = None
        for i, row in enumerate(q):
            answer = self.caller.ask(row) if len(self.trace.answers) < self.budget else None
            if answer is not None:
                self.trace.record(row, answer)
            if answer is not None and answer.label != REFUSED:
                labels[i] = answer.label
                continue
            if guess is None:
                guess = self.target.selector(*self.trace.answered()).predict
            labels[i] = int(guess(row[None, :])[0])
        return labels


# --- the audit chain ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmSeen:
    kind: str
    queries: int  # the count of the stream that fired when it fired (today: the key's rows observed)
    action: str
    stream: str = ""  # "key:ID" unless the entry names another ("account:…", "net:…", "model:…")
    actor: str = ""
    seq: int = 0
    before_answer: bool = False  # the entry names its stream: raised by checks before the model answers
    keys: tuple[str, ...] = ()  # the keys it concerns (acted on, or the key it was raised for)


def audit_head(target: Target) -> int:
    """The sequence number of the gateway chain's last entry (0 if none): a scenario reads what follows."""
    for entry in AuditLog(target.env.registry.engine, AUDIT_CHAIN).entries(after=target.audit_seen):
        target.audit_seen = entry.seq
    return target.audit_seen


def audit_alarms(target: Target, after: int = 0) -> list[AlarmSeen]:
    """The gateway's "alarm" entries after sequence number `after`, in order."""
    found = []
    for entry in AuditLog(target.env.registry.engine, AUDIT_CHAIN).entries(after=after):
        if entry.action == "alarm":
            found.append(_alarm_seen(entry))
    return found


def _alarm_seen(entry: AuditEntry) -> AlarmSeen:
    d = entry.details
    named = str(d.get("stream") or "")
    stream = named or f"key:{entry.actor}"
    if "keys" in d:
        keys = tuple(str(k) for k in d["keys"])
    else:
        keys = (stream.removeprefix("key:"),) if stream.startswith("key:") else (entry.actor,)
    return AlarmSeen(
        str(d["kind"]),
        int(d.get("queries", 0)),
        str(d.get("action", "")),
        stream,
        entry.actor,
        entry.seq,
        before_answer=bool(named),
        keys=keys,
    )


def alarms_by_key(entries: list[AuditEntry]) -> dict[str, list[AlarmSeen]]:
    """The gateway's "alarm" audit entries, per key id they concern, in order (an alert on the
    model's whole traffic concerns no key)."""
    found: dict[str, list[AlarmSeen]] = {}
    for entry in entries:
        if entry.action == "alarm":
            alarm = _alarm_seen(entry)
            for key_id in alarm.keys:
                found.setdefault(key_id, []).append(alarm)
    return found


def counts_repeats_once() -> bool:
    """The detectors count an exact repeat of a stream's earlier row once (issue 12 package B)."""
    return hasattr(detect_module, "RepeatFilter")


def locate_alarm(exchanges: Sequence[Exchange], alarm: AlarmSeen, in_stream: Callable[[Exchange], bool]) -> int | None:
    """The 1-based index among the rows of `exchanges` of the row that raised `alarm`, from its
    stream's count (`in_stream`: the requests of that stream).

    Which requests a stream counts depends on where the alarm was raised. Detectors after the
    answer (all of them before issue 12; an entry without a stream) see the rows answered and
    those refused as out of range (400 invalid-input). Checks before the answer (an entry that
    names its stream) count every request that passed authentication, rows per request and the
    limits: answered, out of range, refused for an alarm (403 or 429 "alarm"), and a key's first
    403 "suspended" (the request whose own alarm suspended it; later ones stop at
    authentication); where a repeat filter comes first (issue 12), they count an exact repeat of
    the stream's earlier row once.
    """
    suspended: set[str] = set()

    def observed(e: Exchange) -> bool:
        if not alarm.before_answer:
            return e.answered or not e.refused
        if e.reply.status == 403 and e.reply.reason == "suspended":
            first = e.key_id not in suspended
            suspended.add(e.key_id)
            return first
        return e.answered or not e.refused or e.reply.reason == "alarm"

    # Streams fed through a repeat filter count a row once; the key monitor behind the answer counts every one.
    seen: set[bytes] | None = set() if alarm.before_answer and counts_repeats_once() else None
    count = start = 0
    for e in exchanges:
        if observed(e) and in_stream(e):
            for i, row in enumerate(e.rows.astype(np.float32)):
                if seen is not None:
                    digest = row.tobytes()
                    if digest in seen:
                        continue
                    seen.add(digest)
                count += 1
                if count == alarm.queries:
                    return start + i + 1
        start += e.rows.shape[0]
    return None


# --- textbook attacks (the offline script's six) ----------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    run: Callable[[Target, Caller, int], Trace]
    plan: Callable[[offline.World, int], np.ndarray]  # what it would send to an open gateway


def _fixed(make: Callable[[offline.World, int], np.ndarray]) -> Callable[[Target, Caller, int], Trace]:
    return lambda target, caller, n: send_all(caller, make(target.world, n))


def _jacobian_run(step: float, seed: int) -> Callable[[Target, Caller, int], Trace]:
    def run(target: Target, caller: Caller, n: int) -> Trace:
        oracle = GatewayOracle(target, caller, n)
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


def agreement(target: Target, x: np.ndarray, labels: np.ndarray) -> float:
    return target.agreement(x, labels)


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
    answered_from_alarm: int = 0  # queries answered from the one that raised the alarm on (itself included)

    @property
    def best(self) -> float:
        """The most the copy reached at any point measured."""
        return max([self.final, *self.at_budget.values(), *([self.at_alarm] if self.at_alarm is not None else [])])


def measure(target: Target, name: str, action: str, trace: Trace, alarms: list[AlarmSeen], plan: np.ndarray) -> Outcome:
    labels = trace.labels
    answered_idx = np.flatnonzero(labels != REFUSED)
    exchanges = trace.exchanges()
    located = [(locate_alarm(exchanges, a, lambda e: True), a) for a in alarms]
    alarm_at, alarm = min(located, key=lambda p: (p[0] is None, p[0] or 0, p[1].seq), default=(None, None))
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
        at_alarm=target.agreement(*trace.answered(alarm_at)) if alarm_at else None,
        at_budget={b: target.agreement(*trace.answered(b)) for b in BUDGETS if b <= len(trace.answers)},
        final=target.agreement(*trace.answered()),
        open_final=target.agreement(plan, target.world.label(plan)),
        answered_from_alarm=int(np.sum(answered_idx + 1 >= alarm_at)) if alarm_at else 0,
    )


def run_attacks(target: Target, action: str, chosen: list[Attack], n: int = QUERIES) -> list[Outcome]:
    """Each attack from a key of its own (fast rate, default quota) on a gateway of its own with `action`
    (the streams of a network or of the model would otherwise carry one attack's alarm into the next)."""
    out = []
    for attack in chosen:
        head = audit_head(target)
        with serving(target, action) as gateway:
            caller = new_caller(gateway, f"attacker {attack.name}", rate=FAST)
            try:
                trace = attack.run(target, caller, n)
            finally:
                caller.close()
        alarms = [a for a in audit_alarms(target, head) if trace.key_id in a.keys]
        out.append(measure(target, attack.name, action, trace, alarms, attack.plan(target.world, n)))
    return out


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
    head = audit_head(target)
    with serving(target, action) as gateway:
        for k in range(keys):
            caller = new_caller(gateway, f"benign {k}", rate=FAST, quota=None)
            try:
                traces.append(send_all(caller, world.benign[k * queries : (k + 1) * queries]))
            finally:
                caller.close()
    seconds = time.perf_counter() - started
    alarms = audit_alarms(target, head)
    refused = sum(int(np.sum(t.statuses != 200)) for t in traces)
    return BenignOutcome(keys, queries, refused, len(alarms), seconds)


@dataclass(frozen=True)
class KnockoffOutcome:
    quota: int
    answered: int
    refusal: tuple[int, str] | None  # (index among sent, reason) of the first refusal
    at_budget: dict[int, float]
    alarms: list[AlarmSeen]
    at_refusal: float | None = None  # the copy from every row answered before the first refusal


def run_knockoff(target: Target, quota: int, budgets: tuple[int, ...], seed: int, extra: int = 5) -> KnockoffOutcome:
    """In-distribution queries from a key with a daily quota of `quota`, and `extra` past it."""
    pool = offline.knockoff(target.world, offline.N_KNOCKOFF, np.random.default_rng(seed + 4))
    q = np.resize(pool, (quota + extra, pool.shape[1]))  # past the pool (10,000), it repeats
    head = audit_head(target)
    with serving(target, "suspend") as gateway:
        caller = new_caller(gateway, "knockoff", rate=FAST, quota=Quota(daily=quota, monthly=None))
        try:
            trace = send_all(caller, q)
        finally:
            caller.close()
    alarms = audit_alarms(target, head)
    at = {b: target.agreement(*trace.answered(b)) for b in budgets if b <= quota}
    answered = int(np.sum(trace.labels != REFUSED))
    refusal = trace.first_refusal((400, 403, 429))
    at_refusal = target.agreement(*trace.answered(refusal[0] - 1)) if refusal is not None and refusal[0] > 1 else None
    return KnockoffOutcome(quota, answered, refusal, at, alarms, at_refusal)


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
    head = audit_head(target)
    with serving(target, "suspend") as gateway:
        caller = new_caller(gateway, "probabilities", rate=FAST, output="probabilities")
        try:
            answers = [caller.ask(row) for row in q]
        finally:
            caller.close()
    alarms = audit_alarms(target, head)
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


# --- scenarios: several keys, requests of several rows ---------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request of a scenario and its answer."""

    key_id: str
    rows: np.ndarray
    reply: Reply
    at: float  # time.monotonic() when the answer came

    @property
    def answered(self) -> bool:
        return self.reply.status == 200

    @property
    def refused(self) -> bool:
        """Refused by the gateway's defences (an input outside the declared range, 400, is not counted)."""
        return not self.answered and not (self.reply.status == 400 and self.reply.reason == "invalid-input")

    @property
    def dead(self) -> bool:
        """The key is refused for good."""
        return self.reply.status == 401 or (self.reply.status == 403 and self.reply.reason not in NOT_DEAD)


class Session:
    """A scenario's keys on one gateway, and every request they made, in order."""

    def __init__(self, gateway: Served) -> None:
        self.gateway = gateway
        self.callers: dict[str, Caller] = {}
        self.account_of: dict[str, str] = {}
        self.source_of: dict[str, str] = {}  # the local address each key connects from
        self.exchanges: list[Exchange] = []
        self.notes: list[str] = []

    def key(self, name: str, *, account: str | None = None, source: str | None = None, **spec: Any) -> str:
        """A new key; `account` is passed on where keys have accounts, and noted where they do not."""
        if account is not None and has_accounts():
            spec["account"] = account
        elif account is not None and "no accounts" not in self.notes:
            self.notes.append("no accounts")
        key, text = self.gateway.key(name, **spec)
        self.callers[key.key_id] = Caller(self.gateway, text, key.key_id, source)
        self.account_of[key.key_id] = str(getattr(key, "account", None) or account or name)
        self.source_of[key.key_id] = source or LOOPBACK
        return key.key_id

    def send(self, key_id: str, rows: np.ndarray) -> Exchange:
        reply = self.callers[key_id].ask_rows(rows)
        exchange = Exchange(key_id, rows, reply, time.monotonic())
        self.exchanges.append(exchange)
        return exchange

    def close(self) -> None:
        for caller in self.callers.values():
            caller.close()

    # --- what it adds up to

    @property
    def rows_sent(self) -> int:
        return sum(e.rows.shape[0] for e in self.exchanges)

    @property
    def rows_answered(self) -> int:
        return sum(e.rows.shape[0] for e in self.exchanges if e.answered)

    def answered(self, through_row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The rows answered, and their labels, in the requests up to the one holding row `through_row`
        (1-based among rows sent; None: all)."""
        xs, ys, start = [], [], 0
        for e in self.exchanges:
            if through_row is not None and start + 1 > through_row:
                break
            if e.answered:
                xs.append(e.rows)
                ys.append(e.reply.labels)
            start += e.rows.shape[0]
        if not xs:
            return np.empty((0, offline.N_FEATURES)), np.empty(0, dtype=int)
        return np.vstack(xs), np.concatenate(ys)

    def first_refusal(self) -> tuple[int, Exchange] | None:
        """(1-based index among rows sent of the request's first row, the exchange) of the first refusal."""
        start = 0
        for e in self.exchanges:
            if e.refused:
                return start + 1, e
            start += e.rows.shape[0]
        return None

    def locate(self, alarm: AlarmSeen) -> int | None:
        """The 1-based index among rows sent of the row that raised `alarm` (see `locate_alarm`)."""
        return locate_alarm(self.exchanges, alarm, lambda e: self._in_stream(e, alarm))

    def _in_stream(self, e: Exchange, alarm: AlarmSeen) -> bool:
        kind, _, name = alarm.stream.partition(":")
        if kind == "key":
            return e.key_id == name
        if kind == "account":
            return self.account_of.get(e.key_id) == name
        if kind == "net":
            try:
                return ipaddress.ip_address(self.source_of.get(e.key_id, LOOPBACK)) in ipaddress.ip_network(name)
            except ValueError:
                return True
        return True  # the model's: every key here (each scenario has a gateway of its own)


class Exhausted(Exception):
    """Every key the attacker holds is refused for good."""


class KeyRing:
    """The attacker's keys, used in turn: each for `per_key` rows (None: until it is refused for good)."""

    def __init__(self, session: Session, key_ids: Sequence[str], per_key: int | None = None) -> None:
        self.session = session
        self.key_ids = list(key_ids)
        self.per_key = per_key
        self.current = 0
        self.used = 0

    def ask(self, rows: np.ndarray) -> np.ndarray:
        if self.per_key is not None and self.used + rows.shape[0] > self.per_key and self.used:
            self.current, self.used = self.current + 1, 0
        if self.current >= len(self.key_ids):
            raise Exhausted
        exchange = self.session.send(self.key_ids[self.current], rows)
        self.used += rows.shape[0]
        if exchange.dead:
            self.current, self.used = self.current + 1, 0
        return exchange.reply.labels


class Learner:
    """What the attacker knows: the rows it got labels for, and a copy refitted as they grow by a tenth."""

    def __init__(self, fit: CopyFamily) -> None:
        self.fit = fit
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.known = 0
        self._copy: Any = None
        self._fitted_at = -1

    def learn(self, rows: np.ndarray, labels: np.ndarray) -> None:
        ok = labels != REFUSED
        if ok.any():
            self.x.append(rows[ok])
            self.y.append(labels[ok])
            self.known += int(ok.sum())

    def copy(self) -> Any:
        if self._copy is None or self.known >= max(self._fitted_at + 10, 1.1 * self._fitted_at):
            x = np.vstack(self.x) if self.x else np.empty((0, offline.N_FEATURES))
            y = np.concatenate(self.y) if self.y else np.empty(0, dtype=int)
            self._copy = self.fit(x, y)
            self._fitted_at = self.known
        return self._copy


class Spacing:
    """Every row sent, in standard deviations, so that no new one comes within `min_rms` of them."""

    def __init__(self, std: np.ndarray, min_rms: float = MIN_RMS) -> None:
        self.scale = 1.0 / np.where(std > 0, std, 1.0)
        self.min_sq = min_rms**2 * std.shape[0]  # squared L2 in sd units
        self.sent = np.empty((0, std.shape[0]))
        self.norms = np.empty(0)

    def add(self, rows: np.ndarray) -> None:
        z = rows * self.scale
        self.sent = np.vstack([self.sent, z])
        self.norms = np.concatenate([self.norms, np.einsum("ij,ij->i", z, z)])

    def pick(self, candidates: np.ndarray, order: np.ndarray | None, count: int) -> np.ndarray:
        """Up to `count` candidates, in `order` (None: as given), each far enough from every row sent and picked."""
        z = candidates * self.scale
        far = np.ones(z.shape[0], dtype=bool)
        cn = np.einsum("ij,ij->i", z, z)
        for start in range(0, self.sent.shape[0], 1_024):
            part, norms = self.sent[start : start + 1_024], self.norms[start : start + 1_024]
            nearest = (cn[:, None] + norms[None, :] - 2.0 * z @ part.T).min(axis=1)
            far &= nearest >= self.min_sq
        chosen: list[int] = []
        for i in order if order is not None else range(z.shape[0]):
            if len(chosen) == count:
                break
            if far[i] and all(np.sum((z[i] - z[j]) ** 2) >= self.min_sq for j in chosen):
                chosen.append(int(i))
        return candidates[chosen]


Sampler = Callable[[np.random.Generator, int], np.ndarray]


def ranges_sampler(published: Published) -> Sampler:
    """Each feature uniform on the centre of its published range, with the variance of a normal
    feature of that range (from the range and the record count alone), so that the mean squared
    z-score looks typical; the attacker's estimate, not the profile's standard deviation."""
    z_n = statistics.NormalDist().inv_cdf(1.0 - 1.0 / (2.0 * published.n_samples))
    centre = (published.minimum + published.maximum) / 2.0
    half = math.sqrt(3.0) * (published.maximum - published.minimum) / (2.0 * z_n)
    return lambda rng, n: rng.uniform(centre - half, centre + half, size=(n, centre.shape[0]))


def marginal_sampler(published: Published) -> Sampler:
    """Each feature independently from its published quantiles (linear between levels)."""
    levels, quantiles = published.levels, published.quantiles

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.uniform(levels[0], levels[-1], size=(n, quantiles.shape[1]))
        return np.column_stack([np.interp(u[:, j], levels, quantiles[:, j]) for j in range(quantiles.shape[1])])

    return sample


def box_sampler(published: Published) -> Sampler:
    """Uniform inside the data's range: the textbook probe, alarmed today."""
    return lambda rng, n: rng.uniform(published.minimum, published.maximum, size=(n, published.minimum.shape[0]))


def _uncertainty(copy: Any, candidates: np.ndarray) -> np.ndarray:
    """The copy's margin between its two likeliest labels: small near its decision boundary."""
    p = np.sort(copy.predict_proba(candidates), axis=1)
    margin: np.ndarray = p[:, -1] - p[:, -2]
    return margin


Pack = Callable[[np.ndarray], list[np.ndarray]]


def one_per_request(rows: np.ndarray) -> list[np.ndarray]:
    return [row[None, :] for row in rows]


def boundary_attack(
    ring: KeyRing,
    learner: Learner,
    spacing: Spacing,
    sampler: Sampler,
    queries: int,
    rng: np.random.Generator,
    *,
    start: int = 50,
    pack: Pack = one_per_request,
) -> None:
    """`start` spaced queries from `sampler`, then rounds of the candidates the copy is least sure
    of (a tenth more each round, at least 10), never within `spacing` of a row sent before."""
    sent = 0

    def send(rows: np.ndarray) -> None:
        nonlocal sent
        for request in pack(rows):
            labels = ring.ask(request)
            learner.learn(request, labels)
            spacing.add(request)
        sent += rows.shape[0]

    empty = 0
    try:
        send(spacing.pick(sampler(rng, 4 * start), None, min(start, queries)))
        while sent < queries and empty < 3:
            batch = min(queries - sent, max(10, sent // 10))
            candidates = sampler(rng, 20 * batch)
            picked = spacing.pick(candidates, np.argsort(_uncertainty(learner.copy(), candidates)), batch)
            empty = empty + 1 if picked.shape[0] == 0 else 0
            send(picked)
    except Exhausted:
        pass


def diluted(make_fillers: Sampler, rng: np.random.Generator) -> Pack:
    """Each row in a request of its own with FILLERS fillers, at a random place among them."""

    def pack(rows: np.ndarray) -> list[np.ndarray]:
        requests = []
        for row in rows:
            block = make_fillers(rng, FILLERS)
            requests.append(np.insert(block, rng.integers(FILLERS + 1), row, axis=0))
        return requests

    return pack


def jittered_fillers(public: np.ndarray, std: np.ndarray) -> Sampler:
    return lambda rng, n: (
        public[rng.integers(public.shape[0], size=n)] + rng.normal(size=(n, std.shape[0])) * JITTER * std
    )


def recombined_fillers(public: np.ndarray) -> Sampler:
    def make(rng: np.random.Generator, n: int) -> np.ndarray:
        picks = rng.integers(public.shape[0], size=(n, public.shape[1]))
        return public[picks, np.arange(public.shape[1])[None, :]]

    return make


def benign_distances(public: np.ndarray, std: np.ndarray, skip: int = 10) -> np.ndarray:
    """Each public row's L2 distance (in sd) to the nearest row before it, past the first `skip`."""
    z = public / np.where(std > 0, std, 1.0)
    return np.array([np.sqrt(((z[:i] - z[i]) ** 2).sum(axis=1)).min() for i in range(skip, z.shape[0])])


def copy_gradient(copy: Any, x: np.ndarray, labels: np.ndarray, step: np.ndarray) -> np.ndarray:
    """d P_copy(label | x) / dx by central differences, `step` per feature."""
    grad = np.empty_like(x)
    rows = np.arange(x.shape[0])
    for j in range(x.shape[1]):
        up, down = x.copy(), x.copy()
        up[:, j] += step[j]
        down[:, j] -= step[j]
        grad[:, j] = (copy.predict_proba(up)[rows, labels] - copy.predict_proba(down)[rows, labels]) / (2 * step[j])
    return grad


def keep_typical(rows: np.ndarray, published: Published, margin: float = 0.9) -> np.ndarray:
    """`rows` pulled towards the published mean until their mean squared z-score is within `margin`
    of the typical band's top, then clipped to just inside the published ranges (rows travel as
    float32, which may round an edge outward): what passes a detector that checks ranges and the
    mean squared z-score (an attacker who has read it does this)."""
    std = np.where(published.std > 0, published.std, 1.0)
    z = (rows - published.mean) / std
    score = np.mean(z**2, axis=1)
    ceiling = margin * published.typical_score[1]
    shrink = np.sqrt(np.minimum(1.0, ceiling / np.maximum(score, 1e-12)))
    inside = 1e-3 * std
    return np.clip(published.mean + z * shrink[:, None] * std, published.minimum + inside, published.maximum - inside)


def jacobian_benign_steps(
    ring: KeyRing,
    learner: Learner,
    published: Published,
    public: np.ndarray,
    queries: int,
    rng: np.random.Generator,
    *,
    seeds: int = 10,
    tau: int = 3,
) -> None:
    """Papernot et al.'s augmentation from `seeds` public rows, x + lambda sign(grad P_copy(O(x) | x)),
    lambda flipping sign every `tau` rounds, each step as long (L2, in sd) as a distance drawn from
    benign traffic's, and each new point kept typical (`keep_typical`).

    Ten seeds, as the offline script: from all 200 public rows the first 200 queries would be
    in-distribution extraction (Knockoff, undetectable, 95 % on the logistic target by itself),
    and the row would no longer measure what the step sizes do."""
    distances = benign_distances(public, published.std)
    std = np.where(published.std > 0, published.std, 1.0)
    s = public[rng.choice(public.shape[0], size=seeds, replace=False)]

    def ask_each(rows: np.ndarray) -> np.ndarray:
        labels = np.array([ring.ask(row[None, :])[0] for row in rows])
        learner.learn(rows, labels)
        return labels

    try:
        labels, sent, rnd = ask_each(s), seeds, 0
        while sent < queries:
            known = labels != REFUSED
            base, base_labels = s[known], labels[known]
            if base.shape[0] == 0:
                return
            grad = copy_gradient(learner.copy(), base, base_labels, 1e-3 * std)
            direction = np.where(grad >= 0, 1.0, -1.0)
            length = rng.choice(distances, size=base.shape[0]) / np.linalg.norm(direction / std, axis=1)
            new = base + ((-1.0) ** (rnd // tau)) * length[:, None] * direction
            new = keep_typical(new, published)[: queries - sent]
            s, labels = np.vstack([s, new]), np.concatenate([labels, ask_each(new)])
            sent += new.shape[0]
            rnd += 1
    except Exhausted:
        pass


# --- measuring a scenario ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioOutcome:
    """One scenario on one gateway: where it was first alarmed and refused, and what it got."""

    target: str
    scenario: str
    action: str
    keys: int
    requests: int
    rows_sent: int
    rows_answered: int
    alarms: tuple[AlarmSeen, ...]
    alarm: AlarmSeen | None  # the first
    alarm_row: int | None  # 1-based index among rows sent of the row that raised it
    refusal: tuple[int, int, str] | None  # (row index, status, reason) of the first refused request
    refusals: int  # requests refused
    at_alarm: float | None
    at_refusal: float | None
    final: float | None  # the copy from every answer
    seconds: float
    notes: tuple[str, ...] = ()
    session: Session | None = field(default=None, repr=False, compare=False)  # every request and answer

    @property
    def best(self) -> float:
        """The most the copy reached at any point measured."""
        return max(v for v in (self.at_alarm, self.at_refusal, self.final, 0.0) if v is not None)


def run_scenario(
    target: Target, scenario: str, action: str, play: Callable[[Session], None], *, copy: bool = True, **settings: Any
) -> ScenarioOutcome:
    """`play` on a gateway of its own with `action`; the outcome from its requests and the audit chain."""
    head = audit_head(target)
    started = time.perf_counter()
    with serving(target, action, **settings) as gateway:
        session = Session(gateway)
        try:
            play(session)
        finally:
            session.close()
    seconds = time.perf_counter() - started
    alarms = tuple(audit_alarms(target, head))
    located = [(session.locate(a), a) for a in alarms]
    first = min(located, key=lambda p: (p[0] is None, p[0] or 0, p[1].seq), default=(None, None))
    refusal = session.first_refusal()
    cache: dict[int | None, float] = {}

    def agree(before: int | None) -> float | None:
        if not copy:
            return None
        if before not in cache:
            cache[before] = target.agreement(*session.answered(before))
        return cache[before]

    alarm_row = first[0]
    return ScenarioOutcome(
        target=target.name,
        scenario=scenario,
        action=action,
        keys=len(session.callers),
        requests=len(session.exchanges),
        rows_sent=session.rows_sent,
        rows_answered=session.rows_answered,
        alarms=alarms,
        alarm=first[1],
        alarm_row=alarm_row,
        refusal=(refusal[0], refusal[1].reply.status, refusal[1].reply.reason) if refusal else None,
        refusals=sum(1 for e in session.exchanges if e.refused),
        at_alarm=agree(alarm_row) if alarm_row is not None else None,
        at_refusal=agree(refusal[0]) if refusal else None,
        final=agree(None),
        seconds=seconds,
        notes=tuple(session.notes),
        session=session,
    )


# --- the adaptive attacks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    play: Callable[[Target, Session, np.random.Generator, Sizes], None]
    actions: tuple[str, ...] | None = None  # None: every action of the run


def _attacker_key(session: Session, name: str, **spec: Any) -> str:
    return session.key(name, rate=FAST, **spec)


def _boundary(sampler: Callable[[Published], Sampler]) -> Callable[[Target, Session, np.random.Generator, Sizes], None]:
    def play(target: Target, session: Session, rng: np.random.Generator, sizes: Sizes) -> None:
        assert target.published is not None
        ring = KeyRing(session, [_attacker_key(session, "attacker")])
        spacing = Spacing(target.published.std)
        boundary_attack(ring, Learner(target.selector), spacing, sampler(target.published), sizes.adaptive_queries, rng)

    return play


def _dilution(kind: str) -> Callable[[Target, Session, np.random.Generator, Sizes], None]:
    def play(target: Target, session: Session, rng: np.random.Generator, sizes: Sizes) -> None:
        published = target.published
        assert published is not None
        fillers = (
            jittered_fillers(target.public, published.std) if kind == "jittered" else recombined_fillers(target.public)
        )
        ring = KeyRing(session, [_attacker_key(session, "attacker")])
        boundary_attack(
            ring,
            Learner(target.selector),
            Spacing(published.std),
            ranges_sampler(published),
            sizes.dilution_queries,
            rng,
            pack=diluted(fillers, rng),
        )

    return play


def _sybil(accounts: bool) -> Callable[[Target, Session, np.random.Generator, Sizes], None]:
    def play(target: Target, session: Session, rng: np.random.Generator, sizes: Sizes) -> None:
        published = target.published
        assert published is not None
        keys = [
            _attacker_key(
                session,
                f"sybil {k}",
                account=f"sybil-{k}" if accounts else "sybil",
                source=f"127.0.{k + 1}.1" if accounts else None,
            )
            for k in range(sizes.sybil_keys)
        ]
        ring = KeyRing(session, keys, per_key=sizes.sybil_per_key)
        total = sizes.sybil_keys * sizes.sybil_per_key
        boundary_attack(
            ring,
            Learner(target.selector),
            Spacing(published.std),
            ranges_sampler(published),
            total,
            rng,
            start=min(50, total // 4),
        )

    return play


def _big_one_key(target: Target, session: Session, rng: np.random.Generator, sizes: Sizes, seconds: float) -> None:
    """64-row requests from one key until `big_goal_rows` are answered, the key is refused for good
    or for the request's size, or `seconds` pass; a 429 is waited out as its Retry-After says."""
    assert target.published is not None
    sample = box_sampler(target.published)
    key = _attacker_key(session, "attacker")
    deadline = time.monotonic() + seconds
    while session.rows_answered < sizes.big_goal_rows and time.monotonic() < deadline:
        exchange = session.send(key, sample(rng, BIG_ROWS))
        if exchange.dead or (exchange.refused and exchange.reply.status in (400, 413, 422)):
            return
        if exchange.reply.status == 429:
            if exchange.reply.retry_after is None:
                return  # no Retry-After: the gateway says this request can never pass
            time.sleep(max(0.0, min(exchange.reply.retry_after, deadline - time.monotonic())))


def _big_ten_keys(target: Target, session: Session, rng: np.random.Generator, sizes: Sizes) -> None:
    assert target.published is not None
    sample = box_sampler(target.published)
    for k in range(10):
        session.send(_attacker_key(session, f"big {k}", account="big"), sample(rng, BIG_ROWS))


def _jacobian(target: Target, session: Session, rng: np.random.Generator, sizes: Sizes) -> None:
    assert target.published is not None
    ring = KeyRing(session, [_attacker_key(session, "attacker")])
    jacobian_benign_steps(ring, Learner(target.selector), target.published, target.public, sizes.adaptive_queries, rng)


def adaptive_scenarios() -> list[Scenario]:
    sybil = [Scenario("(d) Sybil 10x19, one account", _sybil(accounts=False))]
    if has_accounts():
        sybil.append(Scenario("(d) Sybil 10x19, 10 accounts+nets", _sybil(accounts=True)))
    return [
        Scenario("(a) ranges + boundary", _boundary(ranges_sampler)),
        Scenario("(b) marginals + boundary", _boundary(marginal_sampler)),
        Scenario("(c) dilution, jittered fillers", _dilution("jittered")),
        Scenario("(c) dilution, recombined fillers", _dilution("recombined")),
        *sybil,
        Scenario(
            f"(e) {BIG_ROWS}-row requests, 1 key",
            lambda t, s, r, z: _big_one_key(t, s, r, z, z.throttle_seconds),
            ("throttle",),
        ),
        Scenario(
            f"(e) {BIG_ROWS}-row requests, 1 key", lambda t, s, r, z: _big_one_key(t, s, r, z, 600.0), ("suspend",)
        ),
        Scenario(f"(e) 10 keys x 1 {BIG_ROWS}-row request", _big_ten_keys),
        Scenario("(f) Jacobian, benign step sizes", _jacobian),
    ]


def run_adaptive(
    target: Target,
    sizes: Sizes,
    seed: int,
    progress: Callable[[str], None] = lambda _: None,
    only: Sequence[str] = (),
) -> list[ScenarioOutcome]:
    """Each adaptive attack (those whose name starts with one of `only`, if given) under each of `sizes.actions`."""
    out = []
    for action in sizes.actions:
        for i, scenario in enumerate(adaptive_scenarios()):
            if scenario.actions is not None and action not in scenario.actions:
                continue
            if only and not scenario.name.startswith(tuple(only)):
                continue
            rng = np.random.default_rng([seed, 12, i])

            def play(session: Session, scenario: Scenario = scenario, rng: np.random.Generator = rng) -> None:
                scenario.play(target, session, rng, sizes)

            progress(f"{target.name}: {scenario.name} under {action}")
            out.append(run_scenario(target, scenario.name, action, play))
    return out


# --- benign clients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenignClient:
    name: str
    make: Callable[[np.ndarray, Published, np.random.Generator], np.ndarray]  # a key's records -> what it sends
    rows_per_request: int = 1


def with_retries(share: float) -> Callable[[np.ndarray, Published, np.random.Generator], np.ndarray]:
    """Records in order, with `share` of the calls an exact resend of one of the last five."""

    def make(records: np.ndarray, _: Published, rng: np.random.Generator) -> np.ndarray:
        sent: list[np.ndarray] = []
        fresh = iter(records)
        while len(sent) < records.shape[0]:
            if sent and rng.random() < share:
                sent.append(sent[-int(rng.integers(1, min(5, len(sent)) + 1))])
            else:
                sent.append(next(fresh))
        return np.asarray(sent)

    return make


def mean_imputed(missing: int) -> Callable[[np.ndarray, Published, np.random.Generator], np.ndarray]:
    def make(records: np.ndarray, published: Published, rng: np.random.Generator) -> np.ndarray:
        out = records.copy()
        for row in out:
            holes = rng.choice(row.shape[0], size=missing, replace=False)
            row[holes] = published.mean[holes]
        return out

    return make


def benign_clients(queries: int) -> list[BenignClient]:
    nights = 10
    per_night = max(1, queries // nights)
    return [
        BenignClient("held-out records", lambda x, p, r: x),
        BenignClient("5% retries", with_retries(0.05)),
        BenignClient("10% retries", with_retries(0.10)),
        BenignClient(
            f"nightly re-score, {per_night} rows x {nights}", lambda x, p, r: np.tile(x[:per_night], (nights, 1))
        ),
        BenignClient("12 of 20 features mean-imputed", mean_imputed(12)),
        BenignClient("16-row batches sorted by feature 0", lambda x, p, r: x[np.argsort(x[:, 0], kind="stable")], 16),
        BenignClient("every feature +0.3 sd", lambda x, p, r: x + 0.3 * p.std),
    ]


def run_benign_client(
    target: Target, client: BenignClient, keys: int, queries: int, seed: int, action: str = "suspend"
) -> ScenarioOutcome:
    """`keys` keys (each its own account and /24 network), each sending what `client` makes of its
    own `queries` held-out records, one after the other."""
    published = target.published
    assert published is not None

    def play(session: Session) -> None:
        rng = np.random.default_rng([seed, 13])
        for k in range(keys):
            records = target.world.benign[k * queries : (k + 1) * queries]
            sends = client.make(records, published, rng)
            key = session.key(f"benign {k}", rate=FAST, quota=None, source=f"127.0.{k + 1}.1")
            for start in range(0, sends.shape[0], client.rows_per_request):
                session.send(key, sends[start : start + client.rows_per_request])

    return run_scenario(target, client.name, action, play, copy=False)


# --- report -------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _alarm_cell(o: ScenarioOutcome) -> str:
    if o.alarm is None:
        return "none"
    where = str(o.alarm_row) if o.alarm_row is not None else "?"
    stream = o.alarm.stream.partition(":")[0]
    return f"{where} {o.alarm.kind} [{stream}]"


def _alarms_cell(o: ScenarioOutcome) -> str:
    """How many alarms, and on which kinds of stream: "10 (key 9, model 1)"."""
    if not o.alarms:
        return "0"
    kinds: dict[str, int] = {}
    for alarm in o.alarms:
        kind = alarm.stream.partition(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return f"{len(o.alarms)} ({', '.join(f'{k} {n}' for k, n in kinds.items())})"


def _refusal_cell(o: ScenarioOutcome) -> str:
    return "never" if o.refusal is None else f"{o.refusal[0]} {o.refusal[1]} {o.refusal[2]}"


def adaptive_table(outcomes: Sequence[ScenarioOutcome]) -> str:
    header = [
        "attack",
        "action",
        "rows sent",
        "alarms",
        "first alarm (row, kind [stream])",
        "first refusal (row, status reason)",
        "@alarm",
        "@refusal",
        "answered",
        "copy",
    ]
    rows = [
        [
            o.scenario + (f" ({'; '.join(o.notes)})" if o.notes else ""),
            o.action,
            str(o.rows_sent),
            _alarms_cell(o),
            _alarm_cell(o),
            _refusal_cell(o),
            fmt(o.at_alarm),
            fmt(o.at_refusal),
            str(o.rows_answered),
            fmt(o.final),
        ]
        for o in outcomes
    ]
    return render_table(header, rows)


def benign_table(outcomes: Sequence[ScenarioOutcome], keys: int) -> str:
    header = [
        "benign client",
        "keys x rows",
        "alarms",
        "first alarm (row, kind [stream])",
        "refused requests",
        "first refusal (row, status reason)",
        "answered",
        "s",
    ]
    rows = [
        [
            o.scenario,
            f"{keys} x {o.rows_sent // max(1, keys)}",
            _alarms_cell(o),
            _alarm_cell(o),
            str(o.refusals),
            _refusal_cell(o),
            str(o.rows_answered),
            f"{o.seconds:.0f}",
        ]
        for o in outcomes
    ]
    return render_table(header, rows)


def textbook_table(outcomes: Sequence[Outcome], queries: int) -> str:
    budgets = [b for b in BUDGETS if b <= queries]
    header = [
        "attack",
        "action",
        "alarm at",
        "kind",
        "refused at",
        "@alarm",
        *(f"@{b}" for b in budgets),
        "answered",
        "copy",
        f"open@{queries}",
    ]
    rows = []
    for o in outcomes:
        cells = ["stopped" if o.refusal is not None and b > o.refusal[0] else fmt(o.at_budget.get(b)) for b in budgets]
        rows.append(
            [
                o.attack,
                o.action,
                str(o.alarm_at or "none"),
                o.alarm.kind if o.alarm else "-",
                f"{o.refusal[0]} {o.refusal[1]}" if o.refusal else "never",
                fmt(o.at_alarm),
                *cells,
                str(o.answered),
                fmt(o.final),
                fmt(o.open_final),
            ]
        )
    return render_table(header, rows)


def budget_line(target: Target) -> str:
    """Each account's monthly budget on this target's gateway, as the gateway sets it."""
    if target.budget_share is None or target.extraction_95 is None:
        return "account budget: none (detectors alone)"
    budget = max(1, math.floor(target.budget_share * target.extraction_95))
    return (
        f"account budget: {budget} rows a month ({target.budget_share:g} x extraction_queries_95 "
        f"{target.extraction_95})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="CI-sized: fewer queries, one key per benign client")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--throttle-seconds", type=float, default=None, help="(e) under throttle: seconds of asking")
    parser.add_argument("--benign-keys", type=int, default=None)
    parser.add_argument("--skip-benign", action="store_true")
    parser.add_argument("--skip-textbook", action="store_true")
    parser.add_argument("--actions", default=None, help=f"comma-separated alarm actions, of {', '.join(ACTIONS)}")
    parser.add_argument("--only", action="append", default=[], help="adaptive attacks whose name starts with this")
    parser.add_argument(
        "--account-budget-share", type=float, default=None,
        help="adaptive attacks and benign clients: each account's monthly budget is this share of the registered "
        "extraction_queries_95 (the gateway's default is 0.5); default: no budget, the detectors alone",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.throttle_seconds is not None:
        sizes = replace(sizes, throttle_seconds=args.throttle_seconds)
    if args.benign_keys is not None:
        sizes = replace(sizes, benign_keys=args.benign_keys)
    if args.skip_textbook:
        sizes = replace(sizes, textbook=False)
    if args.actions is not None:
        sizes = replace(sizes, actions=tuple(a.strip() for a in args.actions.split(",") if a.strip()))
    kinds = [k.strip() for k in args.targets.split(",") if k.strip()]

    def progress(message: str) -> None:
        print(f"  ... {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    print(f"# command: .venv/bin/python benchmarks/attack_sim.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(
        f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, httpx {httpx.__version__}; seed {args.seed}"
    )
    print(features_line())
    print(f"# gateway defaults: output label only, detector {DetectorConfig()}")
    print(
        f"# attack keys: rate {FAST.per_second:.0f}/s, default quota {DEFAULT_QUOTA}; benign keys: rate "
        f"{FAST.per_second:.0f}/s, no quota; attacker's public rows: {PUBLIC_ROWS}"
    )
    with tempfile.TemporaryDirectory(prefix="bastion-attack-sim-") as tmp:
        for kind in kinds:
            progress(f"building target {kind}")
            target = build_target(Path(tmp) / kind, args.seed, kind, progress)
            target.budget_share = args.account_budget_share
            world = target.world
            print()
            print(
                f"## target {kind}: {type(world.target).__name__} as ONNX, {offline.N_FEATURES} features, trained on "
                f"{offline.N_TRAIN}; held-out accuracy {np.mean(world.target_eval == world.y_eval):.1%}; agreement "
                f"on {offline.N_EVAL} held-out records; copy: {_copy_name(kind)}"
            )
            print(f"# {target.assessment}")
            print(f"# {budget_line(target)}")
            print()
            adaptive = run_adaptive(target, sizes, args.seed, progress, args.only)
            print(f"adaptive attacks, label only ({kind}):")
            print(adaptive_table(adaptive))
            print(
                "    row: 1-based index among rows sent (a refusal's: the first row of the refused request); alarms: "
                "by stream kind; [stream]: key unless the audit entry names another; @alarm/@refusal: copy from the "
                "rows answered through the alarm's request / before the refusal; copy: from every row answered"
            )
            print()
            if not args.skip_benign:
                benign = []
                for client in benign_clients(sizes.benign_queries):
                    progress(f"{kind}: benign {client.name}")
                    benign.append(run_benign_client(target, client, sizes.benign_keys, sizes.benign_queries, args.seed))
                print(f"benign clients ({kind}), action suspend:")
                print(benign_table(benign, sizes.benign_keys))
                print()
            if sizes.textbook:
                progress(f"{kind}: textbook attacks")
                outcomes = [
                    o
                    for action in sizes.actions
                    for o in run_attacks(target, action, attacks(args.seed), sizes.textbook_queries)
                ]
                print(f"textbook attacks ({kind}), one row per request, {sizes.textbook_queries} queries each:")
                print(textbook_table(outcomes, sizes.textbook_queries))
                print()
                budgets = tuple(b for b in offline.KNOCKOFF_BUDGETS if b <= sizes.knockoff_quota)
                for share in (None, DEFAULT_BUDGET_SHARE):
                    priced = replace(target, budget_share=share)
                    knock = run_knockoff(priced, sizes.knockoff_quota, budgets, args.seed)
                    refusal = f"query {knock.refusal[0]}: {knock.refusal[1]}" if knock.refusal else "none"
                    print(
                        f"Knockoff (in-distribution), daily quota {knock.quota}, {budget_line(priced)}: "
                        f"{knock.answered} answered, first refusal {refusal}, agreement at it "
                        f"{fmt(knock.at_refusal)}, alarms: {[a.kind for a in knock.alarms] or 'none'}"
                    )
                    print(
                        render_table(
                            ["queries", *map(str, budgets)],
                            [["agreement", *(fmt(knock.at_budget.get(b)) for b in budgets)]],
                        )
                    )
                if kind == "logistic":
                    eq = run_equation_solving(target, args.seed)
                    print(
                        f"baseline, key granted full probabilities: equation-solving with {eq.queries} queries -> "
                        f"agreement {eq.agreement:.2%}, max logit error on held-out {eq.max_logit_error:.1e}, max "
                        f"coefficient error {eq.max_coefficient_error:.1e}, alarms: {[a.kind for a in eq.alarms] or 'none'}"
                    )
                print()
    print(f"# total {time.perf_counter() - started:.0f} s")
    return 0


def _copy_name(kind: str) -> str:
    return "logistic regression" if kind == "logistic" else "MLP (64), trained to convergence"


if __name__ == "__main__":
    sys.exit(main())
