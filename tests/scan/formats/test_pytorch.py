"""PyTorch checkpoints: zip and legacy `torch.save`, TorchScript, and tampered archives."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders, pickles, zips
from corpus.expect import assert_fails_with, assert_passes, describe, rules

pytest.importorskip("torch")

BENIGN: list[object] = [
    pytest.param(builders.torch_state_dict, id="state-dict"),
    pytest.param(builders.torch_full_sequential, id="full-sequential"),
    pytest.param(builders.torch_full_module_subclass, id="full-module-subclass"),
    pytest.param(builders.torch_training_checkpoint, id="training-checkpoint-with-optimizer"),
    pytest.param(builders.torch_legacy, id="legacy-serialization"),
    pytest.param(builders.torchscript_scripted, id="torchscript-scripted"),
    pytest.param(builders.torchscript_traced, id="torchscript-traced"),
    pytest.param(builders.torch_tensor_plain_pickle, id="tensor-in-plain-pickle"),
]


@pytest.mark.parametrize("build", BENIGN)
def test_benign_torch_file_passes(build: Callable[[Path], Path], tmp_path: Path) -> None:
    assert_passes(scan_path(build(tmp_path)))


def test_full_model_of_a_user_class_names_the_class_without_blocking(tmp_path: Path) -> None:
    report = scan_path(builders.torch_full_module_subclass(tmp_path))
    assert_passes(report)
    evidence = {f.evidence for f in report.findings if f.rule_id == "pickle.unknown-class"}
    assert "corpus.torch_models.TinyNet" in evidence, describe(report.findings)


def test_torch_zip_with_os_system_is_blocked(tmp_path: Path) -> None:
    report = scan_path(builders.torch_malicious(tmp_path))
    assert_fails_with(report, "pickle.dangerous-global")
    [finding] = [f for f in report.findings if f.rule_id == "pickle.dangerous-global"]
    assert finding.location.member == "malicious/data.pkl"


def test_legacy_torch_file_with_os_system_is_blocked(tmp_path: Path) -> None:
    assert_fails_with(scan_path(builders.torch_legacy_malicious(tmp_path)), "pickle.dangerous-global")


@pytest.mark.parametrize("name", ["model.safetensors", "weights.bin", "checkpoint"])
def test_malicious_torch_zip_is_found_by_content_whatever_its_name(name: str, tmp_path: Path) -> None:
    path = builders.torch_malicious(tmp_path, name=name)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_hand_assembled_data_pkl_in_a_real_torch_zip_is_blocked(tmp_path: Path) -> None:
    source = builders.torch_state_dict(tmp_path, "model.pt").read_bytes()
    path = tmp_path / "swapped.pt"
    path.write_bytes(zips.with_member_replaced(source, "data.pkl", pickles.STACK_GLOBAL_VIA_MEMO))
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_torch_zip_with_a_wrong_crc_is_still_scanned(tmp_path: Path) -> None:
    path = tmp_path / "bad_crc.pt"
    path.write_bytes(zips.with_bad_crc(builders.torch_malicious(tmp_path).read_bytes(), "data.pkl"))
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "archive.bad-crc" in rules(report)


def test_torch_zip_whose_local_name_differs_from_the_directory_is_still_scanned(tmp_path: Path) -> None:
    path = tmp_path / "renamed.pt"
    path.write_bytes(zips.with_local_name(builders.torch_malicious(tmp_path).read_bytes(), "data.pkl", "data.pkX"))
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "archive.name-mismatch" in rules(report)


def test_torch_zip_with_megabytes_of_padding_before_data_pkl_is_still_scanned(tmp_path: Path) -> None:
    path = tmp_path / "padded.pt"
    padded = zips.with_stored_member_first(
        builders.torch_malicious(tmp_path).read_bytes(), "malicious/.pad", bytes(3 << 20)
    )
    path.write_bytes(padded)
    assert path.stat().st_size > 3 << 20
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_benign_torch_zip_with_padding_member_first_passes(tmp_path: Path) -> None:
    path = tmp_path / "padded.pt"
    path.write_bytes(
        zips.with_stored_member_first(builders.torch_state_dict(tmp_path).read_bytes(), "model/.pad", bytes(3 << 20))
    )
    assert_passes(scan_path(path))


@pytest.mark.slow
def test_large_state_dict_passes_without_its_tensors_being_read(tmp_path: Path) -> None:
    # The tensors are never unpickled nor scanned; the scan costs the pickle and the zip directory.
    path = builders.torch_large_state_dict(tmp_path, megabytes=200)
    try:
        assert path.stat().st_size > 200_000_000
        assert_passes(scan_path(path))
    finally:
        path.unlink()


# -- the archive folder is whatever the first entry says (PyTorchStreamReader::init) -----------


def _refoldered(source: Path, target: Path, folder: str) -> Path:
    """The same torch.save zip with every record moved under `folder/` (order kept)."""
    import zipfile  # noqa: PLC0415

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            zout.writestr(folder + "/" + name.split("/", 1)[1], zin.read(name))
    return target


FOLDERS = [".data", "data", "version", "Model.PT", "archive"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_torch_zip_with_any_folder_name_is_read_where_torch_reads_it(folder: str, tmp_path: Path) -> None:
    import torch  # noqa: PLC0415

    from corpus.stock_loaders import marker_payload  # noqa: PLC0415

    payload, _marker = marker_payload(tmp_path)
    source = tmp_path / "source.pt"
    torch.save({"weights": torch.ones(3), "hook": payload}, source)
    report = scan_path(_refoldered(source, tmp_path / "refoldered.pt", folder))
    assert_fails_with(report, "pickle.dangerous-global")
    [finding] = [f for f in report.findings if f.rule_id == "pickle.dangerous-global"]
    assert finding.location.member == f"{folder}/data.pkl"


def test_torch_really_loads_a_zip_whose_folder_is_dot_data(tmp_path: Path) -> None:
    import torch  # noqa: PLC0415

    from corpus.stock_loaders import loader_runs_payload, marker_payload  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    source = tmp_path / "source.pt"
    torch.save({"weights": torch.ones(3), "hook": payload}, source)
    path = _refoldered(source, tmp_path / "dotdata.pt", ".data")
    statement = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    assert loader_runs_payload(statement, marker, tmp_path)


@pytest.mark.parametrize("folder", FOLDERS)
def test_benign_torch_zip_with_any_folder_name_passes(folder: str, tmp_path: Path) -> None:
    source = builders.torch_state_dict(tmp_path, "source.pt")
    assert_passes(scan_path(_refoldered(source, tmp_path / "refoldered.pt", folder)))


# -- the oldest torch.save format: a tar of sys_info, pickle, storages, tensors -------------


def _v7_tar(records: dict[str, bytes]) -> bytes:
    """A tar whose headers have no `ustar` magic (V7), which tarfile and torch.load accept."""
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in records.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        offsets = [m.offset for m in archive.getmembers()]
    raw = bytearray(buffer.getvalue())
    for at in offsets:
        block = raw[at : at + 512]
        block[257:512] = bytes(255)  # no magic, version, owner names or prefix: a V7 header
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
        raw[at : at + 512] = block
    return bytes(raw)


def _legacy_tar(folder: Path, storages: bytes, obj: object, name: str) -> Path:
    import pickle  # noqa: PLC0415

    path = folder / name
    path.write_bytes(
        _v7_tar(
            {
                "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
                "pickle": pickle.dumps(obj, protocol=2),
                "storages": storages,
                "tensors": pickle.dumps(0, protocol=2),
            }
        )
    )
    return path


def _storages(*records: object) -> bytes:
    """The `storages` record: a count, then per storage a pickle and its raw elements, then views."""
    import pickle  # noqa: PLC0415
    import struct  # noqa: PLC0415

    import torch  # noqa: PLC0415

    out = pickle.dumps(len(records), protocol=2)
    for index, record in enumerate(records):
        if record is None:
            out += pickle.dumps((str(index), "cpu", torch.FloatStorage), protocol=2) + struct.pack("<q", 3) + bytes(12)
        else:
            out += pickle.dumps(record, protocol=2)
    return out + pickle.dumps([], protocol=2)


def test_legacy_tar_checkpoint_without_ustar_magic_is_found_by_content(tmp_path: Path) -> None:
    from corpus.stock_loaders import loader_runs_payload, marker_payload  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    path = _legacy_tar(tmp_path, _storages(), {"hook": payload}, "old.model")
    statement = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    assert loader_runs_payload(statement, marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "tar" in report.files[0].formats


def test_payload_in_a_storage_record_after_raw_data_is_blocked(tmp_path: Path) -> None:
    # torch.load unpickles each storage record with plain pickle.load, after the previous
    # storage's raw bytes: a linear reader stops at those bytes and never sees the payload.
    from corpus.stock_loaders import loader_runs_payload, marker_payload  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    path = _legacy_tar(tmp_path, _storages(None, payload), {"weights": 1}, "old.pt")
    statement = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    assert loader_runs_payload(statement, marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    [finding] = [f for f in report.findings if f.rule_id == "pickle.dangerous-global"]
    assert finding.location.member == "storages"


def test_benign_legacy_tar_checkpoint_passes(tmp_path: Path) -> None:
    assert_passes(scan_path(_legacy_tar(tmp_path, _storages(None, None), {"weights": [1.0, 2.0]}, "old.pt")))


def _tar_pickle_polyglot(records: dict[str, bytes]) -> bytes:
    """A file that pickle.load reads as a harmless pickle and torch.load as a legacy tar.

    The first member's name starts with PROTO and BINBYTES, whose length swallows the
    whole tar; a POP, NONE and STOP follow it. tarfile ignores bytes after the archive.
    """
    import io  # noqa: PLC0415
    import struct  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    def build(length: int) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as archive:
            for name, data in {("\x80\x02B" + struct.pack("<I", length).decode("latin-1")): b"", **records}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    size = len(build(0x01010101))
    tar = build(size - 7)
    assert len(tar) == size
    return tar + b"0N."


def test_file_that_is_both_a_pickle_and_a_tar_is_read_both_ways(tmp_path: Path) -> None:
    import pickle  # noqa: PLC0415

    from corpus.stock_loaders import loader_runs_payload, marker_payload  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    records = {
        "sys_info": pickle.dumps({"protocol_version": 1001}, protocol=2),
        "pickle": pickle.dumps({"hook": payload}, protocol=2),
        "storages": _storages(),
        "tensors": pickle.dumps(0, protocol=2),
    }
    path = tmp_path / "model.pt"
    path.write_bytes(_tar_pickle_polyglot(records))
    assert pickletools_reads_to_stop(path.read_bytes())
    assert loader_runs_payload(f"import torch; torch.load({str(path)!r}, weights_only=False)", marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert {"pickle", "tar"} <= set(report.files[0].formats)


def pickletools_reads_to_stop(data: bytes) -> bool:
    import pickletools  # noqa: PLC0415

    return [op.name for op, _arg, _pos in pickletools.genops(data)][-1] == "STOP"


def _legacy_pickles(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the magic, protocol, sys_info, object and storage-key pickles of a legacy file."""
    import io  # noqa: PLC0415
    import pickletools  # noqa: PLC0415

    spans = []
    stream = io.BytesIO(data)
    for _ in range(5):
        start = stream.tell()
        for op, _arg, _pos in pickletools.genops(stream):
            if op.name == "STOP":
                break
        spans.append((start, stream.tell()))
    return spans


