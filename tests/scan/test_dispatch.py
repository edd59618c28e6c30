"""A file's extension decides nothing: formats are found by content, as the loaders find them.

Each case is something a stock loader (pickle, `torch.load`, `joblib.load`, `numpy.load`,
h5py/Keras, zipfile, onnx) reads and runs, written under a name that says otherwise. The
name may only make a verdict stricter: content that matches nothing is "not analysed"
when the file is named like a model, and a low, non-blocking finding otherwise.
"""

from __future__ import annotations

import gzip
import io
import lzma
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_path
from bastion.scan.dispatch import PLUGINS, Tier
from corpus.builders import onnx_one_node
from corpus.expect import assert_fails_with, assert_incomplete_with, assert_passes, describe, rules
from corpus.payloads import SystemCall

MISLEADING = ["tokenizer.model", "weights.dat", "archive.z", "bundle.tar", "notes.txt", "README"]
PAYLOAD = {"weights": [1.0, 2.0], "hook": SystemCall()}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _pickle(protocol: int = 2) -> bytes:
    return pickle.dumps(PAYLOAD, protocol=protocol)


@pytest.mark.parametrize("name", MISLEADING)
@pytest.mark.parametrize("protocol", [0, 1])
def test_pickle_without_proto_is_found_whatever_its_name(protocol: int, name: str, tmp_path: Path) -> None:
    data = _pickle(protocol)
    assert data[:1] != b"\x80"  # protocols 0 and 1 open with any opcode but PROTO
    assert_fails_with(scan_path(_write(tmp_path, name, data)), "pickle.dangerous-global")


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("wbits", [9, 12, 15])
def test_zlib_with_any_level_and_window_is_found(level: int, wbits: int, tmp_path: Path) -> None:
    packer = zlib.compressobj(level, zlib.DEFLATED, wbits)
    data = packer.compress(_pickle()) + packer.flush()
    assert zlib.decompress(data) == _pickle()  # what zlib itself reads
    assert_fails_with(scan_path(_write(tmp_path, "weights.model", data)), "pickle.dangerous-global")


@pytest.mark.parametrize("name", MISLEADING)
def test_gzipped_pickle_is_found_whatever_its_name(name: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(_write(tmp_path, name, gzip.compress(_pickle()))), "pickle.dangerous-global")


def test_lzma_alone_with_a_dictionary_that_is_not_a_power_of_two_is_found(tmp_path: Path) -> None:
    # joblib recognises .lzma by b"\x5d\x00" alone; liblzma takes any dictionary size.
    written = lzma.compress(_pickle(), format=lzma.FORMAT_ALONE)
    data = written[:1] + (3 << 20 | 1 << 8).to_bytes(4, "little") + written[5:]  # the encoder rounds; patch it
    assert data[:2] == b"\x5d\x00"
    assert lzma.decompress(data, format=lzma.FORMAT_ALONE) == _pickle()
    assert_fails_with(scan_path(_write(tmp_path, "model.dat", data)), "pickle.dangerous-global")


def test_joblib_zfile_container_is_found(tmp_path: Path) -> None:
    # joblib < 0.10: b"ZF", the length as hex padded to 19 bytes, then zlib data.
    payload = _pickle()
    data = b"ZF" + f"{len(payload):#x}".ljust(19).encode() + zlib.compress(payload)
    assert_fails_with(scan_path(_write(tmp_path, "estimator.model", data)), "pickle.dangerous-global")


def _zip_with_pickle(member: str = "archive/data.pkl") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, _pickle())
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "stub",
    [
        pytest.param(b"#!/bin/sh\necho self-extracting\nexit 0\n", id="script"),
        pytest.param(b"\x00" * 4096, id="zeros"),
        pytest.param(pickle.dumps({"benign": True}, protocol=2), id="benign-pickle"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, id="image"),
    ],
)
def test_zip_after_a_prepended_stub_is_found(stub: bytes, tmp_path: Path) -> None:
    data = stub + _zip_with_pickle()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # zipfile (and Keras) read it
        assert "archive/data.pkl" in archive.namelist()
    report = scan_path(_write(tmp_path, "bundle.tar", data))
    assert_fails_with(report, "pickle.dangerous-global")


