"""The observer process (what `bastion serve` runs by default): nothing lost, alarms still act.

With `observer="process"` the detectors and the audit writer run in a child process; the
server only queues and sends. These tests drive a real server over HTTP and check that every
request, answered or refused, reaches the audit chain by shutdown, and that an extraction
alarm raised in the child suspends the key within a few requests, even right after start-up.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from bastion.audit import AuditLog
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.limits import RateLimit
from bastion.serve.run import GatewaySettings
from bastion.sign.keys import load_public_key
from corpus.gateway_env import INPUT, ONNX, built_models, make_registry, start_gateway
from corpus.hang_guard import HANG_GUARD, until
from corpus.serving import dataset


def _body(rows: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}


def test_every_request_reaches_the_chain_and_an_alarm_suspends_the_key(tmp_path: Path) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    settings = GatewaySettings(models=(ONNX,), observer="process", alarm_policy=AlarmPolicy(action="suspend"))
    running = start_gateway(env.registry, env.admin, settings)
    data = dataset()
    sent = {"ok": 0, "refused": 0}
    try:
        good_key, good = running.key("app", rate=RateLimit(1000, 1000), quota=None)
        thief_key, thief = running.key("thief", rate=RateLimit(1000, 1000), quota=None)
        url = f"{running.url}/v2/models/{ONNX}/infer"
        with httpx.Client(timeout=HANG_GUARD) as client:
            rng = np.random.default_rng(3)
            low, high = float(data.x_train.min()), float(data.x_train.max())
            refused_at = None
            for query in range(1, 301):
                answer = client.post(
                    url, json=_body(rng.uniform(low, high, size=(1, 20))), headers={"Authorization": f"Bearer {thief}"}
                )
                if answer.status_code == 200:
                    sent["ok"] += 1
                else:
                    sent["refused"] += 1
                    refused_at = query
                    assert answer.status_code == 403 and answer.headers["x-bastion-refusal"] == "suspended"
                    break
            for row in data.x_test[:300]:
                answer = client.post(url, json=_body(row[None, :]), headers={"Authorization": f"Bearer {good}"})
                assert answer.status_code == 200, (answer.headers, answer.text)
                sent["ok"] += 1
            for _ in range(25):  # refused ones count too
                assert client.post(url, json=_body(data.x_test[:1])).status_code == 401
                sent["refused"] += 1
    finally:
        running.stop()
    entries = env.audit_entries()
    alarms = [e for e in entries if e.action == "alarm"]
    on_key = [a for a in alarms if a.details.get("stream") == f"key:{thief_key.key_id}"]
    assert len(on_key) == 1 and on_key[0].details["action"] == "suspend", [a.details for a in alarms]
    # Judged before the answer: the request that raised the alarm was itself refused (its stream
    # counts one row per request here), however long the observer's own alarms take to come back.
    assert refused_at == on_key[0].details["queries"] <= 150
    # The customer's key was never acted on; the model's own stream only alerts.
    assert all(good_key.key_id not in a.details.get("keys", [a.actor]) for a in alarms)
    assert all(a.details["action"] == "alert" for a in alarms if a.details.get("stream", "").startswith("model:"))
    infer = [e for e in entries if e.action == "infer"]
    refusals = [e for e in entries if e.action == "infer.refused"]
    # Anonymous refusals are tallied: one entry per source and reason, with their count.
    refused = sum(int(e.details.get("count", 1)) for e in refusals)
    assert (len(infer), refused) == (sent["ok"], sent["refused"])  # nothing lost at shutdown
    report = AuditLog(env.registry.engine, "gateway").verify([load_public_key(env.registry.config.public_key)])
    assert report.ok, report.problems


def test_a_burst_larger_than_the_pipe_loses_nothing_on_uvloop(tmp_path: Path) -> None:
    """uvloop makes the pipes it watches non-blocking: a batch bigger than the pipe's buffer must
    still reach the child whole, however long the child takes to read it."""
    import asyncio  # noqa: PLC0415

    import uvloop  # noqa: PLC0415

    from bastion.audit import AuditEvent  # noqa: PLC0415
    from bastion.serve.observer import ProcessObserver  # noqa: PLC0415

    env = make_registry(tmp_path / "registry")
    observer = ProcessObserver(env.home, "gateway", {})
    count = 30_000

    async def burst() -> None:
        async def no_alarm(*_: object) -> None:
            return None

        await observer.start(no_alarm)
        for wave in range(3):  # three flushes of ~1.5 MB each, each far over a 64 KiB pipe
            for i in range(count // 3):
                observer.record(AuditEvent("key", "infer", "m@1", {"status": 200, "n": wave * count + i, "pad": "x" * 32}))
            await asyncio.sleep(0.01)
        await observer.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(burst())
    observer.close()
    numbers = sorted(e.details["n"] for e in env.audit_entries() if e.action == "infer")
    assert len(numbers) == count
    assert numbers == sorted({wave * count + i for wave in range(3) for i in range(count // 3)})
    report = AuditLog(env.registry.engine, "gateway").verify([load_public_key(env.registry.config.public_key)])
    assert report.ok, report.problems


def test_a_stalled_observer_makes_the_gateway_unready_and_loses_nothing(tmp_path: Path) -> None:
    """A child that stops reading (SIGSTOP) no longer blocks the server's event loop: records wait
    in the server until acknowledged, the observer reports not ready once the oldest has waited
    ACK_LAG_SECONDS (the gateway then refuses with 503), and once the child reads again every
    record reaches the chain and the observer is ready again."""
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from bastion.audit import AuditEvent  # noqa: PLC0415
    from bastion.serve.observer import ACK_LAG_SECONDS, ProcessObserver  # noqa: PLC0415

    env = make_registry(tmp_path / "registry")
    now = [0.0]
    observer = ProcessObserver(env.home, "gateway", {}, clock=lambda: now[0])
    count = 5_000
    child = observer.pid
    assert child is not None

    async def scenario() -> None:
        async def no_alarm(*_: object) -> None:
            return None

        await observer.start(no_alarm)
        assert observer.ready
        os.kill(child, signal.SIGSTOP)
        try:
            for i in range(count):
                observer.record(AuditEvent("key", "infer", "m@1", {"status": 200, "n": i, "pad": "x" * 1024}))
            await asyncio.sleep(0.05)  # the event loop still runs: the flushes went out
            assert observer.unacknowledged == count
            now[0] += ACK_LAG_SECONDS  # the oldest record has now waited too long
            assert not observer.ready
        finally:
            os.kill(child, signal.SIGCONT)
        await until(lambda: observer.unacknowledged == 0)
        assert observer.ready and observer.pid == child  # the same child caught up
        await observer.stop()

    asyncio.run(scenario())
    observer.close()
    numbers = sorted(e.details["n"] for e in env.audit_entries() if e.action == "infer")
    assert numbers == list(range(count))


def test_the_time_a_child_takes_to_start_is_not_silence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 2-core machine at load 11 a child took 35-37 s from spawn to "ready", more than
    HUNG_SECONDS. Its silence used to be counted from the spawn, so the watchdog's first look
    replaced a healthy child (and a restarted one, at once and again, for as long as the load
    lasted). Silence now counts from adoption; the injected clock plays the slow start."""
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from bastion.serve import observer as module  # noqa: PLC0415
    from bastion.serve.observer import HUNG_SECONDS, ProcessObserver  # noqa: PLC0415

    now = [0.0]
    really_await_ready = module._await_ready

    def slow_start(child: object) -> None:
        really_await_ready(child)  # type: ignore[arg-type]
        now[0] += 2 * HUNG_SECONDS  # what a start on a loaded machine costs

    monkeypatch.setattr(module, "_await_ready", slow_start)
    env = make_registry(tmp_path / "registry")
    observer = ProcessObserver(env.home, "gateway", {}, clock=lambda: now[0])
    first = observer.pid

    async def scenario() -> None:
        async def no_alarm(*_: object) -> None:
            return None

        await observer.start(no_alarm)
        assert not observer.check_hung() and observer.pid == first
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: observer.pid not in (None, first) and observer.ready)
        second = observer.pid
        assert not observer.check_hung() and observer.pid == second  # the restart's slow start is not silence
        assert second is not None
        os.kill(second, signal.SIGSTOP)
        try:
            observer.check_hung()  # reads whatever it said before it stopped
            now[0] += HUNG_SECONDS + 1
            assert observer.check_hung()  # really silent: replaced
        finally:
            with contextlib.suppress(ProcessLookupError):  # already killed and reaped
                os.kill(second, signal.SIGCONT)
        await until(lambda: observer.pid not in (None, second) and observer.ready)
        assert observer.restarts == 2
        await observer.stop()

    asyncio.run(scenario())
    observer.close()


