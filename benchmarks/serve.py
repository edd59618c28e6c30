"""Benchmark Bastion's serving gateway against bare Starlette, FastAPI, MLServer and BentoML.

The same model, a scikit-learn ``LogisticRegression`` on 20 features (``tests/corpus/serving.py``),
is served by each server in turn, as skops (``sklearn``) and as its ONNX export (``onnx``), on
127.0.0.1, and driven by one load generator, ``wrk``, in the same run:

* **bare Starlette** and **FastAPI** (``benchmarks/serve_peers/``), from the project's virtualenv
  (same uvicorn as Bastion, one worker, on the same uvloop event loop and httptools parser that
  uvicorn picks up when they are installed, as they are with Bastion): the model loaded with skops or ONNX Runtime as Bastion
  loads it, the same V2 request parsed and the same V2 answer given, with no check at all.
  Starlette parses with orjson; FastAPI declares the request as a pydantic model and returns a
  dict, as its documentation does.
* **MLServer** (``mlserver`` + ``mlserver-sklearn``, pinned, own venv): the V2 protocol natively,
  its scikit-learn runtime loading a joblib dump of the same fitted model; ``parallel_workers: 0``
  (inference in the server process), ``metrics_endpoint: null`` (no metrics server), ``debug:
  false``, ``gzip_enabled: false`` (no client here asks for gzip); its gRPC server still starts.
  It answers the class index (``predict``, INT64) rather than the label name. MLServer has no
  ONNX runtime, so it runs for ``sklearn`` only.
* **BentoML** (pinned, own venv): a ``@bentoml.service`` (one worker, metrics and access log off)
  whose API takes the V2 request's own fields (``inputs``, ``id``) as its JSON parameters at
  ``POST /infer``, and answers the same V2 document.
* **Bastion** (``bastion serve``, one process, as a user runs it: uvloop and httptools, inference
  on its own ASGI path, and adaptive batching, which lets requests that reach the model in the
  same event-loop turn share one model call) with every check on: an API key
  (rate limit and daily/monthly quotas so high they never refuse, but checked on every request),
  input validation against ``serving.yaml``, the label-only output policy, the extraction and
  membership detectors, and the hash-chained audit log; once with in-process limits, once with
  limits shared through Redis (``--redis-url``). The model is signed, registered and promoted to
  production in a registry built in the work dir, and verified at load. ``--redis-client NAME``
  (repeatable) picks the Redis client(s) of the limiter: ``resp`` (the gateway's own, shown as
  ``bastion-redis``) and any other client of ``benchmarks/redis_client.py``, such as ``redis-py``
  (shown as ``bastion-NAME``: the same gateway, started with that client put in the limiter's
  place).

Before timing, each server must answer one request with the label the scikit-learn model
predicts, and Bastion must refuse a request without a key (401) and one outside its input
contract (400). Each server then gets a warm-up (``--warmup`` seconds of the same load), then
``wrk -t THREADS -c CONNECTIONS -d DURATION --latency``. Every request carries one of 100,000
distinct in-distribution rows (never repeated in a run, so Bastion's detectors stay quiet, as they
would for a benign client: checked offline before the run and by a request after it). A server
that cannot be installed or started is reported as "unavailable: <reason>"; a run with any
non-2xx answer or socket error is marked invalid.

Throughput and p50/p99 latency are shown as ratios to bare Starlette, with the acceptance
targets: Bastion >= 0.9x bare Starlette's throughput and >= 2x MLServer's with in-process
limits, >= 0.7x bare Starlette's with Redis-shared limits.

Everything runs on this machine at once (2 cores here: wrk's two threads share them with the
server), so the numbers are for comparison within one run, not absolute capacity. On a machine
that others use too, ``--rounds N`` repeats every server N times, interleaved (the order turns
by one each round), and shows the median round (every round's throughput is listed beside it).

Run it from the repository root with the project's interpreter::

    .venv/bin/python benchmarks/serve.py                         # everything, ~3 minutes
    .venv/bin/python benchmarks/serve.py --rounds 3              # the same, three interleaved rounds
    .venv/bin/python benchmarks/serve.py --kinds sklearn --duration 20 --connections 64
    .venv/bin/python benchmarks/serve.py --only starlette --only bastion --format json
    .venv/bin/python benchmarks/serve.py --only starlette --only bastion-redis --kinds onnx --rounds 5 \
        --redis-client resp --redis-client redis-py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from _table import fmt, render_table  # benchmarks/ is on sys.path when run as a script

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parent
PEER_APPS: Final = HERE / "serve_peers"
PEERS_ROOT: Final = HERE / ".peers-venv"
BASTION_BIN: Final = REPO_ROOT / ".venv" / "bin"
MODEL_PREFIX: Final = "fraud"
KINDS: Final = ("sklearn", "onnx")
SERVERS: Final = ("starlette", "fastapi", "mlserver", "bentoml", "bastion", "bastion-redis")
DEFAULT_REDIS: Final = "redis://127.0.0.1:6379/0"
REDIS_CLIENTS: Final = ("resp", "redis-py", "redis-py-pooled", "redis-py-turn", "redis-py-gather")
# The gateway with another Redis client in its limiter: `bastion serve`, after benchmarks/redis_client.py
# has put the client in the limiter's own one's place.
SWAPPED_CLIENT_GATEWAY: Final = (
    "import sys; sys.path.insert(0, {here!r}); import redis_client; redis_client.use_in_limiter({client!r}); "
    "from bastion.cli.main import main; sys.argv[0] = 'bastion'; main()"
)
# The peers' pins, one venv each; scikit-learn and numpy as in the project's lock, so MLServer
# reads the joblib dump with the scikit-learn that wrote it.
PEER_PINS: Final = {
    "mlserver": ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "scikit-learn==1.9.1", "numpy==2.4.6"),
    # 1.4.40 needs certifi>=2026.10.19, not released when this was written
    "bentoml": ("bentoml==1.4.39", "scikit-learn==1.9.1", "numpy==2.4.6", "skops==0.16.0", "onnxruntime==1.32.0"),
}
ACCEPTANCE: Final = (
    # label, server, reference, at least
    ("bastion / starlette throughput (in-process limits)", "bastion", "starlette", 0.9),
    ("bastion / mlserver throughput (in-process limits)", "bastion", "mlserver", 2.0),
    ("bastion-redis / starlette throughput (Redis limits)", "bastion-redis", "starlette", 0.7),
)
POLICY: Final = """\
version: 1
scan: {{block_at: high}}
gate:
  stages: [dev, staging, production]
  separation_of_duties: false
  require:
    staging: {{signature_keys: [{key}], scan_block_at: high}}
    production: {{signature_keys: [{key}], scan_block_at: medium}}
