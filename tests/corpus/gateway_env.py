"""A gateway for tests, on real sockets: signed models in a registry, assembled, served by uvicorn.

The two model folders (scikit-learn as ONNX and as skops, signed with one ECDSA key) are built
once per test session and shared by xdist workers under a file lock; each test module then makes
its own registry from them, which takes well under a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from starlette.types import ASGIApp

from bastion.audit import AuditEntry, AuditLog
from bastion.registry import Principal, Registry, init_registry
from bastion.registry.records import ModelVersion
from bastion.serve.keys import ApiKey, KeySpec
from bastion.serve.protocol import GENERIC_REFUSAL
from bastion.serve.run import AUDIT_CHAIN, Assembled, GatewaySettings, assemble
from bastion.sign.keys import generate_key, load_private_key, save_keypair
from bastion.sign.ossf import sign_model
from corpus.hang_guard import HANG_GUARD, wait_until

ONNX = "fraud-onnx"
SKOPS = "fraud-skops"
KINDS = {ONNX: "onnx", SKOPS: "sklearn"}
INPUT = "features"
FEATURES = 20
# What no refusal may contain: an answer's output names and labels.
OUTPUT_MARKERS = ("outputs", "probabilities", "score", "legit", "fraud", "model_version")


@dataclass(frozen=True)
class BuiltModels:
    """Servable folders, signed with `signer` (private key) whose public half is `signer_pub`."""

    root: Path
    signer: Path
    signer_pub: Path

    def folder(self, kind: str) -> Path:
        return self.root / kind


def built_models(shared: Path) -> BuiltModels:
    """Build (or reuse) the signed ONNX and skops folders under `shared`, once for all workers."""
    from corpus.serving import dataset, write_model  # noqa: PLC0415 - sklearn is slow to import

    shared.mkdir(parents=True, exist_ok=True)
    root = shared / "gateway-models"
    built = BuiltModels(root, root / "signer.key", root / "signer.pub")
    with (shared / "gateway-models.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "done").exists():
            return built
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        key = generate_key("ecdsa-p256")
        save_keypair(key, built.signer)
        data = dataset()
        for kind in ("onnx", "sklearn"):
            write_model(root / kind, kind, data)
            sign_model(root / kind, key)
        (root / "done").write_text("ok")
    return built


def copy_model(
    source: Path, target: Path, *, signed_by: Path | None = None, edit: Callable[[dict[str, Any]], None] | None = None
) -> Path:
    """A copy of a model folder, without its signature; `edit` changes its serving.yaml, and
    `signed_by` (a private key file) signs the result."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.sig"))
    if edit is not None:
        spec_path = target / "serving.yaml"
        spec = yaml.safe_load(spec_path.read_text())
        edit(spec)
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    if signed_by is not None:
        sign_model(target, load_private_key(signed_by))
    return target


@dataclass
class RegistryEnv:
    """A registry with its first administrator."""

    home: Path
    registry: Registry
    admin: Principal
    admin_token: str

    def publish(
        self, name: str, folder: Path, stages: Sequence[str] = ("staging", "production"), assessment: Path | None = None
    ) -> ModelVersion:
        """Register `folder` (with an `assessment` report) as the next version of `name` and promote it through `stages`."""
        version = self.registry.register(self.admin, name, folder, assessment=assessment)
        for stage in stages:
            decision = self.registry.promote(self.admin, name, version.number, stage)
            failed = [f"{c.name}: {c.detail}" for c in decision.checks if not c.passed]
            assert decision.allowed, f"{name} -> {stage} refused: {failed}"
        return version

    def audit_entries(self, chain: str = AUDIT_CHAIN) -> list[AuditEntry]:
        return list(AuditLog(self.registry.engine, chain).entries())


def make_registry(home: Path, signature_keys: Sequence[Path] = ()) -> RegistryEnv:
    """A new registry whose production stage requires a signature by one of `signature_keys`
    (none: no signature needed), with no approvals and no separation of duties."""
    config = init_registry(home)
    production = {"signature_keys": [str(k) for k in signature_keys]} if signature_keys else {}
    policy = {"version": 1, "gate": {"separation_of_duties": False, "require": {"production": production}}}
    config.policy.write_text(yaml.safe_dump(policy), encoding="utf-8")
    registry = Registry(config)
    token = registry.bootstrap("admin")
    return RegistryEnv(home, registry, registry.authenticate(token), token)


# --- servers ------------------------------------------------------------------------------


