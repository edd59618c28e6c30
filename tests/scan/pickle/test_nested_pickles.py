"""Bytes an allowed sink unpickles are scanned, or reported when they cannot be (issue 11, class 3).

`torch.storage._load_from_bytes(b)` runs `torch.load(io.BytesIO(b), weights_only=False)`.
CPython's pickler writes bytes under protocols 0-2 as `_codecs.encode(<latin-1 text>, "latin1")`,
so those pure conversions are evaluated statically and the result scanned; anything else in
that position is a nested pickle that cannot be analysed, a HIGH finding and never a pass.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from bastion.findings import Severity
from bastion.scan.api import scan_bytes
from bastion.scan.limits import MiB
from corpus.expect import assert_fails_with, assert_passes, describe
from corpus.payloads import SystemCall
from corpus.spec_streams import call, g, i, load_in_subprocess, lst, raw_bytes, s, stream, touch_marker

SINK = g("torch.storage", "_load_from_bytes")
ENCODE = g("_codecs", "encode")
MALICIOUS = pickle.dumps(SystemCall(), protocol=2)


def _latin1(data: bytes) -> str:
    return data.decode("latin-1")


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_a_storage_pickled_by_torch_passes_and_its_bytes_are_scanned(protocol: int) -> None:
    data = pickle.dumps({"w": torch.arange(4, dtype=torch.float32).untyped_storage()}, protocol=protocol)
    assert b"_load_from_bytes" in data
    report = scan_bytes(data, "storage.pkl")
    assert_passes(report)
    assert "torch-legacy" in report.formats, report.formats  # the nested torch.save was read


@pytest.mark.parametrize(
    "build",
    [
        lambda: raw_bytes(MALICIOUS),
        lambda: call(ENCODE, s(_latin1(MALICIOUS)), s("latin1")),
        lambda: call(ENCODE, s(_latin1(MALICIOUS)), s("latin-1")),
        lambda: call(g("builtins", "bytes"), call(ENCODE, s(_latin1(MALICIOUS)), s("latin1"))),
        lambda: call(g("builtins", "bytes"), lst(*(i(b) for b in MALICIOUS))),
        lambda: call(g("builtins", "bytes"), s(_latin1(MALICIOUS)), s("latin1")),
    ],
    ids=["literal", "codecs-latin1", "codecs-latin-1", "bytes-of-encode", "bytes-of-ints", "bytes-str"],
)
def test_a_malicious_nested_pickle_is_found_however_its_bytes_are_written(build: object) -> None:
    report = scan_bytes(stream(call(SINK, build())), "nested.pkl")  # type: ignore[operator]
    assert_fails_with(report, "pickle.dangerous-global")
    assert any("embedded" in str(f.location) for f in report.findings if f.rule_id == "pickle.dangerous-global")


@pytest.mark.parametrize(
    "argument",
    [
        call(g("mymod", "make_bytes")),
        call(ENCODE, s("x"), s("rot13")),
        call(ENCODE, call(g("builtins", "str"), s("x")), s("latin1")),
        call(g("builtins", "bytes"), call(g("mymod", "make_bytes"))),
        i(12345),
        raw_bytes(b"\x80" * (MiB + 1)),
        call(g("builtins", "bytearray"), raw_bytes(b"\x80\x02N.")),
        call(g("builtins", "bytes"), call(g("builtins", "bytearray"), raw_bytes(b"\x80\x02N."))),
    ],
    ids=[
        "result-of-a-call",
        "unknown-codec",
        "computed-text",
        "bytes-of-a-result",
        "not-bytes",
        "over-the-limit",
        "bytearray",
        "bytes-of-a-bytearray",
    ],
)
def test_bytes_that_cannot_be_analysed_are_a_high_finding(argument: bytes) -> None:
    report = scan_bytes(stream(call(SINK, argument)), "opaque.pkl")
    assert_fails_with(report, "pickle.nested-unanalysable")
    assert max(f.severity for f in report.findings) >= Severity.HIGH, describe(report.findings)


def test_a_computed_nested_pickle_really_runs_under_the_stock_loader(tmp_path: Path) -> None:
    marker = tmp_path / "nested-ran"
    inner = stream(touch_marker(marker))
    data = stream(call(SINK, call(ENCODE, s(_latin1(inner)), s("latin1"))))
    report = scan_bytes(data, "nested.pkl")
    assert_fails_with(report, "pickle.attribute-path")
    # torch.load reads the legacy magic number with pickle: that first load runs the payload.
    done = load_in_subprocess(data, tmp_path)
    assert marker.exists(), done.stderr


def test_a_torch_save_inside_a_torch_save_is_scanned_too() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
    inner_ok = buf.getvalue()
    assert_passes(scan_bytes(stream(call(SINK, raw_bytes(inner_ok))), "ok.pkl"))


def test_a_bytearray_grown_by_appends_really_unpickles_what_was_appended(tmp_path: Path) -> None:
    # bytearray(b"") then APPENDS of ints: the unpickler calls bytearray.extend, so the sink
    # reads bytes the stream never spells out. Only immutable bytes are evaluated.
    marker = tmp_path / "appended-ran"
    inner = stream(touch_marker(marker))
    grown = call(g("builtins", "bytearray"), raw_bytes(b"")) + b"(" + b"".join(i(b) for b in inner) + b"e"
    data = stream(SINK + b"(" + grown + b"tR")
    assert_fails_with(scan_bytes(data, "grown.pkl"), "pickle.nested-unanalysable")
    load_in_subprocess(data, tmp_path)
    assert marker.exists()
