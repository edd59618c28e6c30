"""The recorder readers are airtight: fed real payloads, CPython's unpicklers run nothing.

The differential test runs CPython's own unpicklers in the test process, so this guard
runs them in a fresh interpreter (an audit hook cannot be removed once added) over
payloads that would, if anything real were reached, run a shell command that leaves a
canary file, and over generated streams. Armed after a warm-up, the hook records what a
real load would do: `pickle.find_class` (the default find_class audits every import, so
an override that fell through to it shows), processes, exec/compile, new imports, and
files opened for writing. None may happen, and no canary may appear.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

HARNESS = r"""
import codecs, json, os, sys
sys.path.insert(0, sys.argv[1])
for name in ("raw-unicode-escape", "unicode-escape", "latin-1", "ascii", "utf-8"):
    codecs.lookup(name)  # the readers' own codecs, whatever the warm-up streams reach
from tests.scan.differential import recorders
from tests.scan.differential.compare import run_torch
from tests.scan.differential.streams import Generator

payloads = [bytes.fromhex(h) for h in json.loads(sys.argv[3])]
remove = recorders.register_extensions()
generated = [Generator(11).stream() for _ in range(400)]
readers = [recorders.READERS[name]() for name in ("c", "python", "joblib")]
if sys.argv[4] == "teeth":  # a reader that falls through to the real find_class
    import pickle

    class Real(pickle._Unpickler):
        def __init__(self, file, log):
            super().__init__(file)

    readers, generated = [Real], []
# Warm-up, unarmed: the readers' own imports (codecs for STRING, UNICODE) happen here.
with recorders.bounded_memory():
    for data in [Generator(12).stream() for _ in range(300)]:
        for reader in readers:
            recorders.run_reader(reader, data)
        run_torch(data)

FORBIDDEN = ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "subprocess.Popen", "exec",
             "compile", "pickle.find_class", "ctypes.", "socket.", "os.remove", "shutil.", "webbrowser.")
warm = set(sys.modules)
seen = []
armed = False

def hook(event, args):
    if not armed:
        return
    if event.startswith(FORBIDDEN):
        seen.append([event, repr(args)[:120]])
    elif event == "import" and args[0] not in warm:
        seen.append([event, args[0]])
    elif event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        seen.append([event, repr(args)[:120]])

sys.addaudithook(hook)
armed = True
calls = 0
with recorders.bounded_memory():
    for data in payloads + generated:
        for reader in readers:
            run = recorders.run_reader(reader, data)
            calls += sum(1 for kind, _ in run.events if kind == "call")
        if sys.argv[4] != "teeth":
            run = run_torch(data)
            calls += sum(1 for kind, _ in run.events if kind == "call")
armed = False
remove()
with open(sys.argv[2], "w") as out:
    json.dump({"violations": seen, "calls": calls}, out)
"""


class _Touch:
    """Pickles as os.system("touch CANARY"); never loaded, only written."""

    def __init__(self, func: object, canary: Path) -> None:
        self.func = func
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (self.func, (f"touch {self.canary}",))


def _payloads(canary: Path) -> list[bytes]:
    out = [pickle.dumps(_Touch(os.system, canary), protocol) for protocol in range(6)]
    out += [pickle.dumps(_Touch(subprocess.getoutput, canary), protocol) for protocol in (0, 2, 4)]
    out.append(b"cbuiltins\nexec\n(S'open(%r, \"w\")'\ntR." % str(canary))
    out.append(b"\x80\x02\x82\x01(S'touch %s'\ntR." % str(canary).encode())  # EXT 1, registered as nt.system
    out.append(b"(S'touch %s'\nios\nsystem\n." % str(canary).encode())  # INST
    out.append(b"cos\nsystem\n}(S'__setstate__'\ncos\nsystem\nub.")  # BUILD on a global
    return out


def _run_harness(tmp_path: Path, payloads: list[bytes], mode: str) -> dict[str, object]:
    result = tmp_path / "result.json"
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(  # our own interpreter on our own harness
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            HARNESS,
            str(repo),
            str(result),
            json.dumps([p.hex() for p in payloads]),
            mode,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome: dict[str, object] = json.loads(result.read_text())
    return outcome


def test_recorder_readers_run_nothing_a_payload_asks_for(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    payloads = _payloads(canary)
    outcome = _run_harness(tmp_path, payloads, "guarded")
    assert outcome["violations"] == []
    assert not canary.exists()
    # The readers did reach the payloads' calls: recorders answered them.
    assert isinstance(outcome["calls"], int)
    assert outcome["calls"] >= len(payloads)


def test_guard_sees_a_reader_that_reaches_the_real_find_class(tmp_path: Path) -> None:
    # The guard has teeth: an unguarded reader loading builtins.len (harmless) is caught.
    outcome = _run_harness(tmp_path, [b"cbuiltins\nlen\n."], "teeth")
    violations = outcome["violations"]
    assert isinstance(violations, list)
    assert ["pickle.find_class", "('builtins', 'len')"] in violations
