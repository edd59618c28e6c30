"""End-to-end demo: scan real and booby-trapped models, then sign, register and promote one.

Part 1 builds model files, booby-traps some, and scans them all with `bastion scan`.
Part 2 signs a clean model, registers it, promotes it through the gate to production
(signature, re-scan and a second person's approval), and shows a tampered copy refused.

The payloads are harmless (`true`, `print`) and are never run: Bastion reads the files
without loading them, and this script only *writes* them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from corpus.serving import dataset, write_model  # the same builder the tests use


class _RunsOnLoad:
    """Pickles as a call to `func(*args)`: what a booby-trapped checkpoint does."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def build(folder: Path) -> dict[str, bool]:
    """Write the demo models; returns {file name: is booby-trapped}."""
    expected: dict[str, bool] = {}
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    torch.save(model.state_dict(), folder / "classifier.pt")
    expected["classifier.pt"] = False
    save_file(model.state_dict(), str(folder / "classifier.safetensors"))
    expected["classifier.safetensors"] = False
    x = np.random.default_rng(0).normal(size=(64, 4))
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    joblib.dump(clf, folder / "fraud-model.joblib")
    expected["fraud-model.joblib"] = False
    np.save(folder / "embeddings.npy", x)
    expected["embeddings.npy"] = False

    # A checkpoint with a payload buried in its training state.
    trapped = {"state_dict": model.state_dict(), "extra": {"hook": _RunsOnLoad(os.system, "true")}}
    torch.save(trapped, folder / "finetuned.pt")
    expected["finetuned.pt"] = True
    # A scikit-learn model whose pickle also calls eval().
    joblib.dump({"model": clf, "calibration": _RunsOnLoad(eval, "print('pwned')")}, folder / "calibrated.joblib")
    expected["calibrated.joblib"] = True
    # A pickle pretending to be safetensors: formats are recognised by content.
    (folder / "adapter.safetensors").write_bytes(pickle.dumps(_RunsOnLoad(os.system, "true"), protocol=4))
    expected["adapter.safetensors"] = True
    # A release bundle: the payload is a pickle inside a tar.gz.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        data = pickle.dumps(_RunsOnLoad(exec, "print('pwned')"), protocol=2)
        info = tarfile.TarInfo("release/tokenizer.pkl")
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
    (folder / "release.tar.gz").write_bytes(buffer.getvalue())
    expected["release.tar.gz"] = True
    # A truncated checkpoint: cannot be analysed, so it is never reported clean.
    whole = (folder / "classifier.pt").read_bytes()
    (folder / "partial-download.pt").write_bytes(whole[: len(whole) // 2])
    expected["partial-download.pt"] = True
    return expected


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp:
        folder = Path(tmp)
        expected = build(folder)
        print(f"Built {len(expected)} model files in {folder}; {sum(expected.values())} are booby-trapped or broken.\n")
        bastion = [sys.executable, "-m", "bastion.cli.main"]
        print("$ bastion scan", folder, flush=True)
        text = subprocess.run([*bastion, "scan", str(folder)], check=False)
        print(f"(exit code {text.returncode}: 0 clean, 1 unsafe findings, 2 not fully analysed)\n")
        report = json.loads(
            subprocess.run([*bastion, "scan", str(folder), "--format", "json"], capture_output=True, text=True, check=False).stdout
        )
        wrong = [
            Path(f["path"]).name
            for f in report["files"]
            if (f["verdict"] != "pass") != expected[Path(f["path"]).name]
        ]
        if wrong:
            print("Demo FAILED: unexpected verdicts for", ", ".join(wrong))
            return 1
        print("Part 1 OK: every booby-trapped or broken file was refused, every real model passed.\n")
        return lifecycle(folder, bastion)


POLICY = """\
version: 1
scan: {block_at: high}
gate:
  stages: [dev, staging, production]
  separation_of_duties: true
  require:
    staging: {signature_keys: [../release.pub], scan_block_at: high}
    production: {signature_keys: [../release.pub], scan_block_at: medium, approvals: 1, licences: [apache-2.0, mit]}
"""


def lifecycle(folder: Path, bastion: list[str]) -> int:
    """Sign, register, promote through the gate; a tampered copy must be refused."""
    env = dict(os.environ, BASTION_REGISTRY=str(folder / "registry"))
    env.pop("BASTION_TOKEN", None)
    failures: list[str] = []

    def run(*args: str, expect: int = 0, token: str | None = None, show: bool = True) -> str:
        shown = " ".join(a if len(a) < 60 else "..." for a in args)
        if show:
            print(f"$ bastion {shown}", flush=True)
        result = subprocess.run(
            [*bastion, *args], env=dict(env, BASTION_TOKEN=token) if token else env,
            capture_output=True, text=True, check=False,
        )
        if show:
            sys.stdout.write(result.stdout + result.stderr)
        if result.returncode != expect:
            failures.append(f"`bastion {shown}` exited {result.returncode}, expected {expect}")
        return result.stdout.strip()

    release = folder / "release-model"
    write_model(release, "onnx")  # a fraud classifier as ONNX, with serving.yaml (inputs, labels, data profile)
    run("keygen", str(folder / "release.key"))
    run("sign", str(release), "--key", str(folder / "release.key"))
    run("verify", str(release), "--key", str(folder / "release.pub"))

    admin = run("registry", "init", str(folder / "registry"), show=False)
    (folder / "registry" / "policy.yaml").write_text(POLICY)
    print(f"(registry created; policy:)\n{POLICY}")
    run("registry", "user", "add", "carol", "--role", "contributor", token=admin)
    run("registry", "user", "add", "bob", "--role", "approver", token=admin)
    carol = run("registry", "token", "issue", "carol", show=False, token=admin)
    bob = run("registry", "token", "issue", "bob", show=False, token=admin)

    run("registry", "register", "fraud-detector", str(release), "--source", "git+https://git.example/ml/fraud",
        "--licence", "apache-2.0", token=carol)
    run("registry", "promote", "fraud-detector@1", "--stage", "staging", token=carol)
    run("gate", "check", "fraud-detector@1", "--stage", "production", expect=1, token=carol)
    run("registry", "approve", "fraud-detector@1", "--stage", "production", expect=2, token=carol)
    run("registry", "approve", "fraud-detector@1", "--stage", "production", token=bob)
    run("registry", "promote", "fraud-detector@1", "--stage", "production", token=carol)

    print("\n# Someone swaps one byte of the released weights:")
    tampered = folder / "tampered-model"
    shutil.copytree(release, tampered)
    weights = bytearray((tampered / "model.onnx").read_bytes())
    weights[-5] ^= 0x01
    (tampered / "model.onnx").write_bytes(bytes(weights))
    run("verify", str(tampered), "--key", str(folder / "release.pub"), expect=1)
    run("registry", "register", "fraud-detector", str(tampered), "--source", "git+https://git.example/ml/fraud",
        "--licence", "apache-2.0", token=carol)
    run("registry", "promote", "fraud-detector@2", "--stage", "staging", expect=1, token=carol)
    run("registry", "list", token=carol)
    run("audit", "verify", token=admin)
    if failures:
        print("Demo FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("Part 2 OK: the signed model reached production through the gate; the tampered copy was refused.\n")
    return serving(folder, bastion, env, admin, run, failures)


def _extraction(infer: Any, key: str, data: Any, failures: list[str]) -> None:
    """Query uniformly at random over a wide box, as a model thief does, until the gateway stops the key."""
    print("\n# partner-x starts querying uniformly at random over a wide box (model extraction):")
    rng = np.random.default_rng(1)
    low, high = data.x_train.min(), data.x_train.max()
    for query in range(1, 501):
        response = infer(key, rng.uniform(low, high, size=(1, 20)))
        if response.status_code != 200:
            print(f"   query {query}: HTTP {response.status_code} {response.json()} (the alarm suspended the key)")
            return
    failures.append("the extraction attack ran 500 queries without an alarm")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serving(folder: Path, bastion: list[str], env: dict[str, str], admin: str, run: Any, failures: list[str]) -> int:
    """Serve the promoted model; call it with a scoped key; show refusals and an extraction alarm."""
    app_key = run("keys", "create", "mobile-backend", "--model", "fraud-detector", "--output", "label",
                  "--rate", "50", "--burst", "100", show=False, token=admin)
    scraper_key = run("keys", "create", "partner-x", "--model", "fraud-detector", "--output", "label",
                      "--rate", "1000", "--burst", "1000", show=False, token=admin)
    print("$ bastion keys create mobile-backend --model fraud-detector --output label --rate 50 --burst 100")
    print("$ bastion keys create partner-x ...   (two keys; each printed once)")
    port, admin_port = _free_port(), _free_port()
    command = [*bastion, "serve", "--model", "fraud-detector", "--port", str(port), "--admin-port", str(admin_port),
               "--on-alarm", "suspend"]
    print(f"$ bastion serve --model fraud-detector --port {port} --admin-port {admin_port} --on-alarm suspend")
    server = subprocess.Popen(command, env=dict(env, BASTION_TOKEN=admin), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v2/models/fraud-detector/infer"
    data = dataset()
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(100):
                try:
                    if client.get(f"http://127.0.0.1:{port}/v2/health/ready",
                                  headers={"Authorization": f"Bearer {app_key}"}).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)

            def infer(key: str | None, rows: Any) -> httpx.Response:
                body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                                    "data": rows.ravel().tolist()}]}
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                return client.post(url, json=body, headers=headers)

            answer = infer(app_key, data.x_test[:3])
            print(f"\n# The mobile backend's key (labels only): HTTP {answer.status_code}")
            print("  ", json.dumps(answer.json()["outputs"]))
            if answer.status_code != 200 or [o["name"] for o in answer.json()["outputs"]] != ["label"]:
                failures.append("the scoped key did not get a label-only answer")
            anonymous = infer(None, data.x_test[:1])
            print(f"# No key: HTTP {anonymous.status_code} {anonymous.json()}")
            wild = infer(app_key, np.full((1, 20), 1e6))
            print(f"# An input far outside the model's declared range: HTTP {wild.status_code} {wild.json()}")
            if anonymous.status_code != 401 or wild.status_code != 400:
                failures.append("a refusal was not refused")

            _extraction(infer, scraper_key, data, failures)
            still = infer(app_key, data.x_test[:1])
            print(f"# The mobile backend is unaffected: HTTP {still.status_code}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    run("audit", "verify", "--chain", "gateway", token=admin)
    exported = run("audit", "export", "--chain", "gateway", show=False, token=admin).splitlines()
    alarms = [json.loads(line)["body"] for line in exported if json.loads(line)["body"]["action"] == "alarm"]
    for alarm in alarms:
        print(f"audit: {alarm['actor']} {alarm['details']['kind']} after {alarm['details']['queries']} queries "
              f"-> {alarm['details']['action']}")
    if failures:
        print("Demo FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("Demo OK: served only the signed, promoted model; scoped answers; refusals; the extraction was stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
