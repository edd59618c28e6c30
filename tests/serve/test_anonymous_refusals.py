"""Callers without a key cannot fill the audit log (issue 10, section 2).

Before, every unauthenticated refusal was one entry with the URL's model name as its subject:
60 KB names were accepted, without limit. Now anonymous refusals are tallied per source and
reason and written as one entry per interval, names that reach an entry are bounded, URLs past
2 KB are refused at once (414), and a source refused too often gets 429 without more work.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from pathlib import Path

import httpx

from bastion.audit import AuditLog
from bastion.serve.anonymous import MAX_NAME, RefusalLimit, RefusalTally, bounded_name
from bastion.serve.run import GatewaySettings
from bastion.sign.keys import load_public_key
from corpus.gateway_env import ONNX, bearer, built_models, infer_body, make_registry, start_gateway
from corpus.hang_guard import HANG_GUARD

REQUESTS = 5_000
CLIENTS = 8


def test_five_thousand_anonymous_requests_with_huge_names_make_a_few_small_entries(tmp_path: Path) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    settings = GatewaySettings(models=(ONNX,), observer="process")
    started = time.monotonic()  # before the gateway, so its tally's first interval starts within the span
    running = start_gateway(env.registry, env.admin, settings)
    before = len(env.audit_entries())
    statuses: collections.Counter[int] = collections.Counter()
    try:
        _, key = running.key(rate=None, quota=None)

        async def flood() -> None:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(REQUESTS):
                queue.put_nowait(i)
            async with httpx.AsyncClient(base_url=running.url, timeout=HANG_GUARD) as http:

                async def client() -> None:
                    while not queue.empty():
                        i = queue.get_nowait()
                        name = f"{i:05d}" + "m" * (60_000 if i % 2 else 1_000)  # past and under the URL bound
                        answer = await http.post(f"/v2/models/{name}/infer", json=infer_body())
                        statuses[answer.status_code] += 1

                await asyncio.gather(*(client() for _ in range(CLIENTS)))

        asyncio.run(flood())
        # A key holder asking for a long unknown name is accountable: one entry, its name bounded.
        long_name = "x" * 1_500
        assert httpx.post(f"{running.url}/v2/models/{long_name}/infer", json=infer_body(), headers=bearer(key)).status_code == 404
    finally:
        running.stop()
    span = time.monotonic() - started  # measured, never bounded: it only sizes the allowance below
    assert statuses.total() == REQUESTS
    assert statuses[429] > 0  # the source spent its refusal budget
    assert set(statuses) <= {401, 414, 429}
    entries = env.audit_entries()[before:]
    anonymous = [e for e in entries if e.actor == "-"]
    assert sum(int(e.details["count"]) for e in anonymous) == REQUESTS  # every refusal counted
    # ...in one entry per (source, action, reason, status) per interval, not one each. The tally
    # drains at most once per interval, plus once at shutdown, so the flood's span bounds the
    # windows; a loaded machine stretches the span (116 entries at load 11), never the rule.
    windows = math.floor(span / settings.tally_interval) + 1
    kinds = collections.Counter(
        (e.details["source"], e.action, e.details["reason"], e.details["status"]) for e in anonymous
    )
    assert max(kinds.values()) <= windows, (kinds, windows, span)
    assert all(e.subject == "-" for e in anonymous)
    reasons = {e.details["reason"] for e in anonymous}
    assert reasons <= {"missing-credentials", "url-too-long", "refusals-limited"}
    [named] = [e for e in entries if e.action == "infer.refused" and e.actor != "-"]
    assert named.subject == bounded_name(long_name) and len(named.subject) < 200
    longest = max(len(e.subject) + len(str(e.details)) for e in entries)
    assert longest < 1_000
    report = AuditLog(env.registry.engine, "gateway").verify([load_public_key(env.registry.config.public_key)])
    assert report.ok, report.problems


def test_a_source_past_its_refusal_budget_is_limited_until_it_refills() -> None:
    now = [0.0]
    tally = RefusalTally(limit=RefusalLimit(per_second=2.0, burst=3), clock=lambda: now[0])
    assert [tally.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert tally.allow("10.0.0.2")  # another source has its own budget
    now[0] += 0.5  # one refusal's worth refilled
    assert [tally.allow("10.0.0.1") for _ in range(2)] == [True, False]


def test_the_tally_writes_one_entry_per_source_and_reason_per_interval() -> None:
    now = [0.0]
    tally = RefusalTally(interval=10.0, max_sources=2, clock=lambda: now[0])
    for source in ("a", "a", "b", "c", "d"):  # c and d arrive past max_sources
        tally.count(source, "infer.refused", "bad-key", 401)
    tally.count("a", "infer.refused", "missing-credentials", 401)
    now[0] += 9.0
    assert not tally.due()
    now[0] += 1.0
    assert tally.due()
    events = tally.drain()
    counts = {(e.details["source"], e.details["reason"]): e.details["count"] for e in events}
    assert counts == {("a", "bad-key"): 2, ("b", "bad-key"): 1, ("other", "bad-key"): 2, ("a", "missing-credentials"): 1}
    assert tally.drain() == [] and not tally.due()


def test_long_or_unprintable_names_are_bounded_and_stay_distinct() -> None:
    assert bounded_name("fraud-onnx") == "fraud-onnx"
    first, second = bounded_name("a" * 60_000), bounded_name("a" * 59_999 + "b")
    assert first != second and max(len(first), len(second)) < 2 * MAX_NAME
    assert bounded_name("evil\nname").isprintable()