"""
WRK_SCRIPT: Final = """\
-- POST one of the prepared V2 bodies per request; each thread cycles through its own share of them,
-- so two threads never send the same row at the same moment (a near-duplicate burst to the detectors).
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local requests, first, index, share = {}, 0, 0, 0

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  if args[2] ~= nil and args[2] ~= "" and args[2] ~= "-" then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", nil, headers, line)
  end
  share = math.floor(#requests / tonumber(args[3]))
  first = (tid or 0) * share
end

function request()
  index = (index + 1) % share
  return requests[first + index + 1]
end
"""


def say(message: str) -> None:
    """Progress to stderr, so stdout carries only the result."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line."""

    duration_s: int
    warmup_s: int
    rounds: int
    connections: int
    threads: int
    kinds: tuple[str, ...]
    servers: tuple[str, ...]
    redis_url: str
    startup_timeout_s: float
    workdir: Path | None
    keep: bool
    peers_root: Path
    bastion_bin: Path
    output_format: str


def parse_args(argv: Sequence[str]) -> Options:
    """Turn the command line into Options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds of timed load per server (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of untimed load first (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every server this many times, interleaved; the median run is shown")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="model kinds, comma-separated (default sklearn,onnx)")
    parser.add_argument("--only", action="append", choices=SERVERS, help="run only this server (repeatable)")
    parser.add_argument("--skip-peers", action="store_true", help="bare Starlette and Bastion only")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"for bastion-redis (default {DEFAULT_REDIS})")
    parser.add_argument("--redis-client", action="append", choices=REDIS_CLIENTS,
                        help="the limiter's Redis client for bastion-redis (repeatable; default resp)")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds a server may take to answer")
    parser.add_argument("--workdir", type=Path, help="registry, models and logs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server logs)")
    parser.add_argument("--peers-venv", type=Path, default=PEERS_ROOT, help=f"default {PEERS_ROOT}")
    parser.add_argument("--bastion-bin", type=Path, default=BASTION_BIN, help=f"default {BASTION_BIN}")
    parser.add_argument("--format", dest="output_format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds takes some of {', '.join(KINDS)}")
    if min(args.duration, args.connections, args.threads, args.rounds) < 1 or args.warmup < 0:
        parser.error("--duration, --connections, --threads and --rounds must be at least 1, --warmup at least 0")
    servers = tuple(s for s in SERVERS if s in args.only) if args.only else SERVERS
    if args.skip_peers:
        servers = tuple(s for s in servers if s in ("starlette", "bastion", "bastion-redis"))
    clients = tuple(dict.fromkeys(args.redis_client or ("resp",)))
    servers = tuple(
        name
        for server in servers
        for name in (
            [server] if server != "bastion-redis" else ["bastion-redis" if c == "resp" else f"bastion-{c}" for c in clients]
        )
    )
    return Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
        connections=args.connections,
        threads=args.threads,
        kinds=kinds,
        servers=servers,
        redis_url=args.redis_url,
        startup_timeout_s=args.startup_timeout,
        workdir=args.workdir,
        keep=args.keep,
        peers_root=args.peers_venv,
        bastion_bin=args.bastion_bin,
        output_format=args.output_format,
    )


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True, slots=True)
class Probe:
    """One request whose right answer is known: the row, and the model's label for it."""

    body: bytes
    label_index: int
    label: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the servers need: model folders, the registry, the key, the load's bodies."""

    models: Mapping[str, Path]  # kind -> servable folder (model file + serving.yaml)
    mlserver_repo: Path  # settings.json + fraud/model-settings.json + fraud/model.joblib
    registry_home: Path
    admin_token: str
    api_key: str
    bodies: Path  # one V2 request per line
    probe: Probe
    invalid_body: bytes  # a request outside the input contract


LOAD_ROWS = 100_000  # more than a 10 s run sends, so no row is sent twice
TRAIN_ROWS = 8_000


def prepare(workdir: Path, kinds: Sequence[str]) -> Prepared:
    """Train and write the model once per kind, sign, register and promote it, and make the key."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import joblib  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import orjson  # noqa: PLC0415

    from bastion.audit import AuditLog  # noqa: PLC0415
    from bastion.registry import Registry, init_registry  # noqa: PLC0415
    from bastion.serve.detect import QueryMonitor, TrainingProfile  # noqa: PLC0415
    from bastion.serve.keys import KeySpec, KeyStore  # noqa: PLC0415
    from bastion.serve.limits import Quota, RateLimit  # noqa: PLC0415
    from bastion.serve.run import AUDIT_CHAIN  # noqa: PLC0415
    from bastion.sign.keys import generate_key, save_keypair  # noqa: PLC0415
    from bastion.sign.ossf import sign_model  # noqa: PLC0415
    from corpus.serving import LABELS, Dataset, dataset, write_model  # noqa: PLC0415

    # One draw of 8,000 training records and LOAD_ROWS+ held-out records from the same distribution:
    # the load is real held-out traffic, never one row twice (a client does not repeat itself, and
    # repeats are what the near-duplicate detector is for), and never jittered rows, which break the
    # features' correlations and are what the joint-distribution detectors are for.
    drawn = dataset(samples=int((TRAIN_ROWS + LOAD_ROWS) * 1.05))
    data = Dataset(
        drawn.x_train[:TRAIN_ROWS],
        drawn.y_train[:TRAIN_ROWS],
        np.vstack([drawn.x_test, drawn.x_train[TRAIN_ROWS:]]),
        np.concatenate([drawn.y_test, drawn.y_train[TRAIN_ROWS:]]),
    )
    signer = generate_key("ed25519")
    signer_pub = save_keypair(signer, workdir / "release.key")
    models: dict[str, Path] = {}
    for kind in KINDS:  # both, always: MLServer's joblib comes from the sklearn fit
        folder = workdir / "models" / kind
        fitted = write_model(folder, kind, data)
        sign_model(folder, signer)
        if kind in kinds:
            models[kind] = folder
        if kind == "sklearn":
            repo = workdir / "mlserver"
            (repo / MODEL_PREFIX).mkdir(parents=True)
            joblib.dump(fitted, repo / MODEL_PREFIX / "model.joblib")  # for MLServer's sklearn runtime
            shutil.copy(PEER_APPS / "mlserver" / "model-settings.json", repo / MODEL_PREFIX / "model-settings.json")
            sklearn_model = fitted

    # The load: held-out rows inside every feature's training range (the gateway refuses the rest), each once.
    rng = np.random.default_rng(7)
    inside = ((data.x_test >= data.x_train.min(axis=0)) & (data.x_test <= data.x_train.max(axis=0))).all(axis=1)
    rows = data.x_test[inside][:LOAD_ROWS].astype(np.float32)
    if len(rows) < LOAD_ROWS:
        raise SystemExit(f"only {len(rows)} held-out rows inside the training ranges; {LOAD_ROWS} needed")
    monitor = QueryMonitor(TrainingProfile.from_data(data.x_train))
    half, seen = len(rows) // 2, [0, 0]
    for thread in rng.integers(0, 2, size=len(rows)):  # two wrk threads, drifting apart
        j = thread * half + seen[thread] % half
        seen[thread] += 1
        if monitor.observe("check", rows[j : j + 1]):
            raise SystemExit("the benchmark's queries raise a detector alarm; they would be throttled")
    bodies = workdir / "bodies.jsonl"
    with bodies.open("wb") as sink:
        for i, row in enumerate(rows):
            sink.write(orjson.dumps(request_document(f"q{i}", row.tolist())) + b"\n")
    probe_row = rows[:1]
    index = int(sklearn_model.predict(probe_row)[0])
    probe = Probe(orjson.dumps(request_document("probe", probe_row[0].tolist())), index, LABELS[index])
    invalid = orjson.dumps(request_document("invalid", [1e6] * probe_row.shape[1]))

    home = workdir / "registry"
    config = init_registry(home)
    config.policy.write_text(POLICY.format(key=json.dumps(str(signer_pub))), encoding="utf-8")
    registry = Registry(config)
    try:
        admin_token = registry.bootstrap("admin")
        admin = registry.authenticate(admin_token)
        for kind in kinds:
            version = registry.register(admin, f"{MODEL_PREFIX}-{kind}", models[kind])
            for stage in ("staging", "production"):
                decision = registry.promote(admin, version.model, version.number, stage)
                if not decision.allowed:
                    raise SystemExit(f"{version.ref} -> {stage} refused: {decision.reasons}")
        audit = AuditLog(registry.engine, AUDIT_CHAIN, signing_key=registry.signing_key, checkpoint_every=1)
        spec = KeySpec(
            name="benchmark",
            rate=RateLimit(per_second=1_000_000.0, burst=10**9),  # checked on every request, never refuses
            quota=Quota(daily=10**12, monthly=10**12),
            expires_in=timedelta(days=1),
        )
        _key, api_key = KeyStore(registry.engine, audit).create(admin, spec)
    finally:
        registry.close()
    return Prepared(models, workdir / "mlserver", home, admin_token, api_key, bodies, probe, invalid)


def request_document(request_id: str, values: list[float]) -> dict[str, Any]:
    """A V2 inference request for one row."""
    return {"id": request_id, "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, len(values)], "data": values}]}


# --------------------------------------------------------------------------- peers


def ensure_peer(name: str, root: Path) -> tuple[Path | None, str]:
    """The bin dir of the peer's venv, installed unless it holds the same pins; or None and why."""
    venv = root / name
    marker = venv / "bastion-bench-pins.txt"
    pins = " ".join(PEER_PINS[name])
    exe = venv / "bin" / name
    if exe.exists() and marker.is_file() and marker.read_text() == pins:
        return venv / "bin", ""
    say(f"peers: installing {pins} into {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"{name}-install.log"
    with log.open("w") as sink:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *PEER_PINS[name]],
        ]
        for argv in steps:
            sink.write(f"$ {' '.join(argv)}\n")
            sink.flush()
            if subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, check=False).returncode != 0:
                return None, f"installing {pins} failed (see {log})"
    if not exe.exists():
        return None, f"{exe} missing after install (see {log})"
    marker.write_text(pins)
    return venv / "bin", ""