def test_torch_legacy_checkpoint_is_found_whatever_its_name(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.model"
    torch.save({"w": torch.ones(2), "hook": SystemCall()}, path, _use_new_zipfile_serialization=False)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "torch-legacy" in report.files[0].formats


def _v7_tar(members: dict[str, bytes]) -> bytes:
    """A tar with old V7 headers: no "ustar" magic, just a name, sizes and a checksum."""
    out = bytearray()
    for name, data in members.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
        header[257:265] = b"\x00" * 8  # magic and version: V7 has neither
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\x00 " % sum(header)
        out += header + data + b"\x00" * (-len(data) % 512)
    return bytes(out + b"\x00" * 1024)


def test_v7_tar_is_found_and_read_as_tarfile_reads_it(tmp_path: Path) -> None:
    data = _v7_tar({"pickle": _pickle(), "storages": pickle.dumps(0, protocol=2)})
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:  # what torch.load's legacy path opens first
        assert archive.getnames() == ["pickle", "storages"]
    assert data[257:262] != b"ustar"
    assert_fails_with(scan_path(_write(tmp_path, "weights.z", data)), "pickle.dangerous-global")


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_object_arrays_of_every_version_are_found(version: tuple[int, int], tmp_path: Path) -> None:
    buffer = io.BytesIO()
    array = np.array([SystemCall(), 1], dtype=object)
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    assert buffer.getvalue()[6] == version[0]
    assert_fails_with(scan_path(_write(tmp_path, "features.dat", buffer.getvalue())), "pickle.dangerous-global")


def test_hdf5_after_a_user_block_is_found(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    from corpus.builders import _keras2_lambda, _keras2_model_config  # noqa: PLC0415

    path = tmp_path / "weights.bin"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f.attrs["model_config"] = _keras2_model_config([_keras2_lambda()]).encode()
    data = bytearray(path.read_bytes())
    stub = pickle.dumps({"benign": True}, protocol=2)
    data[: len(stub)] = stub  # the user block is free for any content; h5py skips it
    path.write_bytes(bytes(data))
    with h5py.File(path, "r") as f:
        assert "model_config" in f.attrs
    assert_fails_with(scan_path(path), "keras.lambda-layer")


def test_onnx_model_whose_fields_open_with_the_graph_is_found(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx_one_node("RunShell", "com.example.custom")
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    data = onnx.ModelProto(graph=model.graph).SerializeToString() + rest.SerializeToString()
    assert data[0] == 0x3A  # field 7 first: protobuf does not fix the order
    assert onnx.load_from_string(data).graph.node[0].op_type == "RunShell"
    assert_fails_with(scan_path(_write(tmp_path, "weights.bin", data)), "onnx.custom-operator")


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = bytes([number << 3 | wire])
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def test_protobuf_data_named_like_a_model_passes(tmp_path: Path) -> None:
    # Shaped like a SentencePiece `tokenizer.model`: pieces (text, score, type), then specs.
    pieces = b"".join(
        _field(1, 2, _field(1, 2, piece.encode()) + _field(2, 5, struct.pack("<f", -i)) + _field(3, 0, b"\x01"))
        for i, piece in enumerate(["<unk>", "\u2581the", "\u2581a", "ing"])
    )
    data = pieces + _field(2, 2, _field(1, 2, b"train.txt") + _field(3, 0, b"\x01")) + _field(3, 2, b"")
    report = scan_path(_write(tmp_path, "tokenizer.model", data))
    assert_passes(report)
    assert "protobuf" in report.files[0].formats


BINARY_JUNK = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def test_unknown_binary_is_reported_without_blocking(tmp_path: Path) -> None:
    report = scan_path(_write(tmp_path, "image.png", BINARY_JUNK))
    assert report.verdict(Severity.HIGH) is Verdict.PASS
    assert rules(report) == {"scan.unknown-format"}, describe(report.findings)


@pytest.mark.parametrize("name", ["weights.model", "weights.dat", "weights.z", "weights.tar", "weights.pt"])
def test_unknown_binary_named_like_a_model_is_not_analysed(name: str, tmp_path: Path) -> None:
    report = scan_path(_write(tmp_path, name, BINARY_JUNK))
    assert report.verdict(Severity.HIGH) is Verdict.INCOMPLETE, describe(report.findings)
    if not name.endswith(".pt"):  # a .pt starting with an opcode is "a pickle that does not parse"
        assert_incomplete_with(report, "scan.unsupported-format")


def test_a_name_never_makes_content_pass(tmp_path: Path) -> None:
    # The same malicious bytes under every name: the verdict is the content's.
    data = _pickle(0)
    names = ["x.safetensors", "x.gguf", "x.onnx", "x.png", "x.json", "x.h5", "x.npy", "x.zip", "x"]
    for name in names:
        assert_fails_with(scan_path(_write(tmp_path, name, data)), "pickle.dangerous-global")


def test_registry_is_ordered_and_names_are_unique() -> None:
    names = [p.name for p in PLUGINS]
    assert len(set(names)) == len(names)
    assert [p.priority for p in PLUGINS] == sorted(p.priority for p in PLUGINS)
    assert len({p.priority for p in PLUGINS}) == len(PLUGINS)
    assert {p.tier for p in PLUGINS} == set(Tier)


def _with_valid_tar_checksum(data: bytes) -> bytes:
    """`data` padded to a 512-byte block whose tar checksum field is right: a tar header."""
    block = bytearray(data.ljust(512, b"\x00"))
    assert all(b == 0 for b in block[148:156])  # the payload must end before the checksum field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def test_protocol_0_pickle_that_is_also_a_tar_header_is_read_both_ways(tmp_path: Path) -> None:
    data = _with_valid_tar_checksum(pickle.dumps(SystemCall(), protocol=0))
    assert data[:1] != b"\x80"  # no PROTO: found only by trying every opcode
    with tarfile.open(fileobj=io.BytesIO(data + b"\x00" * 1024)) as archive:  # torch.load's first try
        assert len(archive.getmembers()) == 1
    assert_fails_with(scan_path(_write(tmp_path, "weights.bin", data + b"\x00" * 1024)), "pickle.dangerous-global")


def test_gzipped_pickle_that_is_also_a_tar_header_is_read_both_ways(tmp_path: Path) -> None:
    # joblib.load decompresses and unpickles; the stream also opens with a valid tar header.
    data = gzip.compress(_with_valid_tar_checksum(pickle.dumps(SystemCall(), protocol=0)) + b"\x00" * 1024)
    assert_fails_with(scan_path(_write(tmp_path, "model.joblib", data)), "pickle.dangerous-global")
