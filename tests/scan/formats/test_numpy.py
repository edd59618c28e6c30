"""NumPy `.npy` and `.npz`: numeric data is skipped, object arrays are pickles and are emulated."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes
from corpus.payloads import SystemCall
from corpus.stock_loaders import loader_runs_payload, marker_payload
from corpus.streams import written_unseekably


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(builders.npy_numeric, id="npy-numeric"),
        pytest.param(builders.npy_object_benign, id="npy-object-array"),
        pytest.param(builders.npz_plain, id="npz"),
        pytest.param(builders.npz_compressed, id="npz-compressed"),
    ],
)
def test_benign_numpy_file_passes(build: Callable[[Path], Path], tmp_path: Path) -> None:
    assert_passes(scan_path(build(tmp_path)))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(builders.npy_object_malicious, id="npy-object-array"),
        pytest.param(builders.npz_malicious, id="npz-compressed-object-array"),
    ],
)
def test_object_array_with_a_payload_is_blocked(build: Callable[[Path], Path], tmp_path: Path) -> None:
    assert_fails_with(scan_path(build(tmp_path)), "pickle.dangerous-global")


def test_structured_array_with_an_object_field_is_emulated(tmp_path: Path) -> None:
    path = tmp_path / "records.npy"
    records = np.array([(1, SystemCall())], dtype=[("id", "i4"), ("hook", "O")])
    np.save(path, records, allow_pickle=True)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_structured_numeric_array_passes(tmp_path: Path) -> None:
    path = tmp_path / "records.npy"
    np.save(path, np.zeros(4, dtype=[("id", "i4"), ("score", "f8"), ("tag", "S3")]))
    assert_passes(scan_path(path))


def test_object_array_renamed_to_a_numeric_name_is_still_emulated(tmp_path: Path) -> None:
    path = builders.npy_object_malicious(tmp_path).rename(tmp_path / "embeddings.bin")
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


@pytest.mark.parametrize("start", [b"\x80\x04", b"PK\x03\x04"], ids=["pickle-magic", "zip-magic"])
def test_array_data_that_starts_like_a_file_is_data(start: bytes, tmp_path: Path) -> None:
    # Regression (benchmark seed 7, small_0353.pkl): numpy pickles array bytes as an
    # argument of _frombuffer; bytes given to anything but a loader are not a nested file.
    array = np.frombuffer(start + bytes(62), dtype=np.uint8).copy()
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps({"weights": array}, protocol=5))
    report = scan_path(path)
    assert report.verdict(Severity.HIGH) is Verdict.PASS, [f.rule_id for f in report.findings]


def _with_descr(source: Path, target: Path, descr: object) -> Path:
    """A copy of a version-1 .npy whose header spells its dtype as `descr` (same data)."""
    raw = source.read_bytes()
    length = int.from_bytes(raw[8:10], "little")
    header = eval(raw[10 : 10 + length].decode("latin-1"))  # the header np.save just wrote
    header["descr"] = descr
    text = repr(header)
    padded = text + " " * (length - len(text) - 1) + "\n"
    assert len(padded) == length, "the new spelling must fit in the old header"
    target.write_bytes(raw[:10] + padded.encode("latin-1") + raw[10 + length :])
    return target


OBJECT_SPELLINGS = [
    "object", "O", "|O", "<O", "=O", "O8", "O4", "object_", "|O8", "O,", "T",
    ("O", (1,)), [("hook", "O")], [("id", "<i4"), ("hook", "|O", (2,))], [("rec", [("inner", "object")])],
]  # fmt: skip


@pytest.mark.parametrize("descr", OBJECT_SPELLINGS, ids=repr)
def test_every_spelling_of_an_object_dtype_is_read_as_a_pickle(descr: object, tmp_path: Path) -> None:
    # np.load unpickles the data of any dtype with hasobject set, whatever its spelling.
    payload, _marker = marker_payload(tmp_path)
    source = tmp_path / "source.npy"
    np.save(source, np.array([payload], dtype=object), allow_pickle=True)
    path = _with_descr(source, tmp_path / "spelled.npy", descr)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_numpy_really_unpickles_a_descr_spelled_object(tmp_path: Path) -> None:
    payload, marker = marker_payload(tmp_path)
    source = tmp_path / "source.npy"
    np.save(source, np.array([payload], dtype=object), allow_pickle=True)
    path = _with_descr(source, tmp_path / "spelled.npy", "object")
    statement = f"import numpy; numpy.load({str(path)!r}, allow_pickle=True)"
    assert loader_runs_payload(statement, marker, tmp_path)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


@pytest.mark.parametrize(
    "dtype",
    [
        "float64",
        "<M8[ns]",
        "datetime64[s]",
        "(2,3)<f4",
        "U7",
        "S3",
        "?",
        [("a", "<i4", (2,)), ("b", "<f8")],
        "i4,(2,)f8",
    ],
    ids=repr,
)
def test_numeric_dtypes_in_any_spelling_are_data(dtype: object, tmp_path: Path) -> None:
    path = tmp_path / "numeric.npy"
    np.save(path, np.zeros(3, dtype=np.dtype(dtype)))
    assert_passes(scan_path(path))


def test_numeric_data_under_an_unusual_spelling_passes(tmp_path: Path) -> None:
    source = tmp_path / "source.npy"
    np.save(source, np.arange(6, dtype=np.float64))
    assert_passes(scan_path(_with_descr(source, tmp_path / "spelled.npy", "float64")))


def test_header_written_by_python_2_is_read(tmp_path: Path) -> None:
    # numpy filters the `3L` of Python 2 headers before evaluating them (version 1.0 files).
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (3L,), }"
    header = header + " " * (118 - len(header) - 1) + "\n"
    path = tmp_path / "py2.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(24))
    assert_passes(scan_path(path))


def test_object_array_in_a_deflated_npz_is_read_as_pickle_load_reads_it(tmp_path: Path) -> None:
    # The object data is a joblib-looking pickle: joblib would take the bytes after its
    # wrapper as array data, pickle.load (what np.load runs) takes them as opcodes.
    import pickletools  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    import joblib  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    body = pickletools.optimize(pickle.dumps(payload, protocol=4))
    ops = list(pickletools.genops(body))
    neutral = (
        b"".join(
            body[pos : (ops[i + 1][2] if i + 1 < len(ops) else len(body))]
            for i, (op, _arg, pos) in enumerate(ops)
            if op.name not in ("PROTO", "FRAME", "STOP", "MEMOIZE")
        )
        + b"0"
    )

    data = written_unseekably(lambda handle: joblib.dump([np.frombuffer(neutral, dtype=np.uint8).copy(), "x"], handle))
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (118 - len(header) - 1) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("hook.npy", npy)
    statement = f"import numpy; numpy.load({str(path)!r}, allow_pickle=True)['hook']"
    assert loader_runs_payload(statement, marker, tmp_path)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")