def dist_version(python: Path, distribution: str) -> str:
    """The installed version of a distribution in some interpreter's environment."""
    code = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    done = subprocess.run([str(python), "-c", code, distribution], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one server and talk to it."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    url: str  # the inference endpoint
    auth: str  # bearer token wrk sends ("" for none)
    answer_label: Callable[[dict[str, Any]], object]  # what the answer says the label is
    version: str
    settings: str  # how it was configured, for the report


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def v2_label(document: dict[str, Any]) -> object:
    return document["outputs"][0]["data"][0]


def base_env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def make_launch(server: str, kind: str, prepared: Prepared, options: Options, workdir: Path) -> Launch | str:
    """The server's launch, or the reason it is unavailable."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v2/models/{MODEL_PREFIX}/infer"
    folder = prepared.models[kind]
    venv_bin = options.bastion_bin
    if server in ("starlette", "fastapi"):
        env = base_env(venv_bin) | {"MODEL_DIR": str(folder)}
        argv = (
            str(venv_bin / "uvicorn"), "--app-dir", str(PEER_APPS), f"{server}_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log", "--no-server-header",
        )
        version = f"{server} {dist_version(venv_bin / 'python', server)}, uvicorn {dist_version(venv_bin / 'python', 'uvicorn')}"
        return Launch(argv, env, REPO_ROOT, url, "", v2_label, version, "one uvicorn worker (uvloop, httptools), no access log")
    if server in ("bastion", "bastion-redis") or server.removeprefix("bastion-") in REDIS_CLIENTS:
        admin_port = free_port()
        client = "resp" if server in ("bastion", "bastion-redis") else server.removeprefix("bastion-")
        start = [str(venv_bin / "bastion")]
        if client != "resp":
            start = [str(venv_bin / "python"), "-c", SWAPPED_CLIENT_GATEWAY.format(here=str(HERE), client=client)]
        argv = [
            *start, "serve", "--registry", str(prepared.registry_home), "--model",
            f"{MODEL_PREFIX}-{kind}", "--port", str(port), "--admin-port", str(admin_port),
        ]
        if server != "bastion":
            argv += ["--redis", options.redis_url]
        env = base_env(venv_bin) | {"BASTION_TOKEN": prepared.admin_token}
        env.pop("BASTION_REDIS_URL", None)
        url = f"http://127.0.0.1:{port}/v2/models/{MODEL_PREFIX}-{kind}/infer"
        limits = f"Redis {options.redis_url} through {client}" if server != "bastion" else "in-process"
        version = f"bastion {dist_version(venv_bin / 'python', 'bastion')}, uvicorn {dist_version(venv_bin / 'python', 'uvicorn')}"
        return Launch(tuple(argv), env, REPO_ROOT, url, prepared.api_key, v2_label, version,
                      f"bastion serve, every check on, {limits} limits")
    if server == "mlserver":
        if kind != "sklearn":
            return "MLServer has no ONNX runtime (its runtimes: sklearn, xgboost, lightgbm, mlflow, ...)"
        bin_dir, why = ensure_peer("mlserver", options.peers_root)
        if bin_dir is None:
            return why
        settings = json.loads((PEER_APPS / "mlserver" / "settings.json").read_text())
        settings |= {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
        (prepared.mlserver_repo / "settings.json").write_text(json.dumps(settings, indent=2))
        shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("host", "http_port", "grpc_port", "metrics_port"))
        return Launch(
            (str(bin_dir / "mlserver"), "start", str(prepared.mlserver_repo)), base_env(bin_dir), prepared.mlserver_repo,
            url, "", lambda document: document["outputs"][0]["data"][0], f"mlserver {dist_version(bin_dir / 'python', 'mlserver')}",
            f"{shown}; answers the class index",
        )
    if server == "bentoml":
        bin_dir, why = ensure_peer("bentoml", options.peers_root)
        if bin_dir is None:
            return why
        env = base_env(bin_dir) | {
            "MODEL_DIR": str(folder),
            "BENTOML_HOME": str(workdir / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "True",
        }
        argv = (str(bin_dir / "bentoml"), "serve", "bentoml_service:Classifier", "--host", "127.0.0.1", "--port", str(port))
        return Launch(argv, env, PEER_APPS, f"http://127.0.0.1:{port}/infer", "", v2_label,
                      f"bentoml {dist_version(bin_dir / 'python', 'bentoml')}", "workers=1, metrics and access log off")
    raise ValueError(server)


class Running:
    """A server process in its own session, logging to a file."""

    def __init__(self, launch: Launch, log: Path) -> None:
        self.log = log
        self._sink = log.open("wb")
        self.proc = subprocess.Popen(
            list(launch.argv), cwd=launch.cwd, env=dict(launch.env), stdin=subprocess.DEVNULL,
            stdout=self._sink, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 3) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL after 15 s."""
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group
        self._sink.close()


def post(url: str, body: bytes, auth: str = "", timeout: float = 10.0) -> tuple[int, dict[str, Any] | None]:
    """POST a JSON body; the status and the parsed answer (None if not JSON; a refusal's reason is
    put under "x-bastion-refusal")."""
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
        reason = err.headers.get("x-bastion-refusal", "")
        return status, {"x-bastion-refusal": reason} if reason else None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def wait_ready(running: Running, launch: Launch, prepared: Prepared, timeout_s: float) -> str:
    """Poll with the probe until the server answers; '' when it did, else why not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not running.alive():
            return f"exited with {running.proc.returncode}: {running.tail()}"
        with contextlib.suppress(OSError):
            status, _ = post(launch.url, prepared.probe.body, launch.auth, timeout=5.0)
            if status < 500:
                return ""
        time.sleep(0.25)
    return f"no answer within {timeout_s:.0f} s: {running.tail()}"


def verify(server: str, launch: Launch, prepared: Prepared) -> str:
    """'' when the server answers the probe right (and Bastion refuses what it must), else why not."""
    status, document = post(launch.url, prepared.probe.body, launch.auth)
    if status != 200 or document is None:
        return f"probe answered {status}: {document}"
    said = launch.answer_label(document)
    expected = prepared.probe.label_index if server == "mlserver" else prepared.probe.label
    if said != expected:
        return f"probe answered {said!r}, the model predicts {expected!r}"
    if server.startswith("bastion"):
        status, _ = post(launch.url, prepared.probe.body, "")
        if status != 401:
            return f"a request without a key answered {status}, not 401: checks are off"
        status, _ = post(launch.url, prepared.invalid_body, launch.auth)
        if status != 400:
            return f"a request outside the input contract answered {status}, not 400: validation is off"
    return ""


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class Load:
    """What wrk measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.non_2xx == 0 and self.socket_errors == 0


UNITS_MS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(match.group(1)) * UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> Load:
    """Read wrk's --latency report."""
    percentiles = {int(p): to_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M)}
    done = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if done is None or rps is None or len(percentiles) != 4:
        raise ValueError(f"unreadable wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Load(
        requests=int(done.group(1)),
        seconds=to_ms(done.group(2) + done.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


def group_cpu_seconds(root: int) -> float | None:
    """User and system CPU seconds of process `root` and every live descendant (Bastion's observer
    process, MLServer's and BentoML's workers, even those in a session of their own), their
    waited-for children's included; None when /proc cannot be read. CPU per request is what other
    tenants of a shared machine disturb least: they slow a server down, they do not make it do
    more work."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    spent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])  # after the command: state, ppid, ...
        spent[pid] = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    if root not in spent:
        return None
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(spent[pid] for pid in tree) / ticks


def run_wrk(launch: Launch, script: Path, bodies: Path, options: Options, seconds: int) -> Load:
    argv = [
        "wrk", f"-t{options.threads}", f"-c{options.connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
        "-s", str(script), launch.url, "--", str(bodies), launch.auth or "-", str(options.threads),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class Result:
    """One server on one model kind."""

    server: str
    kind: str
    version: str = ""
    settings: str = ""
    load: Load | None = None
    unavailable: str = ""  # why there is no number
    after: str = ""  # a problem seen after the load (e.g. the key throttled)
    rounds_rps: tuple[float, ...] = ()  # every round's throughput; `load` is the median round
    cpu_us: float | None = None  # CPU of the server's processes per request answered, in microseconds


@dataclass(frozen=True, slots=True)
class Report:
    command: str
    machine: str
    inputs: Mapping[str, Any]
    results: tuple[Result, ...] = field(default=())


def gateway_entries(registry_home: Path) -> int:
    """How many entries Bastion's gateway chain holds (read straight from the registry database)."""
    with contextlib.closing(sqlite3.connect(registry_home / "registry.db")) as db:
        row = db.execute("SELECT count(*) FROM audit_entries WHERE chain = 'gateway'").fetchone()
    return int(row[0])


def audit_shortfall(before: int, after: int, sent: int) -> str:
    """A problem if the gateway wrote fewer entries than wrk counted answers (in-flight requests
    at wrk's cut-off are answered and recorded but not counted, so a few more are expected)."""
    written = after - before
    return "" if written >= sent else f"audit chain lost entries: {written:,} written for {sent:,} answered requests"


def bench_one(server: str, kind: str, prepared: Prepared, options: Options, workdir: Path, script: Path) -> Result:
    """Start, verify, warm up, time, re-check and stop one server (Bastion: and count its records)."""
    launch = make_launch(server, kind, prepared, options, workdir)
    if isinstance(launch, str):
        return Result(server, kind, unavailable=launch)
    say(f"{kind}/{server}: starting ({launch.version})")
    audited = server.startswith("bastion")
    entries_before = gateway_entries(prepared.registry_home) if audited else 0
    running = Running(launch, workdir / "logs" / f"{kind}-{server}.log")
    result: Result | None = None
    try:
        why = wait_ready(running, launch, prepared, options.startup_timeout_s) or verify(server, launch, prepared)
        if why:
            return Result(server, kind, launch.version, launch.settings, unavailable=why)
        warmup = run_wrk(launch, script, prepared.bodies, options, options.warmup_s) if options.warmup_s else None
        cpu_before = group_cpu_seconds(running.proc.pid)
        load = run_wrk(launch, script, prepared.bodies, options, options.duration_s)
        cpu_after = group_cpu_seconds(running.proc.pid)
        cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
        status, said = post(launch.url, prepared.probe.body, launch.auth)
        after = "" if status == 200 else f"after the load the probe answered {status} {said or ''}"
        say(f"{kind}/{server}: {load.rps:.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms")
        cpu_us = cpu / load.requests * 1e6 if cpu is not None and load.requests else None
        result = Result(server, kind, launch.version, launch.settings, load, after=after, cpu_us=cpu_us)
        sent = load.requests + (warmup.requests if warmup else 0)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as err:
        return Result(server, kind, launch.version, launch.settings, unavailable=f"{type(err).__name__}: {err}")
    finally:
        running.stop()  # Bastion writes everything queued before it exits
    if audited:
        written = gateway_entries(prepared.registry_home) - entries_before
        say(f"{kind}/{server}: {written:,} audit entries for {sent:,} requests wrk counted")
        lost = audit_shortfall(entries_before, entries_before + written, sent)
        if lost:
            result = replace(result, after="; ".join(filter(None, (result.after, lost))))
    return result


def median_result(runs: Sequence[Result]) -> Result:
    """The round with the median throughput (the lower middle one for an even count), with every round's."""
    measured = sorted((r for r in runs if r.load is not None), key=lambda r: r.load.rps if r.load else 0.0)
    if not measured:
        return runs[0]
    middle = measured[(len(measured) - 1) // 2]
    rps = tuple(r.load.rps for r in runs if r.load is not None)
    problems = "; ".join(r.after or r.unavailable for r in runs if r.after or r.unavailable)
    cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
    cpu = statistics.median(cpus) if cpus else None
    return replace(middle, rounds_rps=rps, after=problems if len(runs) > 1 else middle.after, cpu_us=cpu)


def machine_line() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cpus, Python {platform.python_version()}, load avg at start {load}"


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" [")[0] if first else "unknown"


def forget_limits(redis_url: str, api_key: str) -> None:
    """Delete the limits the gateways kept in Redis for this run's key (its id is unique to the run)."""
    import redis  # noqa: PLC0415

    key_id = api_key.split("_")[1]  # bsk_<id>_<secret>
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"bastion:limits:{{{len(key_id)}:{key_id}:*", count=1000))
        if keys:
            client.delete(*keys)
    say(f"cleanup: {len(keys)} limit record(s) of key {key_id} deleted from Redis")