def test_payload_in_the_sys_info_pickle_of_a_legacy_file_is_blocked(tmp_path: Path) -> None:
    # torch.load unpickles the magic number, the protocol version and sys_info before the
    # object itself, each with the loader's pickle module.
    import pickle  # noqa: PLC0415

    from corpus.stock_loaders import loader_runs_payload, marker_payload  # noqa: PLC0415

    payload, marker = marker_payload(tmp_path)
    source = builders.torch_legacy(tmp_path, name="source.pt").read_bytes()
    (_m, _p, (start, end), _o, _k) = _legacy_pickles(source)
    path = tmp_path / "legacy.pt"
    path.write_bytes(source[:start] + pickle.dumps(payload, protocol=2) + source[end:])
    assert loader_runs_payload(f"import torch; torch.load({str(path)!r}, weights_only=False)", marker, tmp_path)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "torch-legacy" in report.files[0].formats


# -- storages against their records (CVE-2026-24747) and TorchScript code (CVE-2025-32434) ------


def _state_dict_with_data_pkl(tmp_path: Path, old: bytes, new: bytes) -> Path:
    source = builders.torch_state_dict(tmp_path, "model.pt").read_bytes()
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        original = archive.read(member)
    assert old in original, "the edit must apply"
    path = tmp_path / "edited.pt"
    path.write_bytes(zips.with_member_replaced(source, "data.pkl", original.replace(old, new, 1)))
    return path


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(b"X\x01\x00\x00\x000q", b"X\x01\x00\x00\x009q", id="key-without-a-record"),
        pytest.param(b"X\x01\x00\x00\x000q", b"X\x01\x00\x00\x00/q", id="key-that-is-a-path"),
        pytest.param(b"ctorch\nFloatStorage", b"ctorch\nFloatStoragX", id="unknown-element-type"),
    ],
)
def test_storage_that_torch_load_cannot_map_to_its_record_is_blocked(old: bytes, new: bytes, tmp_path: Path) -> None:
    report = scan_path(_state_dict_with_data_pkl(tmp_path, old, new))
    assert_fails_with(report, "pytorch.storage-mismatch")


