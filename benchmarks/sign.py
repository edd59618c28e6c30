"""Signing and verifying throughput: Bastion against OpenSSF model-signing and sha256sum.

Builds a model folder (a few large files plus many small ones), then times, as whole
processes, `bastion sign`/`verify`, `model_signing sign key`/`verify key` (ECDSA P-256,
the curve both support) and `sha256sum` over the same files, and prints MB/s, ratios
and peak memory (from /usr/bin/time -f %M when available, else ru_maxrss of children).

    .venv/bin/python benchmarks/sign.py --large 4 --large-mb 450 --small 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


@dataclass(frozen=True)
class Timing:
    seconds: float
    peak_mb: float


def build_model(root: Path, large: int, large_mb: int, small: int, seed: int) -> int:
    """Write the model folder; returns its size in bytes."""
    rng = __import__("random").Random(seed)
    root.mkdir(parents=True)
    block = rng.randbytes(1 << 20)
    for i in range(large):
        with open(root / f"model-{i:05d}.safetensors", "wb") as handle:
            for j in range(large_mb):
                handle.write(block[j % 251 :] + block[: j % 251])
    (root / "small").mkdir()
    for i in range(small):
        (root / "small" / f"part-{i:04d}.json").write_bytes(rng.randbytes(rng.randint(100, 8000)))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(cmd: list[str], repeat: int) -> Timing:
    runs: list[float] = []
    peaks: list[float] = []
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    for _ in range(repeat):
        with tempfile.NamedTemporaryFile() as stats:
            full = [gnu_time, "-f", "%M", "-o", stats.name, *cmd] if gnu_time else cmd
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            done = subprocess.run(full, capture_output=True, text=True, check=False)
            runs.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}")
            text = Path(stats.name).read_text().strip().splitlines()
            peak_kb = (
                float(text[-1])
                if gnu_time and text
                else float(max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
            )
            peaks.append(peak_kb / 1024)
    return Timing(statistics.median(runs), max(peaks))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=4, help="large files (default 4)")
    parser.add_argument("--large-mb", type=int, default=450, help="MiB per large file (default 450)")
    parser.add_argument("--small", type=int, default=1000, help="small files (default 1000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bastion-sign-bench-"))
    try:
        model = work / "model"
        size = build_model(model, args.large, args.large_mb, args.small, args.seed)
        files = sorted(str(p) for p in model.rglob("*") if p.is_file())
        bastion = str(VENV_BIN / "bastion")
        key = work / "release.key"
        subprocess.run([bastion, "keygen", str(key)], check=True, capture_output=True)
        pub = key.with_suffix(".pub")
        ms = [sys.executable, "-m", "model_signing"]
        rows = {
            "sha256sum": timed(["sha256sum", *files], args.repeat),
            "bastion sign": timed(
                [bastion, "sign", str(model), "--key", str(key), "--signature", str(work / "b.sig")], args.repeat
            ),
            "bastion verify": timed(
                [bastion, "verify", str(model), "--key", str(pub), "--signature", str(work / "b.sig")], args.repeat
            ),
            "model_signing sign": timed(
                [*ms, "sign", "key", str(model), "--private_key", str(key), "--signature", str(work / "m.sig")],
                args.repeat,
            ),
            "model_signing verify": timed(
                [*ms, "verify", "key", str(model), "--signature", str(work / "m.sig"), "--public_key", str(pub)],
                args.repeat,
            ),
        }
        if shutil.which("b3sum"):
            rows["b3sum"] = timed(["b3sum", *files], args.repeat)
        mb = size / 1e6
        print(
            f"model: {args.large} x {args.large_mb} MiB + {args.small} small files = {size / 1e9:.2f} GB; "
            f"{os.cpu_count()} cores; median of {args.repeat}"
        )
        print(f"{'tool':<22}{'seconds':>9}{'MB/s':>9}{'peak MB':>9}  ratio")
        for name, t in rows.items():
            peer = "model_signing " + name.split()[-1] if name.startswith("bastion") else None
            ratio = f"{rows[peer].seconds / t.seconds:.2f}x faster than {peer}" if peer in rows else ""
            print(f"{name:<22}{t.seconds:>9.2f}{mb / t.seconds:>9.0f}{t.peak_mb:>9.0f}  {ratio}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