def run(options: Options, workdir: Path, command: str) -> Report:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    say("setup: training, signing, registering and promoting the model")
    prepared = prepare(workdir, options.kinds)
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    machine = machine_line()
    runs: dict[tuple[str, str], list[Result]] = {}
    for round_ in range(options.rounds):  # interleaved, so drifting load on the machine hits everyone alike
        if options.rounds > 1:
            say(f"round {round_ + 1} of {options.rounds}")
        # the order turns by one each round, so no server always runs first (or right after another)
        turn = round_ % len(options.servers)
        order = options.servers[turn:] + options.servers[:turn]
        for kind in options.kinds:
            for server in order:
                runs.setdefault((kind, server), []).append(bench_one(server, kind, prepared, options, workdir, script))
    if any(server != "bastion" and server.startswith("bastion") for server in options.servers):
        forget_limits(options.redis_url, prepared.api_key)
    results = [median_result(found) for found in runs.values()]
    inputs = {
        "load": f"{wrk_version()} -t{options.threads} -c{options.connections} -d{options.duration_s}s --latency "
        f"(after {options.warmup_s}s warm-up), {options.rounds} round(s), median shown",
        "requests": f"V2 JSON, one row of 20 FP32 features, {LOAD_ROWS:,} distinct in-distribution rows",
        "model": "LogisticRegression (tests/corpus/serving.py), skops / ONNX / joblib (MLServer)",
    }
    return Report(command, machine, inputs, tuple(results))


