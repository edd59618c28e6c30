"""scikit-learn estimators saved with joblib and pickle, and joblib's compressed dumps."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes

pytest.importorskip("sklearn")

MODEL_NAMES = list(builders.SKLEARN_MODEL_NAMES)


@pytest.fixture(scope="session")
def sklearn_models() -> dict[str, object]:
    models = builders.sklearn_models()
    assert set(models) == set(builders.SKLEARN_MODEL_NAMES)
    return models


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_estimator_saved_with_joblib_passes(name: str, sklearn_models: dict[str, object], tmp_path: Path) -> None:
    assert_passes(scan_path(builders.joblib_dump(tmp_path, sklearn_models[name], f"{name}.joblib")))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_estimator_saved_with_pickle_passes(name: str, sklearn_models: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(pickle.dumps(sklearn_models[name], protocol=pickle.HIGHEST_PROTOCOL))
    assert_passes(scan_path(path))


@pytest.mark.parametrize("compress", builders.JOBLIB_COMPRESSIONS)
def test_compressed_joblib_dump_of_a_forest_passes(compress: str, sklearn_models: dict[str, object], tmp_path: Path) -> None:
    path = builders.joblib_dump(tmp_path, sklearn_models["random-forest"], f"forest-{compress}.joblib", compress)
    report = scan_path(path)
    assert_passes(report)
    assert "pickle" in report.files[0].formats


def test_plain_joblib_dump_with_a_payload_is_blocked(tmp_path: Path) -> None:
    assert_fails_with(scan_path(builders.joblib_malicious(tmp_path)), "pickle.dangerous-global")


@pytest.mark.parametrize("compress", builders.JOBLIB_COMPRESSIONS)
def test_compressed_joblib_dump_with_a_payload_is_blocked(compress: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(builders.joblib_malicious(tmp_path, compress)), "pickle.dangerous-global")


def test_payload_hidden_after_joblib_inline_array_is_blocked(tmp_path: Path) -> None:
    # joblib writes array bytes inside the pickle stream; the payload comes after them.
    import numpy as np  # noqa: PLC0415

    from corpus.payloads import SystemCall  # noqa: PLC0415

    path = builders.joblib_dump(tmp_path, [np.arange(1000, dtype=np.float64), SystemCall()], "after-array.joblib")
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


# -- reading the file the way joblib.load reads it ------------------------------------------

import io  # noqa: E402
import lzma  # noqa: E402
import pickletools  # noqa: E402
import struct  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402

from corpus.expect import assert_incomplete_with, describe  # noqa: E402
from corpus.payloads import SystemCall  # noqa: E402
from corpus.stock_loaders import loader_runs_payload, marker_payload  # noqa: E402
from corpus.streams import written_unseekably  # noqa: E402


def _dump_to_stream(obj: object) -> bytes:
    import joblib  # noqa: PLC0415

    return written_unseekably(lambda handle: joblib.dump(obj, handle))


def _joblib_load_statement(path: Path) -> str:
    return f"import joblib; joblib.load({str(path)!r})"


def test_dump_to_a_non_seekable_stream_passes(tmp_path: Path) -> None:
    # joblib writes numpy_array_alignment_bytes=None and no padding byte (issue 11's false alarm).
    path = tmp_path / "streamed.joblib"
    path.write_bytes(_dump_to_stream({"coef": np.arange(10.0), "layers": [np.ones((3, 2)), np.zeros(5, np.int8)]}))
    report = scan_path(path)
    assert_passes(report)
    assert "joblib" in report.files[0].formats


def test_dump_into_a_zip_member_passes(tmp_path: Path) -> None:
    import joblib  # noqa: PLC0415

    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as archive, archive.open("model.joblib", "w") as handle:
        joblib.dump({"coef": np.arange(10.0)}, handle)
    assert_passes(scan_path(path))


def test_payload_after_an_unpadded_array_is_blocked(tmp_path: Path) -> None:
    payload, marker = marker_payload(tmp_path)
    path = tmp_path / "streamed.joblib"
    path.write_bytes(_dump_to_stream([np.arange(7, dtype=np.int16), payload]))
    assert loader_runs_payload(_joblib_load_statement(path), marker, tmp_path)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def _stack_neutral(obj: object) -> bytes:
    """Opcodes that build `obj` and pop it: no PROTO, FRAME, memo or STOP."""
    body = pickletools.optimize(pickle.dumps(obj, protocol=4))
    ops = [(op.code, arg, pos) for op, arg, pos in pickletools.genops(body)]
    out = b""
    for (code, _arg, pos), (_c, _a, nxt) in zip(ops, [*ops[1:], ("", None, len(body))], strict=True):
        if code not in ("\x80", "\x95", ".", "\x94"):
            out += body[pos:nxt]
    return out + b"0"  # POP


def _with_opcodes_after_the_wrapper(data: bytes, extra: bytes) -> bytes:
    """Insert `extra` after the wrapper's BUILD, inside the same FRAME (whose length grows)."""
    frame_at = frame_end = -1
    for op, arg, pos in pickletools.genops(io.BytesIO(data)):
        if op.name == "FRAME":
            frame_at, frame_end = pos, pos + 9 + int(arg)
        if op.name == "BUILD" and pos + 1 == frame_end:
            header = data[frame_at : frame_at + 1] + struct.pack("<Q", frame_end - frame_at - 9 + len(extra))
            return data[:frame_at] + header + data[frame_at + 9 : frame_end] + extra + data[frame_end:]
    raise AssertionError("no wrapper BUILD closes a frame")