def test_benign_torchscript_is_noted_as_a_program_without_blocking(tmp_path: Path) -> None:
    report = scan_path(builders.torchscript_scripted(tmp_path))
    assert_passes(report)
    assert "torch.torchscript-program" in rules(report), describe(report.findings)


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        pytest.param("torch.ops.evil.run(input)", "torch.torchscript-code", id="custom-op-namespace"),
        pytest.param("ops.prim.Print(input)", "torch.torchscript-code", id="prim-op-not-inert"),
        pytest.param('torch.save(input, "/tmp/x")', "torch.torchscript-dangerous-op", id="torch-save"),
        pytest.param(
            'torch.ops.aten.from_file("/etc/passwd", False, 1)', "torch.torchscript-dangerous-op", id="from-file"
        ),
        pytest.param("(weight).from_file(input)", "torch.torchscript-dangerous-op", id="method-on-a-value"),
    ],
)
def test_torchscript_calling_ops_outside_torch_math_is_blocked(call: str, rule: str, tmp_path: Path) -> None:
    source = builders.torchscript_scripted(tmp_path).read_bytes()
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        text = archive.read("scripted/code/__torch__/torch/nn/modules/linear.py").decode()
    edited = text.replace(
        "return torch.linear(input, weight, bias)", f"_1 = {call}\n    return torch.linear(input, weight, bias)"
    )
    assert edited != text
    path = tmp_path / "edited.pt"
    path.write_bytes(zips.with_member_replaced(source, "modules/linear.py", edited.encode()))
    assert_fails_with(scan_path(path), rule)


