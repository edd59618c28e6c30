"""The never-execute guard: scanning hostile files runs none of their code.

Each scan runs in a fresh interpreter (the audit hook cannot be removed once installed,
so it must not leak into other tests). The harness imports all of Bastion and scans every
target once to warm up (imports, lazily built tables), then arms a `sys.addaudithook`
hook and scans again. Armed, it records what loading a model would do and scanning must
never do: unpickling (`pickle.find_class`), executing or compiling code, importing a new
module, starting processes, loading native code, and opening files for writing. Canary
pickles would create a file next to the test if anything loaded them.

`test_guard_catches_a_scanner_that_unpickles` proves the guard has teeth: it makes the
scanner call `pickle.loads` on what it scans and expects both the hook and the canaries
to report it.
"""

from __future__ import annotations

import base64
import builtins
import bz2
import gzip
import io
import json
import lzma
import marshal
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_bytes
from bastion.scan.dispatch import PLUGINS
from bastion.scan.source import MemorySource
from corpus.builders import onnx_one_node

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CORPUS_FOLDERS = (SHARED / "corpus", SHARED / "external-corpus")

HARNESS = r"""
import ast
import json
import os
import pkgutil
import sys

result_path, targets = sys.argv[1], sys.argv[2:]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
FORBIDDEN_EXACT = {"exec", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.startfile",
                   "subprocess.Popen", "pickle.find_class", "code.__new__", "webbrowser.open",
                   "urllib.Request", "os.kill", "os.killpg", "os.putenv", "os.unsetenv"}
FORBIDDEN_PREFIXES = ("os.exec", "os.spawn", "ctypes.", "marshal.", "socket.", "shutil.", "os.remove",
                      "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown",
                      "os.truncate", "os.chflags", "os.utime")
AST_FILE = ast.__file__
phase = "setup"
warm_imports = set()
violations = []


def hook(event, args):
    if phase == "warmup":
        if event == "import":
            warm_imports.add(args[0])
        return
    if phase != "armed":
        return
    if event == "open":
        mode, flags = args[1], args[2]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS)
        if not writes:
            return
    elif event == "compile":
        caller = sys._getframe(1).f_code
        if caller.co_name == "parse" and caller.co_filename == AST_FILE:
            return  # ast.parse (literal_eval of a .npy header) builds a syntax tree, never code
    elif event == "import":
        if args[0] in sys.modules or args[0] in warm_imports:
            return  # a failed optional import repeats exactly what the warm-up did
    elif event not in FORBIDDEN_EXACT and not event.startswith(FORBIDDEN_PREFIXES):
        return
    frame = sys._getframe(1)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    violations.append({"event": event, "args": repr(args)[:300], "where": where})


sys.addaudithook(hook)
phase = "warmup"
import bastion
for module in pkgutil.walk_packages(bastion.__path__, "bastion."):
    __import__(module.name)
from bastion.scan.api import scan_paths

scan_paths(targets, workers=1)

if os.environ.get("BASTION_TEST_SABOTAGE") == "1":
    # A scanner that "also" loads what it scans: the guard must catch it.
    import pickle

    import bastion.scan.formats.pickle as pickle_format

    original = pickle_format.scan_pickle

    def loading_scan_pickle(ctx, src, loc, depth, *args, **kwargs):
        data = src.bytes_at(src.tell(), src.size - src.tell()) if hasattr(src, "bytes_at") else src.peek(1 << 16)
        try:
            pickle.loads(data)
        except Exception:
            pass
        return original(ctx, src, loc, depth, *args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "scan_pickle", None) is original:
            module.scan_pickle = loading_scan_pickle

phase = "armed"
report = scan_paths(targets, workers=1)
phase = "done"
verdicts = {f.path: f.verdict(bastion.Severity.HIGH).value for f in report.files}
with open(result_path, "w", encoding="utf-8") as out:
    json.dump({"violations": violations, "verdicts": verdicts}, out)
"""


class _Call:
    """Pickles as `func(*args)`: a REDUCE of the named global, which loading would run."""

    def __init__(self, func: object, *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.func, self.args)


def _canary_payloads(canaries: Path) -> dict[str, object]:
    """Objects that, if unpickled, create a file named after the payload in `canaries`."""
    return {
        "open": _Call(builtins.open, str(canaries / "open"), "w"),
        "system": _Call(os.system, f"touch {canaries / 'system'}"),
        "exec": _Call(builtins.exec, f"open({str(canaries / 'exec')!r}, 'w').close()"),
    }


# -- one canary per registered format ------------------------------------------------------
# Each builder returns bytes of its plug-in's format that carry a payload creating a file in
# `canaries` if anything loads, unpickles, renders or runs them, and the verdict the scan must
# give. A format that cannot run code carries a pickle payload where a careless scanner might
# unpickle it (trailing a safetensors file, inside an archive Bastion refuses to unpack).
CanaryBuilder = Callable[[Path], tuple[bytes, Verdict]]


def _payload_pickle(canaries: Path, protocol: int = 2) -> bytes:
    return pickle.dumps({"model": _Call(builtins.open, str(canaries / "open"), "w")}, protocol=protocol)