def test_opcodes_after_the_wrapper_in_its_frame_run_before_the_array(tmp_path: Path) -> None:
    # joblib's Python unpickler buffers the frame: the array comes from the file after the
    # frame, and the opcodes left in the frame run next. A linear reader skips them as data.
    import joblib  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    source = tmp_path / "source.joblib"
    joblib.dump({"coef": np.arange(32.0)}, source)
    path = tmp_path / "framed.joblib"
    path.write_bytes(_with_opcodes_after_the_wrapper(source.read_bytes(), _stack_neutral(payload)))
    assert loader_runs_payload(_joblib_load_statement(path), marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")


def test_benign_opcodes_after_the_wrapper_in_its_frame_pass(tmp_path: Path) -> None:
    import joblib  # noqa: PLC0415

    source = tmp_path / "source.joblib"
    joblib.dump({"coef": np.arange(32.0), "bias": np.ones(3)}, source)
    path = tmp_path / "framed.joblib"
    path.write_bytes(_with_opcodes_after_the_wrapper(source.read_bytes(), b"N0K\x070"))
    assert_passes(scan_path(path))


@pytest.mark.parametrize("dict_size", [3 << 20, 6 << 20, (1 << 20) + 256, 1536 * 1024], ids=hex)
def test_lzma_with_a_dictionary_that_is_not_a_power_of_two_is_opened(dict_size: int, tmp_path: Path) -> None:
    import joblib  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    plain = tmp_path / "plain.joblib"
    joblib.dump({"coef": np.arange(8.0), "hook": payload}, plain)
    path = tmp_path / "model.joblib"
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": dict_size}]
    path.write_bytes(lzma.compress(plain.read_bytes(), format=lzma.FORMAT_ALONE, filters=filters))
    assert path.read_bytes()[:2] == b"\x5d\x00"
    assert loader_runs_payload(_joblib_load_statement(path), marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "lzma" in report.files[0].formats


@pytest.mark.parametrize("name", ["model.model", "model.dat", "model.z", "model", "weights.tar"])
def test_joblib_files_are_recognised_by_content_whatever_their_name(name: str, tmp_path: Path) -> None:
    import joblib  # noqa: PLC0415

    benign = tmp_path / "benign" / name
    benign.parent.mkdir()
    joblib.dump({"coef": np.arange(8.0)}, benign, compress=("zlib", 3) if name.endswith(".z") else 0)
    assert_passes(scan_path(benign))
    path = tmp_path / name
    joblib.dump({"coef": np.arange(8.0), "hook": SystemCall()}, path, compress=("zlib", 3) if name.endswith(".z") else 0)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


# -- joblib < 0.10: the ZF container and sidecar files --------------------------------------


def _zfile(path: Path, data: bytes) -> Path:
    from joblib.numpy_pickle_compat import write_zfile  # noqa: PLC0415

    with path.open("wb") as handle:
        write_zfile(handle, data)
    return path


@pytest.mark.parametrize("name", ["old_model.pkl", "old_model.z", "old_model"])
def test_zf_container_is_opened_and_its_pickle_emulated(name: str, tmp_path: Path) -> None:
    payload, marker = marker_payload(tmp_path)
    path = _zfile(tmp_path / name, pickle.dumps({"coef": [1.0, 2.0], "hook": payload}, protocol=2))
    assert loader_runs_payload(_joblib_load_statement(path), marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "zfile" in report.files[0].formats


def test_benign_zf_container_passes(tmp_path: Path) -> None:
    assert_passes(scan_path(_zfile(tmp_path / "old_model", pickle.dumps({"coef": [1.0, 2.0]}, protocol=2))))


def _old_wrapper_pickle(filename: str, module: str = "joblib.numpy_pickle") -> bytes:
    """A pickle as joblib <= 0.9 wrote it: an NDArrayWrapper naming the sidecar `filename`."""
    from joblib.numpy_pickle_compat import NDArrayWrapper  # noqa: PLC0415

    data = pickle.dumps({"coef": NDArrayWrapper(filename, np.ndarray)}, protocol=2)
    return data.replace(b"cjoblib.numpy_pickle_compat\nNDArrayWrapper\n", f"c{module}\nNDArrayWrapper\n".encode())


def test_sidecar_named_by_an_old_wrapper_is_judged_with_its_pickle(tmp_path: Path) -> None:
    payload, marker = marker_payload(tmp_path)
    np.save(tmp_path / "model.pkl_01.npy", np.array([payload], dtype=object), allow_pickle=True)
    path = tmp_path / "model.pkl"
    path.write_bytes(_old_wrapper_pickle("model.pkl_01.npy"))
    assert loader_runs_payload(_joblib_load_statement(path), marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    [finding] = [f for f in report.findings if f.rule_id == "pickle.dangerous-global"]
    assert finding.location.members == ("<sidecar model.pkl_01.npy>",), describe(report.findings)


def test_sidecar_of_a_zf_container_is_followed(tmp_path: Path) -> None:
    np.save(tmp_path / "model.pkl_01.npy", np.array([SystemCall()], dtype=object), allow_pickle=True)
    path = _zfile(tmp_path / "model.pkl", _old_wrapper_pickle("model.pkl_01.npy"))
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_numeric_sidecar_passes(tmp_path: Path) -> None:
    np.save(tmp_path / "model.pkl_01.npy", np.arange(12.0))
    path = tmp_path / "model.pkl"
    path.write_bytes(_old_wrapper_pickle("model.pkl_01.npy"))
    report = scan_path(path)
    assert_passes(report)
    assert "joblib-sidecar" in report.files[0].formats


def test_missing_sidecar_is_not_analysed_never_clean(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(_old_wrapper_pickle("model.pkl_01.npy"))
    assert_incomplete_with(scan_path(path), "scan.incomplete")


def test_sidecar_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    np.save(tmp_path / "elsewhere.npy", np.arange(3.0))
    path = folder / "model.pkl"
    path.write_bytes(_old_wrapper_pickle("../elsewhere.npy"))
    assert_fails_with(scan_path(path), "joblib.sidecar-escape")


def test_scanning_the_folder_judges_the_pickle_with_its_sidecar(tmp_path: Path) -> None:
    np.save(tmp_path / "model.pkl_01.npy", np.array([SystemCall()], dtype=object), allow_pickle=True)
    (tmp_path / "model.pkl").write_bytes(_old_wrapper_pickle("model.pkl_01.npy"))
    report = scan_path(tmp_path)
    pickle_report = next(f for f in report.files if f.path.endswith("model.pkl"))
    assert "pickle.dangerous-global" in {f.rule_id for f in pickle_report.findings}, describe(pickle_report.findings)


def _znd_pickle(filename: str) -> bytes:
    """A ZF-era pickle whose array data lies in the `.z` sidecar `filename`."""
    from joblib.numpy_pickle_compat import ZNDArrayWrapper  # noqa: PLC0415

    wrapper = ZNDArrayWrapper(filename, (np.ndarray, (0,), "b"), (1, (3,), np.dtype("f8"), False))
    data = pickle.dumps({"coef": wrapper}, protocol=2)
    return data.replace(b"cjoblib.numpy_pickle_compat\nZNDArrayWrapper\n", b"cjoblib.numpy_pickle\nZNDArrayWrapper\n")


def test_zf_container_with_its_z_sidecar_passes_and_without_it_is_not_analysed(tmp_path: Path) -> None:
    path = _zfile(tmp_path / "model.pkl", _znd_pickle("model.pkl_01.npy.z"))
    assert_incomplete_with(scan_path(path), "scan.incomplete")
    _zfile(tmp_path / "model.pkl_01.npy.z", np.arange(3.0).tobytes())
    assert_passes(scan_path(path))


def test_dump_into_a_gzip_file_object_passes(tmp_path: Path) -> None:
    import gzip  # noqa: PLC0415

    import joblib  # noqa: PLC0415

    path = tmp_path / "model.joblib.gz"
    with gzip.GzipFile(path, "wb") as handle:
        joblib.dump({"coef": np.arange(10.0), "labels": np.array(["a", "b"], dtype=object)}, handle)
    assert_passes(scan_path(path))


def test_array_bytes_that_pickle_load_runs_as_opcodes_are_blocked(tmp_path: Path) -> None:
    # joblib reads the array as data; pickle.load, handed the same file, reads those bytes
    # as opcodes and runs them. Both loaders are judged.
    payload, marker = marker_payload(tmp_path)
    opcodes = np.frombuffer(_stack_neutral(payload), dtype=np.uint8).copy()
    path = tmp_path / "model.pkl"
    path.write_bytes(_dump_to_stream({"weights": opcodes, "note": "fine"}))
    assert not loader_runs_payload(_joblib_load_statement(path), marker, tmp_path)
    assert loader_runs_payload(f"import pickle; pickle.load(open({str(path)!r}, 'rb'))", marker, tmp_path)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_wrappers_of_the_joblib_scikit_learn_vendored_are_read_alike(tmp_path: Path) -> None:
    # Models saved with sklearn.externals.joblib (scikit-learn < 0.23) name its wrapper.
    import joblib  # noqa: PLC0415

    def vendored(obj: object, name: str) -> Path:
        source = tmp_path / f"{name}.source"
        joblib.dump(obj, source, protocol=2)
        path = tmp_path / name
        path.write_bytes(source.read_bytes().replace(b"cjoblib.numpy_pickle\n", b"csklearn.externals.joblib.numpy_pickle\n"))
        assert b"sklearn.externals.joblib" in path.read_bytes()
        return path

    assert_passes(scan_path(vendored({"coef": np.arange(64, dtype=np.uint8), "n": 3}, "benign.pkl")))
    assert_fails_with(scan_path(vendored([np.arange(64, dtype=np.uint8), SystemCall()], "bad.pkl")), "pickle.dangerous-global")


def test_gzipped_file_is_judged_under_pickle_load_of_gzip_open_too(tmp_path: Path) -> None:
    import gzip  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    opcodes = np.frombuffer(_stack_neutral(payload), dtype=np.uint8).copy()
    path = tmp_path / "model.pkl.gz"
    path.write_bytes(gzip.compress(_dump_to_stream({"weights": opcodes})))
    statement = f"import gzip, pickle; pickle.load(gzip.open({str(path)!r}))"
    assert loader_runs_payload(statement, marker, tmp_path)
    assert not loader_runs_payload(_joblib_load_statement(path), marker, tmp_path)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")
