"""The gateway's own cost per inference request, without HTTP: where `benchmarks/serve.py`'s gap goes.

`benchmarks/serve.py` compares whole servers over HTTP, so it says how far Bastion is from bare
Starlette but not which check costs what. This drives the gateway's ASGI application
(`GatewayApp`) in process, as uvicorn would after parsing a request, with `--concurrency`
requests in flight (so adaptive batching batches as it does under load), every check on: an API
key with limits, validation, the before-answer guard, the observer process, the audit log. It
prints microseconds of CPU per request for the whole path and for the same model call alone, and
with `--profile` the functions that take the time (cProfile, by own time).

    .venv/bin/python benchmarks/hot_path.py                       # ONNX, 20,000 requests
    .venv/bin/python benchmarks/hot_path.py --kind sklearn --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

_ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(_ROOT / "tests"))

from bastion.serve.keys import KeySpec  # noqa: E402
from bastion.serve.limits import Quota, RateLimit  # noqa: E402
from bastion.serve.run import GatewaySettings, assemble  # noqa: E402
from bastion.sign.keys import generate_key, save_keypair  # noqa: E402
from bastion.sign.ossf import sign_model  # noqa: E402
from corpus.gateway_env import make_registry  # noqa: E402
from corpus.serving import Dataset, dataset, write_model  # noqa: E402

MODEL = "fraud"


def split(count: int) -> tuple[Dataset, list[bytes]]:
    """8,000 training records, and `count` distinct held-out rows inside their ranges as V2 bodies."""
    drawn = dataset(samples=int((8_000 + count) * 1.3))
    data = Dataset(drawn.x_train[:8_000], drawn.y_train[:8_000], drawn.x_test, drawn.y_test)
    train, held = data.x_train, np.vstack([drawn.x_test, drawn.x_train[8_000:]])
    inside = ((held >= train.min(axis=0)) & (held <= train.max(axis=0))).all(axis=1)
    rows = held[inside][:count].astype(np.float32)
    return data, [
        orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 20], "data": row.tolist()}]})
        for row in rows
    ]


async def drive(app: Any, token: str, payloads: list[bytes], concurrency: int) -> int:
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
    statuses: dict[str, int] = {}
    queue = iter(payloads)

    async def client(index: int) -> None:
        for body in queue:
            scope = {
                "type": "http", "method": "POST", "path": f"/v2/models/{MODEL}/infer", "raw_path": b"", "query_string": b"",
                "scheme": "http", "root_path": "", "server": ("127.0.0.1", 8000), "http_version": "1.1",
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
                "client": (f"10.0.{index % 4}.{index}", 40000 + index),
            }
            sent = False

            async def receive(body: bytes = body) -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    reason = dict(message["headers"]).get(b"x-bastion-refusal", b"").decode()
                    status = f"{message['status']} {reason}".strip()
                    statuses[status] = statuses.get(status, 0) + 1

            await app(scope, receive, send)

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    if set(statuses) != {"200"}:
        raise SystemExit(f"not every request was answered: {statuses}")
    return sum(statuses.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("onnx", "sklearn"), default="onnx")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--observer", choices=("process", "inline"), default="process")
    parser.add_argument("--profile", action="store_true", help="cProfile the run and print the top functions")
    parser.add_argument(
        "--peer", action="store_true", help="also drive bare Starlette (benchmarks/serve_peers) the same way, for the ratio"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bastion-hot-path-") as tmp:
        home = Path(tmp)
        data, payloads = split(args.requests + 2_000)
        folder = home / "model"
        write_model(folder, args.kind, data)
        signer = generate_key("ed25519")
        public = save_keypair(signer, home / "release.key")
        sign_model(folder, signer)
        env = make_registry(home / "registry", [public])
        env.publish(MODEL, folder)
        assembled = assemble(env.registry, env.admin, GatewaySettings(models=(MODEL,), observer=args.observer))
        try:
            gateway = assembled.gateway
            huge = RateLimit(per_second=1e6, burst=1e6)
            _, token = gateway.store.create(
                env.admin, KeySpec(name="bench", models=(MODEL,), rate=huge, quota=Quota(daily=10**12, monthly=10**12))
            )
            gateway.refresh()
            app = gateway.app()
            asyncio.run(drive(app, token, payloads[: 2_000], args.concurrency))  # warm-up
            profiler = cProfile.Profile() if args.profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            answered = asyncio.run(drive(app, token, payloads[2_000:], args.concurrency))
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            model = gateway.models[MODEL]
            row = np.frombuffer(np.zeros(20, np.float32).tobytes(), np.float32).reshape(1, 20)
            started = time.process_time()
            for _ in range(2_000):
                model.predict_proba(row)
            alone = (time.process_time() - started) / 2_000
            print(
                f"{args.kind}: {answered} requests, {cpu / answered * 1e6:.1f} us CPU per request in this process "
                f"({wall / answered * 1e6:.1f} us wall); one model call alone {alone * 1e6:.1f} us"
            )
            if args.peer:
                os.environ["MODEL_DIR"] = str(folder)
                sys.path.insert(0, str(_ROOT / "benchmarks" / "serve_peers"))
                peer = importlib.import_module("starlette_app").app
                asyncio.run(drive(peer, token, payloads[:2_000], args.concurrency))
                peer_cpu = time.process_time()
                asyncio.run(drive(peer, token, payloads[2_000:], args.concurrency))
                peer_cpu = (time.process_time() - peer_cpu) / answered
                print(
                    f"bare Starlette, same driver: {peer_cpu * 1e6:.1f} us CPU per request; Bastion costs "
                    f"{cpu / answered / peer_cpu:.2f}x as much"
                )
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(45)
                print(out.getvalue())
        finally:
            assembled.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