# --------------------------------------------------------------------------- report


def ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def table_rows(report: Report) -> list[dict[str, Any]]:
    """One row per server and kind, with ratios to bare Starlette on the same kind."""
    rows = []
    base = {r.kind: r.load for r in report.results if r.server == "starlette" and r.load is not None}
    starlette_cpu = {r.kind: r.cpu_us for r in report.results if r.server == "starlette"}
    for r in report.results:
        ref = base.get(r.kind)
        load = r.load
        rows.append(
            {
                "kind": r.kind,
                "server": r.server,
                "rps": load.rps if load else None,
                "p50_ms": load.p50_ms if load else None,
                "p99_ms": load.p99_ms if load else None,
                "rps_ratio": ratio(load.rps, ref.rps) if load and ref else None,
                "p50_ratio": ratio(load.p50_ms, ref.p50_ms) if load and ref else None,
                "p99_ratio": ratio(load.p99_ms, ref.p99_ms) if load and ref else None,
                "requests": load.requests if load else None,
                "rounds_rps": list(r.rounds_rps),
                "cpu_us": r.cpu_us,
                "cpu_ratio": ratio(r.cpu_us, starlette_cpu[r.kind]) if r.cpu_us and starlette_cpu.get(r.kind) else None,
                "valid": load.valid and not r.after if load else None,
                "note": (r.unavailable and f"unavailable: {r.unavailable}") or note_of(r),
            }
        )
    return rows


