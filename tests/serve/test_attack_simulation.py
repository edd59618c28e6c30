"""The gateway against model extraction and membership probing, over real HTTP.

Each attack of `benchmarks/attack_sim_offline.py`, and issue 12's adaptive attacks and benign
clients, are sent to a real gateway (uvicorn on 127.0.0.1) serving signed ONNX with its defaults:
label-only answers and the default detectors. The machinery is `benchmarks/attack_sim.py`'s,
which prints the full tables (`--quick` for a CI-sized run); here are the acceptance criteria,
on reduced runs (`attack_sim.QUICK`):

1. a key granted full probabilities extracts the model exactly with 21 queries (the baseline);
2. label only: uniform, Jacobian-augmentation and membership probing are flagged within 150
   queries, and the key is suspended or throttled before its copy agrees with the target on 95 %
   of held-out records (the copy is trained only on answers the gateway gave);
3. ten benign keys of 2,000 held-out queries each raise no alarm, and neither do clients that
   retry, re-score the same records nightly, send mean-imputed records, sorted batches or
   shifted records;
4. in-distribution (Knockoff) extraction raises no alarm and is bounded by the key's daily quota;
5. the second target, an MLP, is served as trained, and costs more queries to copy;
6. issue 12: adaptive attacks (synthetic rows from the published ranges or marginals with
   boundary sampling, dilution, Sybil keys, Jacobian steps of benign length) are alarmed and
   refused before their copy reaches 95 %; a 64-row request from a label-only key is refused; an
   alarming request under `suspend` is not answered.

Tests of a behaviour the gateway does not have yet skip, naming the feature whose absence they
detect (`attack_sim.has_accounts`, `has_row_limits`, `has_joint_detectors`,
`judges_before_answering`); once it lands they run.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)  # last: benchmarks/sign.py, scan.py... must not shadow test packages

import attack_sim as sim  # noqa: E402

import bastion.serve.keys as keys_module  # noqa: E402
from bastion.serve.gateway import THROTTLED, AlarmPolicy  # noqa: E402
from bastion.serve.limits import Quota  # noqa: E402
from bastion.serve.run import GatewaySettings, assemble  # noqa: E402
from corpus.gateway_env import assert_refused  # noqa: E402
from corpus.hang_guard import HANG_GUARD  # noqa: E402

SEED = 7
ATTACK_QUERIES = 300  # the benchmark sends 2,000; every alarm comes well before 150
ATTACKS = {a.name: a for a in sim.attacks(SEED)}
REFUSAL = {"suspend": (403, "suspended"), "throttle": (429, "rate")}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> sim.Target:
    return sim.build_target(tmp_path_factory.mktemp("attack-sim"), SEED, assessed=False)


@pytest.fixture(scope="module")
def mlp_target(tmp_path_factory: pytest.TempPathFactory) -> sim.Target:
    return sim.build_target(tmp_path_factory.mktemp("attack-sim-mlp"), SEED, "mlp", assessed=False)


# First in the file, so that with xdist the longest test (~45 s) starts at once.
@pytest.mark.slow  # tens of seconds quiet, a minute or more on a loaded 2-core machine
def test_ten_benign_keys_of_2000_queries_raise_no_alarm(target: sim.Target) -> None:
    benign = sim.run_benign(target, keys=10, queries=2_000, action="suspend")
    assert (benign.alarms, benign.refused) == (0, 0), benign


def test_full_probabilities_give_the_model_away_in_21_queries(target: sim.Target) -> None:
    eq = sim.run_equation_solving(target, SEED)
    assert eq.queries == 21
    assert eq.agreement >= 0.999, eq
    assert eq.max_logit_error < 1e-3, eq  # the ONNX model answers float32 probabilities
    assert eq.max_coefficient_error < 1e-3, eq
    assert eq.alarms == []  # 21 in-distribution queries: nothing a detector could see


@pytest.mark.parametrize("action", sim.ACTIONS)
@pytest.mark.parametrize("name", list(ATTACKS))
def test_label_only_attack_is_stopped_before_its_copy_reaches_95(target: sim.Target, name: str, action: str) -> None:
    attack = ATTACKS[name]
    [o] = sim.run_attacks(target, action, [attack], n=ATTACK_QUERIES)
    assert o.alarm is not None and o.alarm_at is not None, o
    assert o.alarm_at <= 150, o
    assert o.alarm.action == action
    assert o.refusal is not None, o
    index, reason = o.refusal
    if o.alarm.before_answer:
        # Judged before the model answers: the query that raised the alarm is itself refused (under
        # suspend, as its key's suspension; under throttle, as its rows'; or as out of range, 400,
        # which is not counted here), and so is every later one that carries an atypical row.
        assert reason in (("suspended", "alarm") if action == "suspend" else ("alarm", "rate")), o.refusal
        assert index >= o.alarm_at, o
        if action == "suspend":
            assert o.answered_from_alarm == 0, o
    else:
        # Detectors after the answer: refused from the next query on (a throttle's burst of one lets
        # one more through).
        assert reason == REFUSAL[action][1]
        assert o.alarm_at < index <= o.alarm_at + (2 if action == "throttle" else 1), o
    if action == "suspend":
        assert o.answered_after_refusal == 0, o
        assert o.answered <= o.alarm_at, o
    else:
        # The throttle's rate, not a count: once refused (its bucket empty) the key earns one query
        # per 1/rate seconds, so the rest of the attack may get one more per 5 s it took. At load 11
        # the 300 queries took longer and 3 got through after the refusal; a throttle that let
        # many through, or none at all, still fails.
        allowance = THROTTLED.burst + math.floor(THROTTLED.per_second * o.seconds_after_refusal)
        assert o.answered_after_refusal <= allowance, o
        assert o.answered <= o.alarm_at + 1 + allowance, o  # +1: the query between alarm and refusal
    assert o.at_alarm is not None and o.at_alarm < 0.95, o
    assert o.best < 0.95, o  # every answer it got, though it carried on to the end


def test_knockoff_raises_no_alarm_and_stops_at_the_daily_quota(target: sim.Target) -> None:
    day = _utc_day()  # how long the test takes is not known in advance on a loaded machine
    quota = 500
    world = target.world
    q = sim.offline.knockoff(world, quota, np.random.default_rng(SEED + 4))
    with sim.serving(target, "suspend") as gateway:
        caller = sim.new_caller(gateway, "knockoff", rate=sim.FAST, quota=Quota(daily=quota, monthly=None))
        try:
            trace = sim.send_all(caller, q)
            over = caller.client.post(caller.url, json=_one_row(q[0]))
        finally:
            caller.close()
    if _utc_day() != day:
        pytest.skip("the daily quota reset at UTC midnight during this test")
    assert (trace.statuses == 200).all()
    assert_refused(over, 429, "daily-quota")
    assert int(over.headers["retry-after"]) >= 1
    assert sim.alarms_by_key(target.env.audit_entries()).get(trace.key_id) is None
    # What the quota leaves it (the benchmark: ~97 % at 500, ~99.9 % at the default 10,000).
    reached = target.agreement(*trace.answered())
    assert 0.9 <= reached < 1.0, reached


def _utc_day() -> int:
    return int(time.time() // 86_400)


def _one_row(row: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, row.shape[0]], "data": row.tolist()}]}


def test_a_suspended_key_stays_refused_across_a_refresh(target: sim.Target) -> None:
    """A key view read before an alarm's suspension was written must not lift it (it did, until 0a99af6:
    hundreds of answers to the suspended key, until the next refresh)."""
    settings = GatewaySettings(models=(sim.MODEL,), alarm_policy=AlarmPolicy(action="suspend"))
    assembled = assemble(target.env.registry, target.env.admin, settings)
    gateway = sim.Served(assembled, sim.ServerThread(assembled.gateway.app()).start(), target.env.admin)
    store = assembled.gateway.store
    try:
        caller = sim.new_caller(gateway, "attacker", rate=sim.FAST)
        # A refresh that began reading keys before the alarm ends after the suspension is written.
        read, suspended = threading.Event(), threading.Event()
        store.suspend_on_alarm = _then(store.suspend_on_alarm, suspended.set)  # type: ignore[method-assign]
        store.snapshot = _held_until(store.snapshot, read, suspended)  # type: ignore[method-assign]
        assert read.wait(timeout=HANG_GUARD)  # a polling deadline, not a speed bound
        q = sim.offline.uniform_box(target.world, 600, np.random.default_rng(SEED + 1), widen=0.0)
        try:
            trace = sim.send_all(caller, q)
        finally:
            caller.close()
    finally:
        gateway.stop()
    alarms = sim.alarms_by_key(target.env.audit_entries())[trace.key_id]
    exchanges = trace.exchanges()
    located = [(sim.locate_alarm(exchanges, a, lambda e: True) or len(exchanges) + 1, a) for a in alarms]
    alarm_at, alarm = min(located, key=lambda p: (p[0], p[1].seq))
    answered = int(np.sum(trace.statuses == 200))
    # Refused from the query after the alarm's, or, judged before the answer, from the alarm's own.
    refused_from = alarm_at if alarm.before_answer else alarm_at + 1
    assert trace.first_refusal() == (refused_from, "suspended"), (alarm_at, alarm)
    assert answered == refused_from - 1, f"{answered - refused_from + 1} answers after the key was suspended"


def _then(call: Callable[..., Any], after: Callable[[], Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = call(*args, **kwargs)
        after()
        return result

    return wrapped


def _held_until(snapshot: Callable[[], Any], read: threading.Event, release: threading.Event) -> Callable[[], Any]:
    """`snapshot`, whose first call sets `read` once it has read, and returns only once `release` is set."""
    pending = [True]

    def wrapped() -> Any:
        view = snapshot()
        if pending:
            pending.clear()
            read.set()
            release.wait(timeout=HANG_GUARD)
        return view

    return wrapped


# --- the second target --------------------------------------------------------------------------


def test_the_mlp_target_answers_as_the_model_it_was_trained_as(mlp_target: sim.Target) -> None:
    records = mlp_target.world.x_eval[:320]

    def play(session: sim.Session) -> None:
        key = session.key("reader", rate=sim.FAST, quota=None)
        for start in range(0, records.shape[0], 16):
            session.send(key, records[start : start + 16])

    o = sim.run_scenario(mlp_target, "reader", "suspend", play, copy=False)
    assert (o.alarms, o.refusals, o.rows_answered) == ((), 0, records.shape[0]), o
    assert o.session is not None
    x, labels = o.session.answered()
    assert np.array_equal(x, records)
    assert np.mean(labels == mlp_target.world.target.predict(records)) >= 0.99  # ONNX float32, scikit-learn float64


def test_the_mlp_target_costs_more_queries_to_copy_than_the_logistic_one(
    target: sim.Target, mlp_target: sim.Target
) -> None:
    """Offline, from the same number of in-distribution labels: what makes it the second target."""
    knockoff, mlp_knockoff = target.world.knockoff[:500], mlp_target.world.knockoff[:500]
    linear = target.agreement(knockoff, target.world.label(knockoff))
    mlp = mlp_target.agreement(mlp_knockoff, mlp_target.world.label(mlp_knockoff))
    assert linear >= 0.97, linear
    assert mlp < 0.95, mlp
    # No hyperplane separates its classes (four clusters each), which the MLP does.
    world = mlp_target.world
    assert np.mean(world.target_eval == world.y_eval) >= 0.95
    assert sim.linear_copy(world.x_train, world.y_train).score(world.x_eval, world.y_eval) < 0.9


# --- issue 12: benign clients, adaptive attacks, rows per request ----------------------------------

# Benign clients today's detectors alarm on (issue 12): what each needs from package B's detectors.
_NEEDS_DETECTORS = {
    "5% retries": "exact repeats counted once",
    "10% retries": "exact repeats counted once",
    "nightly re-score": "exact repeats counted once",
    "12 of 20 features": "mean-imputed features left out of the judgement",
}
_NEEDS_FEATURE = "needs issue 12's detectors (bastion.serve.detect.RowJudge, not present here)"
BENIGN = {c.name: c for c in sim.benign_clients(sim.QUICK.benign_queries) if c.name != "held-out records"}


@pytest.mark.parametrize("name", list(BENIGN))
def test_a_benign_client_raises_no_alarm(target: sim.Target, name: str) -> None:
    needs = next((why for prefix, why in _NEEDS_DETECTORS.items() if name.startswith(prefix)), None)
    if needs is not None and not sim.has_joint_detectors():
        pytest.skip(f"{_NEEDS_FEATURE}: {needs}")
    o = sim.run_benign_client(target, BENIGN[name], keys=1, queries=sim.QUICK.benign_queries, seed=SEED)
    assert o.alarms == (), o.alarms
    assert (o.refusals, o.rows_answered) == (0, o.rows_sent), o


# Each adaptive attack needs the joint detectors and the check before answering; Sybil in one
# account also needs accounts. Today (a) to (d) reach 99 % unchecked at these sizes.
ADAPTIVE = [
    "(a) ranges + boundary",
    "(b) marginals + boundary",
    "(c) dilution, jittered fillers",
    "(c) dilution, recombined fillers",
    "(d) Sybil 10x19, one account",
    "(f) Jacobian, benign step sizes",
]


@pytest.mark.parametrize("name", ADAPTIVE)
def test_an_adaptive_attack_is_alarmed_and_refused_before_its_copy_reaches_95(target: sim.Target, name: str) -> None:
    if not sim.has_joint_detectors():
        pytest.skip(_NEEDS_FEATURE)
    if not sim.judges_before_answering():
        pytest.skip("needs the gateway to judge rows before answering (bastion.serve.guard.RequestGuard, not present here)")
    if name.startswith("(d)") and not sim.has_accounts():
        pytest.skip("needs keys with accounts (KeySpec.account, not present here)")
    [o] = sim.run_adaptive(target, sim.QUICK, SEED, only=[name])
    # Its copy never reaches 95 %, from the answers before its first refusal or from every answer it
    # got: an attack strong enough to get there unchecked (all but (f) here) must be alarmed and
    # refused first.
    assert o.best < 0.95, o


def test_a_64_row_request_from_a_label_only_key_is_refused(target: sim.Target) -> None:
    if not sim.has_row_limits():
        pytest.skip("needs rows per request on keys (KeySpec.max_rows, not present here)")
    records = target.world.benign[: sim.BIG_ROWS]  # in distribution: no detector has a say
    default = int(getattr(keys_module, "DEFAULT_MAX_ROWS", 16))

    def play(session: sim.Session) -> None:
        key = session.key("label only", rate=sim.FAST)
        session.send(key, records)
        session.send(key, records[:default])

    o = sim.run_scenario(target, "64 rows", "suspend", play, copy=False)
    assert o.refusal is not None, o
    row, status, reason = o.refusal
    assert (row, o.refusals) == (1, 1), o
    assert 400 <= status < 500 and status != 429 and reason, o.refusal
    assert o.rows_answered == default, o  # the default most rows per request is answered


def test_an_alarming_request_under_suspend_gets_no_answer(target: sim.Target) -> None:
    if not sim.judges_before_answering():
        pytest.skip("needs the gateway to judge rows before answering (bastion.serve.guard.RequestGuard, not present here)")
    assert target.published is not None
    box = sim.box_sampler(target.published)(np.random.default_rng(SEED), 10 * 16)

    def play(session: sim.Session) -> None:
        key = session.key("prober", rate=sim.FAST)
        for start in range(0, box.shape[0], 16):
            if session.send(key, box[start : start + 16]).dead:
                return

    o = sim.run_scenario(target, "box", "suspend", play, copy=False)
    assert o.alarm is not None and o.alarm_row is not None, o
    alarming_request_starts = (o.alarm_row - 1) // 16 * 16
    assert o.rows_answered <= alarming_request_starts, o
    assert o.refusal is not None and o.refusal[0] == alarming_request_starts + 1, o


def test_the_benchmark_runs_and_prints_its_tables(capsys: pytest.CaptureFixture[str]) -> None:
    """The script's report end to end, on one cheap scenario (10 keys x one 64-row request)."""
    assert sim.main(["--quick", "--targets", "logistic", "--skip-benign", "--only", "(e) 10 keys"]) == 0
    out = capsys.readouterr().out
    assert "issue 12 features:" in out
    [line] = [line for line in out.splitlines() if line.startswith("(e) 10 keys x 1 64-row request")]
    assert "suspend" in line
