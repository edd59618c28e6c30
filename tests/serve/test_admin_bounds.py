"""The gateway's admin API bounds every field of its bodies and paths (issue 10, section 5).

`expires_in_days: 1e300` raised OverflowError (a 500); quotas past 2**31 overflowed
PostgreSQL's integer columns; a model name of 5,000 characters reached a 200-character column.
Each is now a 4xx that names the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion.serve.run import GatewaySettings
from corpus.gateway_env import ONNX, RunningGateway, bearer, built_models, make_registry, start_gateway
from corpus.hang_guard import HANG_GUARD


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str, str]]:
    home = tmp_path_factory.mktemp("admin")
    built = built_models(home / "shared")
    env = make_registry(home / "registry", [built.signer_pub])
    env.publish(ONNX, built.folder("onnx"))
    running = start_gateway(env.registry, env.admin, GatewaySettings(models=(ONNX,)))
    try:
        yield running, "", env.admin_token
    finally:
        running.stop()


ADMIN_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "expires-huge": ({"expires_in_days": 1e300}, "expires_in_days"),
    "expires-ten-thousand-years": ({"expires_in_days": 3_650_000}, "expires_in_days"),
    "rate-huge": ({"rate_per_second": 1e300}, "rate_per_second"),
    "rate-infinite-text": ({"rate_per_second": "Infinity"}, "rate_per_second"),
    "rate-nan-text": ({"rate_per_second": "NaN"}, "rate_per_second"),
    "burst-over-int32": ({"burst": 2**40}, "burst"),
    "daily-over-int32": ({"daily": 2**31}, "daily"),
    "monthly-over-int32": ({"monthly": 2**63}, "monthly"),
    "too-many-models": ({"models": [f"m{i}" for i in range(1000)]}, "models"),
    "long-model-name": ({"models": ["m" * 10_000]}, "models"),
    "empty-model-name": ({"models": [""]}, "models"),
    "too-many-operations": ({"operations": ["infer"] * 1000}, "operations"),
    "name-not-text": ({"name": ["a"]}, "name"),
}


@pytest.mark.parametrize("case", ADMIN_CASES)
def test_admin_key_fields_are_bounded_with_a_4xx_naming_the_field(gateway: tuple[RunningGateway, str, str], case: str) -> None:
    running, _, admin_token = gateway
    fields, named = ADMIN_CASES[case]
    answer = httpx.post(
        f"{running.admin_url}/admin/keys", json={"name": "bounded", **fields}, headers=bearer(admin_token), timeout=HANG_GUARD
    )
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert named in answer.text


def test_admin_key_at_its_bounds_is_created(gateway: tuple[RunningGateway, str, str]) -> None:
    running, _, admin_token = gateway
    body = {"name": "n" * 200, "expires_in_days": 3650, "rate_per_second": 1e6, "burst": 1_000_000,
            "daily": 1_000_000_000, "monthly": 1_000_000_000, "models": ["m" * 200] * 100}
    answer = httpx.post(f"{running.admin_url}/admin/keys", json=body, headers=bearer(admin_token), timeout=HANG_GUARD)
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(
    "path",
    ["/admin/models/" + "m" * 5000 + "/enable", "/admin/models/" + "m" * 5000 + "/disable",
     "/admin/keys/" + "k" * 5000 + "/suspend", "/admin/keys/" + "k" * 5000 + "/resume"],
    ids=["enable", "disable", "suspend", "resume"],
)
def test_admin_path_names_are_bounded(gateway: tuple[RunningGateway, str, str], path: str) -> None:
    running, _, admin_token = gateway
    answer = httpx.post(f"{running.admin_url}{path}", json={"reason": "x"}, headers=bearer(admin_token), timeout=HANG_GUARD)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])


def test_an_admin_reason_of_any_type_is_a_4xx(gateway: tuple[RunningGateway, str, str]) -> None:
    running, _, admin_token = gateway
    answer = httpx.post(
        f"{running.admin_url}/admin/models/{ONNX}/enable", json={"reason": {"a": [1] * 10}}, headers=bearer(admin_token)
    )
    assert answer.status_code == 422 and "reason" in answer.text
