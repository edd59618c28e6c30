"""Zip, tar and compressed archives: every member is scanned by content, escaping paths reported."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders, pickles
from corpus.expect import assert_fails_with, assert_passes, describe, rules
from corpus.payloads import SystemCall

MALICIOUS = pickle.dumps(SystemCall(), protocol=4)
BENIGN = pickle.dumps({"weights": [0.1, 0.2]}, protocol=4)


@pytest.mark.parametrize("member", ["model.pkl", "notes.txt", "docs/README", "assets/image.png"])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2], ids=["stored", "deflated", "bzip2"])
def test_malicious_pickle_in_a_zip_is_blocked_whatever_the_member_name(member: str, compression: int, tmp_path: Path) -> None:
    path = builders.zip_with(tmp_path, "bundle.zip", {"config.json": b'{"a": 1}', member: MALICIOUS}, compression)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert {f.location.member for f in report.findings if f.rule_id == "pickle.dangerous-global"} == {member}


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_malicious_pickle_in_a_tar_is_blocked(mode: str, tmp_path: Path) -> None:
    path = builders.tar_with(tmp_path, "bundle.tar", {"model/readme.txt": b"hello\n", "model/weights.txt": MALICIOUS}, mode)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")


def test_benign_tar_gz_of_a_torch_checkpoint_passes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    report = scan_path(builders.tar_gz_of_torch_checkpoint(tmp_path))
    assert_passes(report)
    assert {"gzip", "tar", "zip", "pickle"} <= set(report.files[0].formats)


def test_benign_zip_of_models_and_text_passes(tmp_path: Path) -> None:
    members = {
        "README.md": b"# model\n",
        "model.pkl": BENIGN,
        "config.json": b'{"layers": 2}',
        # Text whose first letter is also a protocol-0 opcode (c = GLOBAL, i = INST, ( = MARK).
        "code/model.py": b"class TinyNet(Module):\n    pass\n",
        "code/train.py": b"import torch\nimport os.path\n",
        "notes.txt": b"(draft) see below\n",
    }
    assert_passes(scan_path(builders.zip_with(tmp_path, "bundle.zip", members)))


@pytest.mark.parametrize("name", ["../evil.pkl", "/abs/evil.pkl", "a/../../evil.pkl"])
def test_zip_member_escaping_the_extraction_folder_is_blocked(name: str, tmp_path: Path) -> None:
    path = builders.zip_with(tmp_path, "bundle.zip", {name: BENIGN})
    report = scan_path(path)
    assert_fails_with(report, "archive.path-traversal")


def test_tar_member_escaping_the_extraction_folder_is_blocked(tmp_path: Path) -> None:
    path = builders.tar_with(tmp_path, "bundle.tar.gz", {"../evil.pkl": BENIGN}, "w:gz")
    assert_fails_with(scan_path(path), "archive.path-traversal")


def test_tar_symlink_out_of_the_folder_is_blocked(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    with tarfile.open(path, "w") as archive:
        link = tarfile.TarInfo("model/weights.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../../etc/passwd"
        archive.addfile(link)
    assert_fails_with(scan_path(path), "archive.link")


def test_nested_archives_are_scanned_and_the_member_path_is_reported(tmp_path: Path) -> None:
    inner_tar = io.BytesIO()
    with tarfile.open(fileobj=inner_tar, mode="w:gz") as archive:
        info = tarfile.TarInfo("model.pkl")
        info.size = len(MALICIOUS)
        archive.addfile(info, io.BytesIO(MALICIOUS))
    middle = io.BytesIO()
    with zipfile.ZipFile(middle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner.tar.gz", inner_tar.getvalue())
    path = builders.zip_with(tmp_path, "outer.zip", {"bundle/middle.zip": middle.getvalue()})
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    [finding] = [f for f in report.findings if f.rule_id == "pickle.dangerous-global"]
    assert finding.location.members[0] == "bundle/middle.zip", describe(report.findings)
    assert finding.location.members[1] == "inner.tar.gz"
    assert finding.location.members[-1] == "model.pkl"


def test_member_hidden_from_the_central_directory_is_reported(tmp_path: Path) -> None:
    from corpus import zips  # noqa: PLC0415

    hidden = zips.raw_zip([zips.stored("evil.pkl", MALICIOUS)])
    listed = zips.raw_zip([zips.stored("model.pkl", BENIGN)])
    # The hidden member's local header sits before the listed one; the directory never names it.
    cd = listed.index(b"PK\x01\x02")
    shift = len(hidden[: hidden.index(b"PK\x01\x02")])
    body = hidden[:shift] + listed[:cd]
    central = bytearray(listed[cd : listed.index(b"PK\x05\x06")])
    central[42:46] = shift.to_bytes(4, "little")
    eocd = bytearray(listed[listed.index(b"PK\x05\x06") :])
    eocd[16:20] = len(body).to_bytes(4, "little")
    path = tmp_path / "hidden.zip"
    path.write_bytes(body + bytes(central) + bytes(eocd))
    report = scan_path(path)
    assert "archive.hidden-member" in rules(report), describe(report.findings)
    assert_fails_with(report, "archive.hidden-member", "pickle.dangerous-global")


def test_malicious_pickle_behind_several_compressions_is_blocked(tmp_path: Path) -> None:
    import bz2  # noqa: PLC0415
    import gzip  # noqa: PLC0415
    import lzma  # noqa: PLC0415

    path = tmp_path / "model.pkl.gz.xz.bz2"
    path.write_bytes(bz2.compress(lzma.compress(gzip.compress(pickles.GLOBAL_REDUCE_OS_SYSTEM))))
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


# -- formats recognised by content as their readers recognise them ---------------------------


def _as_v7(data: bytes) -> bytes:
    """A tar re-headed without `ustar` magic: tarfile (and so torch.load) still reads it."""
    raw = bytearray(data)
    at = 0
    while at + 512 <= len(raw) and any(raw[at : at + 512]):
        block = raw[at : at + 512]
        size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        block[257:512] = bytes(255)
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
        raw[at : at + 512] = block
        at += 512 + (size + 511) // 512 * 512
    return bytes(raw)


@pytest.mark.parametrize("name", ["bundle.tar", "bundle.dat", "bundle"])
def test_v7_tar_without_ustar_magic_is_opened(name: str, tmp_path: Path) -> None:
    source = builders.tar_with(tmp_path, "source.tar", {"model/weights.bin": MALICIOUS})
    path = tmp_path / name
    path.write_bytes(_as_v7(source.read_bytes()))
    with tarfile.open(path) as archive:  # the stdlib's reader agrees it is a tar
        assert archive.getnames() == ["model/weights.bin"]
    assert path.read_bytes()[257:262] != b"ustar"
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "tar" in report.files[0].formats


def test_benign_v7_tar_passes(tmp_path: Path) -> None:
    source = builders.tar_with(tmp_path, "source.tar", {"model/weights.bin": BENIGN, "model/README": b"notes\n"})
    path = tmp_path / "bundle.tar"
    path.write_bytes(_as_v7(source.read_bytes()))
    assert_passes(scan_path(path))


@pytest.mark.parametrize(
    "lzma_filter",
    [
        {"dict_size": 3 << 20},
        {"dict_size": 12345 << 8},
        {"lc": 0, "lp": 0, "pb": 0},
        {"lc": 1, "lp": 3, "pb": 4, "dict_size": 1 << 16},
    ],
    ids=["3MiB", "odd-size", "props-0", "props-lc1-lp3-pb4"],
)
def test_lzma_alone_streams_are_opened_whatever_their_header(lzma_filter: dict[str, int], tmp_path: Path) -> None:
    import lzma  # noqa: PLC0415

    filters = [{"id": lzma.FILTER_LZMA1, **lzma_filter}]
    path = tmp_path / "model.bin"
    path.write_bytes(lzma.compress(MALICIOUS, format=lzma.FORMAT_ALONE, filters=filters))
    assert lzma.decompress(path.read_bytes(), format=lzma.FORMAT_ALONE) == MALICIOUS
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    benign = tmp_path / "benign.bin"
    benign.write_bytes(lzma.compress(BENIGN, format=lzma.FORMAT_ALONE, filters=filters))
    assert_passes(scan_path(benign))


@pytest.mark.parametrize(
    "text", [b"ZF: notes about ZFS pools\n", b"]\n", b"x marks the spot\n"], ids=["ZF-text", "bracket", "x-text"]
)
def test_text_that_starts_like_a_compressed_header_is_text(text: bytes, tmp_path: Path) -> None:
    path = tmp_path / "notes"
    path.write_bytes(text * 4)
    assert_passes(scan_path(path))


@pytest.mark.parametrize("front", ["pickle", "npy"])
def test_zip_appended_to_a_pickle_or_an_array_is_scanned(front: str, tmp_path: Path) -> None:
    # pickle.load and np.load read the front; zipfile finds the zip by its end record.
    import numpy as np  # noqa: PLC0415

    if front == "pickle":
        head = BENIGN
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.arange(4.0))
        head = buffer.getvalue()
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("model/data.pkl", MALICIOUS)
    path = tmp_path / "model.bin"
    path.write_bytes(head + bad.getvalue())
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["model/data.pkl"]
    assert_fails_with(scan_path(path), "pickle.dangerous-global")
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as archive:
        archive.writestr("model/data.pkl", BENIGN)
    path.write_bytes(head + good.getvalue())
    assert_passes(scan_path(path))


def test_end_record_bytes_inside_pickle_data_are_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(BENIGN + b"PK\x05\x06" + bytes(30))
    assert_passes(scan_path(path))