@pytest.mark.parametrize("how", ["dynamic", "static-scripted", "static-traced"])
def test_quantized_torchscript_passes_with_its_setstate_shown(how: str, tmp_path: Path) -> None:
    """Quantized modules' scripted code re-packs their weights in a __setstate__ that calls only
    PyTorch's quantized kernels: shown (MEDIUM when present), never blocking by default."""
    report = scan_path(builders.torchscript_quantized(tmp_path, how))
    assert_passes(report)
    if how != "dynamic":
        assert "torch.torchscript-setstate" in rules(report), describe(report.findings)


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        pytest.param("torch.ops.evil.run(state)", "torch.torchscript-code", id="custom-op"),
        pytest.param('torch.save(state, "/tmp/x")', "torch.torchscript-dangerous-op", id="torch-save"),
    ],
)
def test_a_setstate_calling_outside_torch_math_is_still_blocked(call: str, rule: str, tmp_path: Path) -> None:
    source = builders.torchscript_quantized(tmp_path, "static-scripted").read_bytes()
    member = "quantized-static-scripted/code/__torch__/torch/ao/nn/quantized/modules/conv.py"
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        text = archive.read(member).decode()
    edited = text.replace("    self.in_channels = (state)[0]\n", f"    self.in_channels = (state)[0]\n    _x = {call}\n", 1)
    assert edited != text
    path = tmp_path / "edited.pt"
    path.write_bytes(zips.with_member_replaced(source, "quantized/modules/conv.py", edited.encode()))
    assert_fails_with(scan_path(path), rule)


def test_torchscript_source_that_cannot_be_parsed_is_blocked(tmp_path: Path) -> None:
    source = builders.torchscript_scripted(tmp_path).read_bytes()
    path = tmp_path / "broken.pt"
    path.write_bytes(zips.with_member_replaced(source, "modules/linear.py", b"class Linear(Module:\n"))
    assert_fails_with(scan_path(path), "torch.torchscript-code")