def note_of(result: Result) -> str:
    load = result.load
    problems = []
    if load is not None and load.non_2xx:
        problems.append(f"{load.non_2xx} non-2xx")
    if load is not None and load.socket_errors:
        problems.append(f"{load.socket_errors} socket errors")
    if result.after:
        problems.append(result.after)
    return "INVALID: " + ", ".join(problems) if problems else ""


def acceptance(report: Report) -> list[dict[str, Any]]:
    """The targets the issue names, per kind: measured ratio, target, and whether it is met."""
    by = {(r.kind, r.server): r.load for r in report.results}
    cpu_by = {(r.kind, r.server): r.cpu_us for r in report.results}
    lines = []
    for kind in dict.fromkeys(r.kind for r in report.results):
        for label, server, reference, target in ACCEPTANCE:
            load, ref = by.get((kind, server)), by.get((kind, reference))
            value = ratio(load.rps, ref.rps) if load and ref else None
            lines.append({"kind": kind, "check": label, "target": target, "ratio": value,
                          "met": None if value is None else value >= target})
        # The same comparison by CPU per request (the reference's over the server's): the
        # throughput ratio a CPU-bound server reaches, and what a busy shared machine disturbs least.
        for label, server, reference, target in ACCEPTANCE:
            mine, theirs = cpu_by.get((kind, server)), cpu_by.get((kind, reference))
            value = ratio(theirs, mine) if mine and theirs else None
            lines.append({"kind": kind, "check": label.replace("throughput", "by CPU per request"), "target": target,
                          "ratio": value, "met": None if value is None else value >= target})
    return lines