class ServerThread:
    """A real uvicorn server on 127.0.0.1 (a port of its own), in a background thread."""

    def __init__(self, app: ASGIApp) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        wait_until(lambda: self.server.started, "the test server starting", alive=self._thread.is_alive)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=HANG_GUARD)
        self._socket.close()


@dataclass
class RunningGateway:
    """An assembled gateway serving its inference and admin ports."""

    assembled: Assembled
    inference: ServerThread
    admin: ServerThread
    caller: Principal  # who assembled it; key management is checked against it

    @property
    def url(self) -> str:
        return self.inference.url

    @property
    def admin_url(self) -> str:
        return self.admin.url

    def key(self, name: str = "caller", **spec: Any) -> tuple[ApiKey, str]:
        """A new API key, seen by this gateway at once."""
        key, text = self.assembled.gateway.store.create(self.caller, KeySpec(name, **spec))
        self.assembled.gateway.refresh()
        return key, text

    def stop(self) -> None:
        """Stop both servers, then close the gateway (flushing its audit log)."""
        self.inference.stop()
        self.admin.stop()
        self.assembled.close()


def start_gateway(
    registry: Registry, caller: Principal, settings: GatewaySettings, prepare: Callable[[Assembled], None] | None = None
) -> RunningGateway:
    """Assemble a gateway and serve it; `prepare` may adjust it before the servers start."""
    from bastion.serve.admin import create_admin_app  # noqa: PLC0415

    assembled = assemble(registry, caller, settings)
    if prepare is not None:
        prepare(assembled)
    inference = ServerThread(assembled.gateway.app()).start()
    admin = ServerThread(create_admin_app(assembled.gateway, registry)).start()
    return RunningGateway(assembled, inference, admin, caller)


@contextlib.contextmanager
def running(registry: Registry, caller: Principal, settings: GatewaySettings) -> Iterator[RunningGateway]:
    gateway = start_gateway(registry, caller, settings)
    try:
        yield gateway
    finally:
        gateway.stop()


# --- requests and what answers must (not) hold --------------------------------------------


def rows(count: int = 2, value: float | None = None) -> list[list[float]]:
    """`count` rows: held-out records of the served models' data (what a customer sends, which
    the before-answer checks pass), or, given a `value`, rows of that one value in every feature
    (a shape no training record has: atypical)."""
    if value is not None:
        return [[value + 0.01 * i] * FEATURES for i in range(count)]
    held_out = _held_out()
    return [held_out[i % len(held_out)] for i in range(count)]


@functools.lru_cache(maxsize=1)
def _held_out() -> list[list[float]]:
    from corpus.serving import dataset  # noqa: PLC0415 - sklearn is slow to import

    return [[round(float(v), 4) for v in row] for row in dataset().x_test[:256]]


def infer_body(
    data: list[list[float]] | None = None,
    *,
    name: str = INPUT,
    datatype: str = "FP32",
    shape: list[int] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    data = rows() if data is None else data
    tensor = {"name": name, "datatype": datatype, "shape": shape or [len(data), len(data[0])], "data": data}
    body: dict[str, Any] = {"inputs": [tensor]}
    if request_id is not None:
        body["id"] = request_id
    return body


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


def assert_refused(response: httpx.Response, status: int, reason: str | None) -> None:
    """The status, the refusal reason header, and no model output anywhere in the answer."""
    assert response.status_code == status, (response.status_code, response.headers, response.text)
    assert response.headers.get("x-bastion-refusal") == reason, response.headers
    text = response.text
    assert not any(marker in text for marker in OUTPUT_MARKERS), text


def assert_generic_refusal(response: httpx.Response, *secrets_: str) -> None:
    """An input refusal: 400, the one generic message, and none of `secrets_` echoed."""
    assert_refused(response, 400, "invalid-input")
    assert response.json() == {"error": GENERIC_REFUSAL}
    for secret in secrets_:
        assert secret not in response.text


def output_names(response: httpx.Response) -> list[str]:
    return [o["name"] for o in response.json()["outputs"]]


def wait_for_refresh(gateway: Any) -> None:
    """Wait (generously, not as an assertion on speed) until `gateway` has applied a snapshot of
    the keys and kill switches that its periodic refresh began after this call."""
    mark = gateway._tickets
    wait_until(lambda: gateway._applied > mark, "the gateway applying a refresh")


def seconds_to_utc_midnight(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return math.ceil(now / 86_400) * 86_400 - now
