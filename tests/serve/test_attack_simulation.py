"""The gateway against model extraction and membership probing, over real HTTP.

Each attack of `benchmarks/attack_sim_offline.py` is sent, one row per `POST
/v2/models/{name}/infer`, to a real gateway (uvicorn on 127.0.0.1) serving the offline world's
target as signed ONNX, with its defaults: label-only answers and the default detectors. The
machinery is `benchmarks/attack_sim.py`'s, which prints the full table; here are the acceptance
criteria:

1. a key granted full probabilities extracts the model exactly with 21 queries (the baseline);
2. label only: uniform, Jacobian-augmentation and membership probing are flagged within 150
   queries, and the key is suspended or throttled before its copy agrees with the target on 95 %
   of held-out records (the copy is trained only on answers the gateway gave);
3. ten benign keys of 2,000 held-out queries each raise no alarm;
4. in-distribution (Knockoff) extraction raises no alarm and is bounded by the key's daily quota.
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
    return sim.build_target(tmp_path_factory.mktemp("attack-sim"), SEED)


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
    # Refused from the next query on (a throttle's burst of one lets one more through).
    assert o.refusal is not None, o
    index, reason = o.refusal
    assert reason == REFUSAL[action][1]
    assert o.alarm_at < index <= o.alarm_at + (2 if action == "throttle" else 1), o
    if action == "suspend":
        assert o.answered <= o.alarm.queries, o
    else:
        # The throttle's rate, not a count: once refused (its bucket empty) the key earns one query
        # per 1/rate seconds, so the rest of the attack may get one more per 5 s it took. At load 11
        # the 300 queries took longer and 3 got through after the refusal; a throttle that let
        # many through, or none at all, still fails.
        allowance = THROTTLED.burst + math.floor(THROTTLED.per_second * o.seconds_after_refusal)
        assert o.answered_after_refusal <= allowance, o
        assert o.answered <= o.alarm.queries + 1 + allowance, o  # +1: the query between alarm and refusal
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
    reached = sim.agreement(world, *trace.answered())
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
    [alarm] = sim.alarms_by_key(target.env.audit_entries())[trace.key_id]
    answered = int(np.sum(trace.statuses == 200))
    assert trace.first_refusal() == (alarm.queries + 1, "suspended")
    assert answered == alarm.queries, f"{answered - alarm.queries} answers after the key was suspended"


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