def render_text(report: Report) -> str:
    header = ["kind", "server", "req/s", "p50_ms", "p99_ms", "rps/starlette", "p50/starlette", "p99/starlette",
              "cpu_us/req", "cpu/starlette", "rounds_req/s", "note"]
    cells = [
        [r["kind"], r["server"], fmt(r["rps"], 0), fmt(r["p50_ms"]), fmt(r["p99_ms"]), fmt(r["rps_ratio"]),
         fmt(r["p50_ratio"]), fmt(r["p99_ratio"]), fmt(r["cpu_us"], 0), fmt(r["cpu_ratio"]), ",".join(f"{x:.0f}" for x in r["rounds_rps"]) or "-", r["note"]]
        for r in table_rows(report)
    ]
    checks = [
        [c["kind"], c["check"], f">= {c['target']}", fmt(c["ratio"]),
         "-" if c["met"] is None else "met" if c["met"] else "MISSED"]
        for c in acceptance(report)
    ]
    servers = {}
    for r in report.results:
        if r.version:
            servers.setdefault(r.server, f"  {r.server}: {r.version}; {r.settings}")
    parts = [
        f"command: {report.command}",
        f"machine: {report.machine}",
        *(f"{k}: {v}" for k, v in report.inputs.items()),
        "",
        render_table(header, cells),
        "",
        render_table(["kind", "acceptance", "target", "ratio", "result"], checks),
        "",
        "servers:",
        *servers.values(),
    ]
    return "\n".join(parts)


def render_json(report: Report) -> str:
    payload = {
        "schema": "bastion.bench.serve/1",
        "command": report.command,
        "machine": report.machine,
        "inputs": dict(report.inputs),
        "table": table_rows(report),
        "acceptance": acceptance(report),
        "results": [asdict(r) for r in report.results],
    }
    return json.dumps(payload, indent=2)


def main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="bastion-bench-serve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise SystemExit(f"{workdir} is not empty; name an empty or new folder")
    command = " ".join(["python", "benchmarks/serve.py", *argv])
    try:
        report = run(options, workdir.resolve(), command)
    finally:
        if options.keep:
            say(f"kept work dir {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render_json(report) if options.output_format == "json" else render_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