def _safetensors(canaries: Path) -> tuple[bytes, Verdict]:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<Q", len(header)) + header + np.ones(2, dtype=np.float32).tobytes()
    return data + _payload_pickle(canaries), Verdict.FAIL


def _torch_zip(canaries: Path) -> tuple[bytes, Verdict]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", _payload_pickle(canaries))
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue(), Verdict.FAIL


def _npy(canaries: Path) -> tuple[bytes, Verdict]:
    buffer = io.BytesIO()
    array = np.array([_Call(os.system, f"touch {canaries / 'system'}"), 1], dtype=object)
    np.save(buffer, array, allow_pickle=True)  # saving pickles; never loaded
    return buffer.getvalue(), Verdict.FAIL


def _compressed(pack: Callable[[bytes], bytes]) -> CanaryBuilder:
    return lambda canaries: (pack(_payload_pickle(canaries)), Verdict.FAIL)


def _zfile(canaries: Path) -> tuple[bytes, Verdict]:
    payload = _payload_pickle(canaries)
    return b"ZF" + f"{len(payload):#x}".ljust(19).encode() + zlib.compress(payload), Verdict.FAIL


def _gguf(canaries: Path) -> tuple[bytes, Verdict]:
    template = f"{{{{ cycler.__init__.__globals__.os.popen('touch {canaries / 'template'}').read() }}}}"

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    kvs = [("general.architecture", "llama"), ("tokenizer.chat_template", template)]
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    out += b"".join(string(k) + struct.pack("<I", 8) + string(v) for k, v in kvs)
    return out, Verdict.FAIL


def _lambda_config(canaries: Path) -> str:
    code = compile(f"lambda x: open({str(canaries / 'lambda')!r}, 'w') and x", "<canary>", "eval").co_consts[0]
    encoded = base64.b64encode(marshal.dumps(code)).decode()  # what Keras 2 stores; never loaded here
    layer = {"class_name": "Lambda", "config": {"name": "canary", "function": [encoded, None, None]}}
    return json.dumps({"class_name": "Sequential", "config": {"name": "seq", "layers": [layer]}})


def _hdf5(canaries: Path, userblock: int = 0) -> bytes:
    h5py = pytest.importorskip("h5py")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=userblock) as f:
        f.attrs["model_config"] = _lambda_config(canaries).encode()
    data = bytearray(buffer.getvalue())
    if userblock:
        stub = pickle.dumps({"benign": True}, protocol=2)
        data[: len(stub)] = stub  # any content may fill the user block
    return bytes(data)


def _tar(canaries: Path) -> tuple[bytes, Verdict]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        payload = _payload_pickle(canaries)
        info = tarfile.TarInfo("pickle")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue(), Verdict.FAIL


def _zip_after_stub(canaries: Path) -> tuple[bytes, Verdict]:
    data, verdict = _torch_zip(canaries)
    return b"#!/bin/sh\nexec python -c 'import zipimport'\n" + data, verdict


def _notebook_config(canaries: Path) -> tuple[bytes, Verdict]:
    return _lambda_config(canaries).encode(), Verdict.FAIL  # a Keras config.json on its own


def _onnx(canaries: Path) -> tuple[bytes, Verdict]:
    pytest.importorskip("onnx")
    model = onnx_one_node("PyOp", "ai.onnx.contrib")
    model.doc_string = base64.b64encode(_payload_pickle(canaries)).decode()
    return model.SerializeToString(), Verdict.FAIL


def _refused_archive(magic: bytes) -> CanaryBuilder:
    return lambda canaries: (magic + _payload_pickle(canaries), Verdict.INCOMPLETE)


CANARIES: dict[str, CanaryBuilder] = {
    "safetensors": _safetensors,
    "zip": _torch_zip,
    "pickle": lambda canaries: (_payload_pickle(canaries, 4), Verdict.FAIL),
    "npy": _npy,
    "compressed": _compressed(gzip.compress),
    "gguf": _gguf,
    "hdf5": lambda canaries: (_hdf5(canaries), Verdict.FAIL),
    "hdf5-userblock": lambda canaries: (_hdf5(canaries, userblock=512), Verdict.FAIL),
    "tar": _tar,
    "7z": _refused_archive(b"7z\xbc\xaf\x27\x1c\x00\x04"),
    "rar": _refused_archive(b"Rar!\x1a\x07\x01\x00"),
    "zip-directory": _zip_after_stub,
    "pickle-opcode": lambda canaries: (_payload_pickle(canaries, 0), Verdict.FAIL),
    "text": _notebook_config,
    "protobuf": _onnx,
}
"""One canary per registered plug-in (tests check that none is missing)."""

MORE_CANARIES: dict[str, CanaryBuilder] = {
    # The other kinds the compressed plug-in reads.
    "bzip2": _compressed(bz2.compress),
    "xz": _compressed(lzma.compress),
    "lzma": _compressed(lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE)),
    "zlib": _compressed(zlib.compress),
    "zfile": _zfile,
}


