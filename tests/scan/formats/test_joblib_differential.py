"""Differential test: Bastion reads joblib files as joblib's own unpickler does.

Hypothesis writes files with the real `joblib.dump` (arrays of many dtypes, shapes and
orders, object arrays, to a file or to a non-seekable stream, in every pickle protocol,
plain or compressed) and then moves opcodes into the frame of an array wrapper, after
its BUILD, where joblib's Python unpickler runs them before it reads the array from the
file. joblib then loads the file with a `find_class` that records every name and hands
back only numpy's and joblib's own classes, so nothing else can run; Bastion scans the
same bytes. Every name joblib resolved must be one Bastion's emulation saw: a name that
joblib imports and Bastion never saw is a reading Bastion got wrong.
"""

from __future__ import annotations

import io
import os
import pickletools
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bastion.scan.formats.pickle as pickle_format
from bastion.scan.api import scan_bytes
from bastion.scan.pickle.symbolic import Emulation
from corpus.streams import written_unseekably

joblib = pytest.importorskip("joblib")

DTYPES = ["<f8", "<f4", "<i8", "<i2", "|u1", "|b1", "<c16", "<U5", "|S3", "<M8[ns]", "O", "i4,f8", "(2,)<f4"]
# Names a stack-neutral snippet may import: harmless classes, recorded, never resolved.
SNIPPET_NAMES = [("collections", "OrderedDict"), ("fractions", "Fraction"), ("decimal", "Decimal")]


class _Inert:
    def __init__(self, *args: object, **kwargs: object) -> None:
        del args, kwargs


class _RecordingUnpickler(joblib.numpy_pickle.NumpyUnpickler):  # type: ignore[misc,name-defined]
    names: list[str]

    def find_class(self, module: str, name: str) -> Any:
        self.names.append(f"{module}.{name}")
        # What joblib.dump itself writes resolves for real (these streams are generated
        # here); the names a snippet injects get an inert stand-in.
        if module.split(".", maxsplit=1)[0] in ("numpy", "joblib", "_codecs", "copyreg", "builtins"):
            return super().find_class(module, name)
        return _Inert