def test_silence_is_judged_by_what_the_child_sent_not_when_the_server_read_it(tmp_path: Path) -> None:
    """A server whose event loop was busy reads late; what waits in the pipe is the child speaking."""
    import asyncio  # noqa: PLC0415

    from bastion.serve.observer import HUNG_SECONDS, ProcessObserver  # noqa: PLC0415

    env = make_registry(tmp_path / "registry")
    now = [0.0]
    observer = ProcessObserver(env.home, "gateway", {}, clock=lambda: now[0])
    child = observer.pid

    async def scenario() -> None:
        async def no_alarm(*_: object) -> None:
            return None

        await observer.start(no_alarm)
        # Block the loop (as a busy server would) until the child's next heartbeat is in the pipe.
        assert observer._child is not None and observer._child.conn.poll(HANG_GUARD)
        now[0] += HUNG_SECONDS + 1
        assert not observer.check_hung()
        assert observer.pid == child
        await observer.stop()

    asyncio.run(scenario())
    observer.close()


def test_a_child_catching_up_a_backlog_reports_progress_after_every_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 records waiting for a stopped child were one silent commit once it resumed; now
    its longest silence is one commit of COMMIT_CHUNK entries, however long the backlog."""
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from bastion.audit import AuditEvent  # noqa: PLC0415
    from bastion.serve.observer import COMMIT_CHUNK, ProcessObserver  # noqa: PLC0415

    env = make_registry(tmp_path / "registry")
    observer = ProcessObserver(env.home, "gateway", {})
    child = observer.pid
    assert child is not None
    count = 5 * COMMIT_CHUNK
    acks: list[int] = []
    handle = observer._handle

    def recording(message: object) -> None:
        if isinstance(message, dict) and "ack" in message:
            acks.append(int(message["ack"]))
        handle(message)

    monkeypatch.setattr(observer, "_handle", recording)

    async def scenario() -> None:
        async def no_alarm(*_: object) -> None:
            return None

        await observer.start(no_alarm)
        os.kill(child, signal.SIGSTOP)
        try:
            for i in range(count):
                observer.record(AuditEvent("key", "infer", "m@1", {"status": 200, "n": i}))
            await asyncio.sleep(0.05)  # the flush goes out while the child is stopped
            acks.clear()
        finally:
            os.kill(child, signal.SIGCONT)
        await until(lambda: observer.unacknowledged == 0)
        await observer.stop()

    asyncio.run(scenario())
    observer.close()
    progress = sorted(set(acks))
    assert progress[-1] == count
    assert all(later - earlier <= COMMIT_CHUNK for earlier, later in zip([0, *progress], progress, strict=False)), progress
    assert observer.pid == child and observer.restarts == 0
    numbers = sorted(e.details["n"] for e in env.audit_entries() if e.action == "infer")
    assert numbers == list(range(count))