def _write_format_canaries(folder: Path, canaries: Path) -> dict[Path, Verdict]:
    written: dict[Path, Verdict] = {}
    for name, build in {**CANARIES, **MORE_CANARIES}.items():
        data, verdict = build(canaries)
        path = folder / f"canary-{name}.bin"  # the name says nothing: content decides
        path.write_bytes(data)
        written[path] = verdict
    return written


def test_every_registered_format_has_a_canary() -> None:
    registered = {plugin.name for plugin in PLUGINS}
    assert set(CANARIES) == registered, (
        f"formats without a canary: {sorted(registered - set(CANARIES))}; "
        f"canaries of no format: {sorted(set(CANARIES) - registered)}"
    )


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_each_canary_is_recognised_by_its_own_plug_in(name: str, tmp_path: Path) -> None:
    data, verdict = CANARIES[name](tmp_path)
    [plugin] = [p for p in PLUGINS if p.name == name]
    source = MemorySource(data, f"canary-{name}.bin")
    assert plugin.sniff(data[:512], len(data), source), f"the {name} plug-in does not recognise its canary"
    report = scan_bytes(data, f"canary-{name}.bin")
    assert report.verdict(Severity.HIGH) is verdict, report.findings
    assert list(tmp_path.iterdir()) == []


def _write_canary_files(folder: Path, canaries: Path) -> dict[Path, Verdict]:
    """Canary pickles in every protocol and in the containers that hold pickles in practice,
    and one canary per registered format."""
    folder.mkdir()
    canaries.mkdir()
    written: dict[Path, Verdict] = {}
    for name, payload in _canary_payloads(canaries).items():
        for protocol in (0, 2, 4, 5):
            path = folder / f"{name}_p{protocol}.pkl"
            path.write_bytes(pickle.dumps({"model": payload}, protocol=protocol))
            written[path] = Verdict.FAIL
        blob = pickle.dumps(payload, protocol=2)
        zipped = folder / f"{name}_torch_style.pt"
        with zipfile.ZipFile(zipped, "w") as archive:
            archive.writestr("archive/data.pkl", blob)
            archive.writestr("archive/version", "3\n")
        gz = folder / f"{name}.pkl.gz"
        gz.write_bytes(gzip.compress(blob))
        npy = folder / f"{name}.npy"
        buffer = io.BytesIO()
        np.save(buffer, np.array([payload, 1], dtype=object), allow_pickle=True)  # saving pickles; never loaded
        npy.write_bytes(buffer.getvalue())
        written.update(dict.fromkeys((zipped, gz, npy), Verdict.FAIL))
    written.update(_write_format_canaries(folder, canaries))
    return written


def _run_harness(tmp_path: Path, targets: list[Path], *, sabotage: bool = False) -> dict[str, Any]:
    script = tmp_path / "audit_harness.py"
    script.write_text(HARNESS, encoding="utf-8")
    result = tmp_path / "audit_result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    if sabotage:
        env["BASTION_TEST_SABOTAGE"] = "1"
    done = subprocess.run(
        [sys.executable, str(script), str(result), *map(str, targets)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert result.exists(), (
        f"the harness ended without its report: something it scanned took over\n{done.stdout[-2000:]}"
    )
    outcome: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return outcome


def _shared_corpus_folders() -> list[Path]:
    missing = [str(p) for p in CORPUS_FOLDERS if not p.is_dir()]
    if missing:
        message = f"shared corpus not found: {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return list(CORPUS_FOLDERS)


@pytest.mark.slow  # tens of seconds quiet, a minute or more on a loaded 2-core machine
def test_scanning_canary_pickles_runs_nothing(tmp_path: Path) -> None:
    canaries = tmp_path / "canaries"
    files = _write_canary_files(tmp_path / "models", canaries)
    outcome = _run_harness(tmp_path, list(files))
    assert outcome["violations"] == []
    assert list(canaries.iterdir()) == []
    # The guard is only meaningful if every canary was really analysed (and caught).
    assert outcome["verdicts"] == {str(path): verdict.value for path, verdict in files.items()}


@pytest.mark.slow  # tens of seconds quiet, a minute or more on a loaded 2-core machine
def test_scanning_the_shared_corpus_runs_nothing(tmp_path: Path) -> None:
    folders = _shared_corpus_folders()
    canaries = tmp_path / "canaries"
    files = _write_canary_files(tmp_path / "models", canaries)
    outcome = _run_harness(tmp_path, [*folders, *list(files)])
    assert outcome["violations"] == []
    assert list(canaries.iterdir()) == []
    scanned = {Path(p).resolve() for p in outcome["verdicts"]}
    corpus_files = {p.resolve() for folder in folders for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}
    assert corpus_files <= scanned
    assert len(corpus_files) > 100


def test_guard_catches_a_scanner_that_unpickles(tmp_path: Path) -> None:
    canaries = tmp_path / "canaries"
    files = _write_canary_files(tmp_path / "models", canaries)
    outcome = _run_harness(tmp_path, list(files), sabotage=True)
    events = {v["event"] for v in outcome["violations"]}
    assert "pickle.find_class" in events
    assert {"os.system", "exec", "open"} <= events
    assert {p.name for p in canaries.iterdir()} == {"open", "system", "exec"}