def joblib_names(data: bytes) -> set[str]:
    """Names joblib's unpickler resolves loading `data` (compressed or not), in process, inertly."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap  # noqa: PLC0415

    names: list[str] = []
    with _validate_fileobject_and_memmap(io.BufferedReader(io.BytesIO(data)), "", None) as (fobj, _mode):  # type: ignore[arg-type]
        unpickler = _RecordingUnpickler("", fobj, ensure_native_byte_order=True)
        unpickler.names = names
        unpickler.load()
    return set(names)


@contextmanager
def bastion_names() -> Iterator[set[str]]:
    """Every global any emulated stream named, while scans run inside the block."""
    seen: set[str] = set()
    original = pickle_format.report_emulation

    def record(ctx: Any, emu: Emulation, loc: Any, fmt: str) -> None:
        seen.update(g.dotted for g in emu.globals)
        original(ctx, emu, loc, fmt)

    pickle_format.report_emulation = record  # type: ignore[assignment]
    try:
        yield seen
    finally:
        pickle_format.report_emulation = original


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    array = np.zeros(shape, dtype=dtype)
    if dtype.hasobject:
        flat = array.reshape(-1)
        for i in range(flat.size):
            flat[i] = draw(st.sampled_from([1, "text", (2, 3), None, 2.5]))
    if draw(st.booleans()) and array.ndim >= 2:
        array = np.asfortranarray(array)
    return array


def _dump(obj: object, protocol: int, stream: bool, compress: tuple[str, int] | None) -> bytes:
    if stream:
        return written_unseekably(lambda handle: joblib.dump(obj, handle, protocol=protocol))
    buffer = io.BytesIO()
    if compress is not None:
        joblib.dump(obj, buffer, compress=compress, protocol=protocol)
    else:
        joblib.dump(obj, buffer, protocol=protocol)
    return buffer.getvalue()


def _snippet(module: str, name: str) -> bytes:
    # GLOBAL module name; EMPTY_TUPLE; REDUCE; POP: imports and calls, leaves the stack as it was.
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n)R0"


def _inject_after_wrappers(data: bytes, snippet: bytes, every: bool) -> bytes:
    """Put `snippet` after wrapper BUILDs that close a frame, inside that frame."""
    out = b""
    cursor = 0
    frame_at = frame_end = -1
    stream = io.BytesIO(data)
    try:
        for op, arg, pos in pickletools.genops(stream):
            if op.name == "FRAME":
                frame_at, frame_end = pos, pos + 9 + int(arg)
            if op.name == "BUILD" and pos + 1 == frame_end:
                out += data[cursor:frame_at] + b"\x95" + struct.pack("<Q", frame_end - frame_at - 9 + len(snippet))
                out += data[frame_at + 9 : frame_end] + snippet
                cursor = frame_end
                if not every:
                    break
    except ValueError:
        pass  # genops cannot walk past the raw array bytes: the first wrappers are enough
    return out + data[cursor:]


@settings(max_examples=int(os.environ.get("BASTION_FUZZ_EXAMPLES", "60")))
@given(
    parts=st.lists(arrays(), min_size=1, max_size=3),
    protocol=st.integers(2, 5),
    stream=st.booleans(),
    compress=st.sampled_from([None, ("zlib", 3), ("gzip", 1), ("lzma", 1), ("bz2", 1)]),
    injected=st.one_of(st.none(), st.sampled_from(SNIPPET_NAMES)),
)
def test_bastion_sees_every_name_joblib_resolves(
    parts: list[np.ndarray],
    protocol: int,
    stream: bool,
    compress: tuple[str, int] | None,
    injected: tuple[str, str] | None,
) -> None:
    data = _dump({"arrays": parts, "n": len(parts)}, protocol, stream, None)
    if injected is not None:
        data = _inject_after_wrappers(data, _snippet(*injected), every=True)
    if compress is not None:
        data = _recompressed(data, compress)
    expected = joblib_names(data)
    with bastion_names() as seen:
        report = scan_bytes(data, "model.joblib")
    assert expected <= seen, f"joblib resolved {sorted(expected - seen)} that Bastion never saw: {report.findings}"
    assert not [f for f in report.findings if f.rule_id == "scan.incomplete"], report.findings


def _recompressed(data: bytes, compress: tuple[str, int]) -> bytes:
    """The same bytes in joblib's compressed container, written by joblib's own compressor."""
    from joblib.compressor import _COMPRESSORS  # noqa: PLC0415

    buffer = io.BytesIO()
    with _COMPRESSORS[compress[0]].compressor_file(buffer, compresslevel=compress[1]) as handle:
        handle.write(data)
    return buffer.getvalue()


def test_injected_names_are_really_resolved_by_joblib(tmp_path: Path) -> None:
    # The property is only meaningful if the snippets run under joblib: check one does.
    data = _dump({"a": np.arange(5.0), "b": np.ones(2)}, 4, False, None)
    injected = _inject_after_wrappers(data, _snippet("fractions", "Fraction"), every=True)
    assert "fractions.Fraction" in joblib_names(injected)
    assert "fractions.Fraction" not in joblib_names(data)
    del tmp_path


_SEEDS: list[bytes] = []


def _seeds() -> list[bytes]:
    if not _SEEDS:
        objects = [
            {"coef": np.arange(12.0).reshape(3, 4), "labels": np.array(["a", 1], dtype=object)},
            [np.zeros(3, dtype="i4,f8"), np.ones((2, 2), order="F")],
        ]
        for obj in objects:
            for protocol in (2, 4, 5):
                _SEEDS.append(_dump(obj, protocol, False, None))
                _SEEDS.append(_dump(obj, protocol, True, None))
    return _SEEDS


@settings(max_examples=int(os.environ.get("BASTION_FUZZ_EXAMPLES", "200")))
@given(
    seed=st.integers(0, 11),
    edits=st.lists(
        st.tuples(st.integers(0, 1 << 16), st.integers(0, 255), st.sampled_from("flip insert delete")), max_size=4
    ),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
)
def test_mutated_joblib_files_end_in_findings_never_in_a_crash(
    seed: int, edits: list[tuple[int, int, str]], cut: int | None
) -> None:
    data = bytearray(_seeds()[seed])
    for offset, value, how in edits:
        at = offset % (len(data) + 1)
        if how == "flip" and at < len(data):
            data[at] = value
        elif how == "insert":
            data[at:at] = bytes([value])
        elif at < len(data):
            del data[at]
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    report = scan_bytes(bytes(data), "model.joblib")
    internal = [f for f in report.findings if "internal error" in f.message]
    assert not internal, internal
