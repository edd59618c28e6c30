"""Every field of the registry API has a bound and one spelling: a 4xx naming it, never a 500.

Run over real HTTP against a registry on SQLite and on PostgreSQL, whose columns differ in what
they hold (PostgreSQL refuses a NUL, an INTEGER over 2**31 - 1, a String(100) of 101 characters
with an error; SQLite an integer over 2**63 - 1), so a bound missing at the edge shows as a 500 on
one of them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.registry import Registry
from bastion.registry.api import create_app
from corpus.hang_guard import HANG_GUARD, wait_until
from registry.backends import MakeRegistry, on_both_databases
from registry.conftest import backend, make_registry, postgres_admin_url  # noqa: F401  # the fixtures
from registry_api.clients import digest_of, upload

pytestmark = on_both_databases
STARTUP_SECONDS = HANG_GUARD
WEIGHTS = b"\x93NUMPY weights, not really"
CONFIG = b'{"inputs": 6}\n'


@dataclass
class Api:
    registry: Registry
    admin: httpx.Client

    def register(self, model: str = "fraud", **body: Any) -> httpx.Response:
        # json.dumps escapes what httpx cannot encode (a lone surrogate is sent as \ud800, as JSON allows).
        text = json.dumps(body)
        return self.admin.post(
            f"/v1/models/{model}/versions", content=text, headers={"Content-Type": "application/json"}
        )

    def files(self, *paths: str) -> dict[str, dict[str, object]]:
        digest = digest_of(WEIGHTS)
        return {path: {"digest": digest, "size": len(WEIGHTS)} for path in paths}


@pytest.fixture
def api(make_registry: MakeRegistry) -> Iterator[Api]:  # noqa: F811  # the fixture imported above
    registry = make_registry()
    token = registry.bootstrap("admin")
    config = uvicorn.Config(create_app(registry), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, name="registry-api", daemon=True)
    thread.start()
    wait_until(lambda: running.started, "the registry API server starting", alive=thread.is_alive)
    host, port = running.servers[0].sockets[0].getsockname()[:2]
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", headers=headers, timeout=HANG_GUARD) as admin:
            upload(admin, WEIGHTS)
            upload(admin, CONFIG)
            yield Api(registry, admin)
    finally:
        running.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)


def refused(answer: httpx.Response, field: str) -> str:
    """The error text of a 4xx that names `field`."""
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    error = str(answer.json()["error"])
    assert field in error, error
    return error


# --- member paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "names no file"),
        (".", "names no file"),
        ("x/../y", "'..' segment"),
        ("a\\..\\b", "backslash"),
        ("/etc/passwd", "absolute"),
        ("../outside", "'..' segment"),
        ("w\x00.npy", "control character"),
        ("x" * 256, "longer than 255 bytes"),
        ("a/" * 2100 + "w.npy", "characters long"),
        ("a/" * 40 + "w.npy", "levels deep"),
    ],
)
def test_a_member_path_that_escapes_or_aliases_is_refused(api: Api, path: str, reason: str) -> None:
    error = refused(api.register(files=api.files(path)), "files")
    assert reason in error
    assert api.admin.get("/v1/models").json() == []


def test_a_member_path_is_stored_in_its_one_spelling(api: Api) -> None:
    answer = api.register(files=api.files("./weights//w.npy"))
    assert answer.status_code == 201, answer.text
    assert [f["path"] for f in answer.json()["files"]] == ["weights/w.npy"]


@pytest.mark.parametrize(
    ("paths", "layout", "reason"),
    [
        (("y", "./y"), "folder", "name the same file"),
        (("a", "a/b"), "folder", "is a file and also the folder of"),
        (("sub/w.npy",), "file", "layout 'file' takes exactly one file at the top level"),
    ],
)
def test_paths_that_clash_are_refused(api: Api, paths: tuple[str, ...], layout: str, reason: str) -> None:
    error = refused(api.register(files=api.files(*paths), layout=layout), "files")
    assert reason in error


# --- numbers and references ------------------------------------------------------------------


@pytest.mark.parametrize("number", [2**31, 2**63, 10**30])
def test_a_version_number_past_the_column_is_a_4xx(api: Api, number: int) -> None:
    assert api.register(files=api.files("w.npy")).status_code == 201
    for suffix in ("", "/scan"):
        refused(api.admin.get(f"/v1/models/fraud/versions/{number}{suffix}"), "number")
    for route in ("approvals", "gate-check", "promotions"):
        refused(api.admin.post(f"/v1/models/fraud/versions/{number}/{route}", json={"stage": "staging"}), "number")


@pytest.mark.parametrize("parent", ["fraud@" + "9" * 30, "fraud@2147483648", "fraud@9223372036854775808", "x@-1"])
def test_a_parent_past_the_column_is_a_4xx(api: Api, parent: str) -> None:
    refused(api.register(files=api.files("w.npy"), parent=parent), "parent")


# --- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("licence", "x" * 101),
        ("licence", "mit\x00"),
        ("source", "hf://acme/\x00"),
        ("source", "hf://" + "x" * 5000),
        ("training_data_digest", "sha256:" + "0" * 65),
        ("training_data_digest", "not a digest"),
        ("description", "nul\x00"),
        ("description", "\ud800"),
    ],
)
def test_a_lineage_field_out_of_bounds_is_a_4xx(api: Api, field: str, value: str) -> None:
    refused(api.register(files=api.files("w.npy"), **{field: value}), field)


@pytest.mark.parametrize("name", ["fr%00aud", "x" * 256, "a%20b", "%2E%2Ehidden", "caf%C3%A9"])
def test_a_model_name_out_of_bounds_is_a_4xx(api: Api, name: str) -> None:
    refused(api.register(model=name, files=api.files("w.npy")), "name")
    refused(api.admin.get(f"/v1/models/{name}/versions"), "name")
    refused(api.admin.get(f"/v1/models/{name}/versions/1"), "name")


@pytest.mark.parametrize("stage", ["st\x00aging", "s" * 65])
def test_a_stage_out_of_bounds_is_a_4xx(api: Api, stage: str) -> None:
    assert api.register(files=api.files("w.npy")).status_code == 201
    for route in ("approvals", "gate-check", "promotions"):
        refused(api.admin.post(f"/v1/models/fraud/versions/1/{route}", json={"stage": stage}), "stage")


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/principals", {"name": "eve\x00"}, "name"),
        ("/v1/principals", {"name": "e" * 201}, "name"),
        ("/v1/grants", {"principal": "eve\x00", "role": "reader"}, "principal"),
        ("/v1/grants", {"principal": "admin", "role": "reader", "model": "m\x00"}, "model"),
        ("/v1/tokens", {"principal": "adm\x00in"}, "principal"),
    ],
)
def test_an_access_field_out_of_bounds_is_a_4xx(api: Api, route: str, body: dict[str, str], field: str) -> None:
    refused(api.admin.post(route, json=body), field)


@pytest.mark.parametrize("token_id", ["ab%00cd", "a" * 64])
def test_a_token_id_out_of_bounds_is_a_4xx(api: Api, token_id: str) -> None:
    refused(api.admin.delete(f"/v1/tokens/{token_id}"), "token_id")


# --- any value, every field ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=5,
)
REGISTER_FIELDS = (
    "layout",
    "source",
    "licence",
    "training_data_digest",
    "parent",
    "signature_blob",
    "assessment_blob",
    "description",
)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _never_5xx(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text)


@FUZZ
@given(field=st.sampled_from(REGISTER_FIELDS), value=JSON_VALUES)
def test_any_value_of_a_registration_field_is_never_a_5xx(api: Api, field: str, value: object) -> None:
    _never_5xx(api.register(files=api.files("w.npy"), **{field: value}))


@FUZZ
@given(paths=st.lists(st.text(max_size=40), min_size=1, max_size=4), size=st.integers(), layout=JSON_VALUES)
def test_any_file_list_is_never_a_5xx(api: Api, paths: list[str], size: int, layout: object) -> None:
    files = {path: {"digest": digest_of(WEIGHTS), "size": size} for path in paths}
    _never_5xx(api.register(files=files, layout=layout))


@FUZZ
@given(name=st.text(min_size=1, max_size=300), number=st.integers(), stage=JSON_VALUES)
def test_any_path_parameter_or_stage_is_never_a_5xx(api: Api, name: str, number: int, stage: object) -> None:
    base = f"/v1/models/{quote(name, safe='')}/versions/{number}"
    _never_5xx(api.admin.get(base))
    _never_5xx(api.admin.post(f"{base}/gate-check", json={"stage": stage}))
    _never_5xx(api.admin.post(f"{base}/approvals", json={"stage": stage}))


@FUZZ
@given(route=st.sampled_from(["/v1/principals", "/v1/grants", "/v1/tokens"]), value=JSON_VALUES, key=st.text(max_size=12))
def test_any_access_body_is_never_a_5xx(api: Api, route: str, value: object, key: str) -> None:
    base: dict[str, object] = {
        "/v1/principals": {"name": "eve"},
        "/v1/grants": {"principal": "admin", "role": "reader"},
        "/v1/tokens": {"principal": "admin"},
    }[route]
    for field in (*base, "kind", "role", "model", "expires_in_seconds", key):
        _never_5xx(api.admin.post(route, json={**base, field: value}))


@pytest.mark.parametrize(
    "token",
    ["bst_" + "a" * 5000 + "_secret", "bst_\u00e9\u00ff_secret", "bst_a%00b_secret", "bst__", "bst_a_" + "s" * 10_000],
)
def test_a_malformed_bearer_token_is_a_401(api: Api, token: str) -> None:
    answer = httpx.get(
        f"{api.admin.base_url}/v1/models", headers={"Authorization": f"Bearer {token}".encode("latin-1")}, timeout=HANG_GUARD
    )
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")
