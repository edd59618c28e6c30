"""What `bastion sign` and `bastion verify` refuse, rather than report as signed or verified.

Each refusal names the file and the reason: a manifest that lists a file twice, a manifest with
no file at all (its ignore list naming every file), anything in the model that is not a regular
file or a folder (FIFO, socket, device, a link that leaves the model, dangles or names a
folder), and a file that is replaced or changes between being listed and being hashed.
Checked through the library, on key-signed and certificate-signed bundles, and through the real
CLI; signing refuses as verifying does (a FIFO neither hangs nor is skipped).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ArtifactError, VerificationError
from bastion.sign import manifest as manifest_module
from bastion.sign.certs import load_certificates
from bastion.sign.keys import PrivateKey, generate_key, load_public_key, save_keypair
from bastion.sign.manifest import FileDigest, Manifest, Sha256, hash_model, list_model_files
from bastion.sign.ossf import (
    BUNDLE_MEDIA_TYPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    pae,
    sign_model,
    verify_model,
    verify_model_with_certificates,
)
from corpus.hang_guard import HANG_GUARD
from corpus.pki import Pki, build_pki


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(b"\x10\x00" * 500)
    (root / "sub" / "config.json").write_text('{"layers": 2}')
    return root


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bundle(key: PrivateKey, resources: list[tuple[str, str]], ignore_paths: list[str], target: Path) -> Path:
    """A bundle signed by `key` over exactly these (name, digest) resources, as a careless or hostile signer writes it."""
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in resources)).hexdigest()
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "m", "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": [{"name": n, "algorithm": "sha256", "digest": d} for n, d in resources],
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": ignore_paths},
        },
    }
    payload = json.dumps(statement).encode()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sig = key.sign(pae(payload), ec.ECDSA(manifest_hash(key)))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    target.write_text(json.dumps(bundle))
    return target


def manifest_hash(key: ec.EllipticCurvePrivateKey) -> object:
    from bastion.sign.raw import hash_for  # noqa: PLC0415

    return hash_for(key.curve)


@pytest.fixture
def key(tmp_path: Path) -> tuple[PrivateKey, Path]:
    private = generate_key("ecdsa-p256")
    return private, save_keypair(private, tmp_path / "release.key")


# --- manifests that sign less than they say ----------------------------------------------------


def test_a_file_listed_twice_is_refused_not_counted_twice(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    weights, config = (model / "weights.bin").read_bytes(), (model / "sub" / "config.json").read_bytes()
    signature = _bundle(
        key[0],
        [("sub/config.json", _sha(config)), ("weights.bin", _sha(weights)), ("weights.bin", _sha(weights))],
        ["model.sig"],
        tmp_path / "dup.sig",
    )
    with pytest.raises(VerificationError, match=r"weights\.bin: listed twice in the signed manifest"):
        verify_model(model, load_public_key(key[1]), signature)


def test_a_manifest_json_listing_a_file_twice_is_refused() -> None:
    digest = _sha(b"x")
    text = json.dumps({"files": [{"name": "a", "sha256": digest}, {"name": "a", "sha256": digest}]})
    with pytest.raises(VerificationError, match="a: listed twice in the manifest"):
        Manifest.from_json(text)


def test_a_name_spelt_two_ways_is_refused(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    weights, config = (model / "weights.bin").read_bytes(), (model / "sub" / "config.json").read_bytes()
    signature = _bundle(
        key[0],
        [("./weights.bin", _sha(weights)), ("sub/config.json", _sha(config)), ("weights.bin", _sha(weights))],
        [],
        tmp_path / "alias.sig",
    )
    with pytest.raises(VerificationError, match=r"\./weights\.bin: not a relative path inside the model"):
        verify_model(model, load_public_key(key[1]), signature)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "a//b", "", "a/./b", "nul\x00"])
def test_a_manifest_name_outside_or_non_canonical_is_refused(name: str) -> None:
    with pytest.raises(VerificationError, match="not a relative path inside the model"):
        Manifest((FileDigest(name, Sha256(_sha(b"x"))),))


def test_an_empty_manifest_ignoring_every_file_is_refused(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    signature = _bundle(key[0], [], ["weights.bin", "sub", "model.sig"], tmp_path / "empty.sig")
    with pytest.raises(VerificationError, match="signs no file"):
        verify_model(model, load_public_key(key[1]), signature)


def test_a_manifest_json_with_no_file_is_refused() -> None:
    with pytest.raises(VerificationError, match="lists no file"):
        Manifest.from_json('{"files": []}')


def test_signing_an_empty_folder_is_refused(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="holds no file to sign"):
        sign_model(tmp_path / "empty", key[0])
    assert not (tmp_path / "empty" / "model.sig").exists()


@pytest.mark.parametrize(
    ("resource", "reason"),
    [({"name": "weights.bin", "algorithm": "sha256", "digest": "zz"}, "not a SHA-256 hex digest"),
     ({"name": 7, "algorithm": "sha256", "digest": "0" * 64}, "is not a file name"),
     ("weights.bin", "malformed")],
)
def test_a_malformed_resource_is_a_verification_error(
    key: tuple[PrivateKey, Path], tmp_path: Path, resource: object, reason: str
) -> None:
    model = _model(tmp_path / "m")
    signature = _bundle(key[0], [("weights.bin", _sha(b"x"))], [], tmp_path / "bad.sig")
    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"] = [resource]
    payload = json.dumps(statement).encode()
    private = key[0]
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    sig = private.sign(pae(payload), ec.ECDSA(manifest_hash(private)))
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    signature.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match=reason):
        verify_model(model, load_public_key(key[1]), signature)


@pytest.mark.parametrize("material", [[], "x", {"publicKey": []}, {"publicKey": {"hint": 7}}])
def test_malformed_verification_material_is_a_verification_error(
    key: tuple[PrivateKey, Path], tmp_path: Path, material: object
) -> None:
    model = _model(tmp_path / "m")
    signature = sign_model(model, key[0])
    bundle = json.loads(signature.read_text())
    bundle["verificationMaterial"] = material
    signature.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match=r"model\.sig: "):
        verify_model(model, load_public_key(key[1]), signature)


# --- what is not a regular file ---------------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays


SPECIAL = [
    pytest.param(_fifo, "is a FIFO", id="fifo"),
    pytest.param(_socket, "is a socket", id="socket"),
]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder: a Unix socket's path must fit in 108 bytes, which tmp_path may not."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bst") as folder:
        yield Path(folder)


@pytest.mark.parametrize(("make", "kind"), SPECIAL)
def test_signing_a_folder_holding_a_special_file_is_refused(
    key: tuple[PrivateKey, Path], short_tmp: Path, make: Callable[[Path], None], kind: str
) -> None:
    model = _model(short_tmp / "m")
    make(model / "sub" / "pipe")
    with pytest.raises(ArtifactError, match=rf"sub/pipe: {kind}; only regular files and folders"):
        sign_model(model, key[0])
    assert not (model / "model.sig").exists()


@pytest.mark.parametrize(("make", "kind"), SPECIAL)
def test_verifying_a_folder_holding_a_special_file_is_refused(
    key: tuple[PrivateKey, Path], short_tmp: Path, make: Callable[[Path], None], kind: str
) -> None:
    model = _model(short_tmp / "m")
    signature = sign_model(model, key[0])
    make(model / "sub" / "pipe")
    with pytest.raises(ArtifactError, match=f"sub/pipe: {kind}"):
        verify_model(model, load_public_key(key[1]), signature)


def test_a_device_file_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    (model / "null").symlink_to("/dev/null")
    with pytest.raises(ArtifactError, match="null: is a symbolic link"):
        hash_model(model)
    with pytest.raises(ArtifactError, match="null: is a link to a character device"):
        hash_model(model, allow_symlinks=True)


def test_a_model_that_is_itself_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.bin")
    with pytest.raises(ArtifactError, match=r"model\.bin: is a FIFO"):
        hash_model(tmp_path / "model.bin")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (lambda tmp, model: tmp / "outside.bin", "is a symbolic link that leads outside the model"),
        (lambda tmp, model: model / "sub", "is a link to a folder"),
        (lambda tmp, model: model / "absent.bin", "is a dangling link"),
        (lambda tmp, model: Path("../../outside.bin"), "is a symbolic link that leads outside the model"),
    ],
    ids=["outside", "folder", "dangling", "relative-outside"],
)
def test_an_allowed_link_that_leaves_the_model_dangles_or_names_a_folder_is_refused(
    tmp_path: Path, target: Callable[[Path, Path], Path], reason: str
) -> None:
    model = _model(tmp_path / "m")
    (tmp_path / "outside.bin").write_bytes(b"elsewhere")
    (model / "sub" / "link").symlink_to(target(tmp_path, model))
    with pytest.raises(ArtifactError, match=rf"sub/link: {reason}"):
        hash_model(model, allow_symlinks=True)


def test_an_allowed_link_inside_the_model_is_hashed_as_its_file(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    (model / "alias.bin").symlink_to("weights.bin")
    found = {f.name: f.digest for f in hash_model(model, allow_symlinks=True).files}
    assert found["alias.bin"] == found["weights.bin"] == _sha(b"\x10\x00" * 500)


# --- files that change under the hasher -------------------------------------------------------


def _listing_then(change: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `change` on the model right after it is listed, before any file is hashed."""
    listed = manifest_module._list_entries

    def list_then_change(root: Path, *args: object, **kwargs: object) -> object:
        entries = listed(root, *args, **kwargs)  # type: ignore[arg-type]
        change(root)
        return entries

    monkeypatch.setattr(manifest_module, "_list_entries", list_then_change)


def _swap_for_fifo(root: Path) -> None:
    (root / "weights.bin").unlink()
    os.mkfifo(root / "weights.bin")


def _swap_for_other_file(root: Path) -> None:
    (root / "other.bin").write_bytes(b"swapped")
    (root / "other.bin").replace(root / "weights.bin")


def _swap_folder_for_link(root: Path) -> None:
    (root / "sub").rename(root.parent / "moved")
    (root.parent / "elsewhere").mkdir()
    (root.parent / "elsewhere" / "config.json").write_text('{"layers": 2}')
    (root / "sub").symlink_to(root.parent / "elsewhere")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda root: (root / "weights.bin").unlink(), r"weights\.bin: vanished after it was listed"),
        (_swap_for_fifo, r"weights\.bin: was replaced after it was listed \(it is now a FIFO\)"),
        (_swap_for_other_file, r"weights\.bin: was replaced after it was listed"),
        (_swap_folder_for_link, r"sub/config\.json: .*(symbolic link|replaced after it was listed)"),
    ],
    ids=["vanished", "fifo", "other-file", "folder-to-link"],
)
def test_a_file_that_changes_between_listing_and_hashing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None], reason: str
) -> None:
    model = _model(tmp_path / "m")
    _listing_then(change, monkeypatch)
    with pytest.raises(ArtifactError, match=reason):
        hash_model(model, workers=1)


def test_a_file_that_grows_while_it_is_hashed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tmp_path / "m")
    real_update = hashlib.sha256

    class Appending:
        """A SHA-256 that appends to the file once, while it is being read."""

        def __init__(self) -> None:
            self.inner = real_update()
            self.done = False

        def update(self, data: object) -> None:
            if not self.done:
                self.done = True
                with (model / "weights.bin").open("ab") as more:
                    more.write(b"appended while hashing")
            self.inner.update(data)  # type: ignore[arg-type]

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(manifest_module.hashlib, "sha256", Appending)
    with pytest.raises(ArtifactError, match=r"weights\.bin: changed while it was being hashed"):
        manifest_module.hash_file(model / "weights.bin")


def test_listing_is_unchanged_for_a_plain_model(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    assert [p.as_posix() for p in list_model_files(model)] == ["sub/config.json", "weights.bin"]


# --- certificate-signed bundles and the CLI ---------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return build_pki(tmp_path / "pki", "ecdsa-p256")


def test_a_certificate_signed_model_holding_a_fifo_is_refused(pki: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    signature = sign_model(model, pki.leaf_private, certificate_chain=load_certificates([pki.leaf, pki.intermediate]))
    os.mkfifo(model / "pipe")
    roots = load_certificates([pki.root])
    with pytest.raises(ArtifactError, match="pipe: is a FIFO"):
        verify_model_with_certificates(model, roots, signature)


def _bastion(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *map(str, args)],
        capture_output=True, text=True, timeout=HANG_GUARD, check=False,
    )


def test_the_cli_refuses_to_sign_or_verify_a_folder_holding_a_fifo(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    private = tmp_path / "release.key"
    signed = _bastion("sign", model, "--key", private)
    assert signed.returncode == 0, signed.stderr
    os.mkfifo(model / "sub" / "pipe")
    verify = _bastion("verify", model, "--key", key[1])
    assert verify.returncode == 2, verify.stdout + verify.stderr
    assert "sub/pipe: is a FIFO" in verify.stderr and "verified" not in verify.stdout
    (model / "model.sig").unlink()
    sign = _bastion("sign", model, "--key", private)
    assert sign.returncode == 2 and "sub/pipe: is a FIFO" in sign.stderr
    assert not (model / "model.sig").exists()


def test_the_cli_refuses_a_duplicated_file_name(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    weights, config = (model / "weights.bin").read_bytes(), (model / "sub" / "config.json").read_bytes()
    signature = _bundle(
        key[0],
        [("sub/config.json", _sha(config)), ("weights.bin", _sha(weights)), ("weights.bin", _sha(weights))],
        [],
        tmp_path / "dup.sig",
    )
    done = _bastion("verify", model, "--key", key[1], "--signature", signature)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "weights.bin: listed twice" in done.stderr and "3 files" not in done.stdout


def test_the_cli_refuses_an_empty_manifest(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    signature = _bundle(key[0], [], ["weights.bin", "sub"], tmp_path / "empty.sig")
    done = _bastion("verify", model, "--key", key[1], "--signature", signature)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "signs no file" in done.stderr and "0 files" not in done.stdout


# --- any signed statement, any bundle ---------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
STATEMENT_SPOTS = (
    ("subject",),
    ("subject", 0),
    ("subject", 0, "digest"),
    ("predicate",),
    ("predicate", "resources"),
    ("predicate", "resources", 0),
    ("predicate", "resources", 0, "name"),
    ("predicate", "resources", 0, "digest"),
    ("predicate", "serialization"),
    ("predicate", "serialization", "ignore_paths"),
)
BUNDLE_SPOTS = (("verificationMaterial",), ("dsseEnvelope",), ("dsseEnvelope", "signatures"), ("dsseEnvelope", "payload"))


def _put(doc: Any, spot: tuple[str | int, ...], value: object) -> None:
    for step in spot[:-1]:
        doc = doc[step]
    doc[spot[-1]] = value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spot=st.sampled_from(STATEMENT_SPOTS), value=JSON_VALUES)
def test_any_signed_statement_verifies_or_is_a_verification_error(
    key: tuple[PrivateKey, Path], tmp_path: Path, spot: tuple[str | int, ...], value: object
) -> None:
    model = tmp_path / "fuzz-model"
    if not model.exists():
        _model(model)
    weights = (model / "weights.bin").read_bytes()
    signature = _bundle(key[0], [("weights.bin", _sha(weights))], ["model.sig", "sub"], tmp_path / "fuzz.sig")
    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    _put(statement, spot, value)
    payload = json.dumps(statement).encode()
    private = key[0]
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    sig = private.sign(pae(payload), ec.ECDSA(manifest_hash(private)))
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    signature.write_text(json.dumps(bundle))
    try:
        verified = verify_model(model, load_public_key(key[1]), signature)
    except VerificationError as err:
        assert err.message.startswith((f"{signature}: ", f"{model}: ")), err.message
    else:
        assert verified.files >= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spot=st.sampled_from(BUNDLE_SPOTS), value=JSON_VALUES)
def test_any_bundle_verifies_or_is_a_verification_error(
    key: tuple[PrivateKey, Path], tmp_path: Path, spot: tuple[str | int, ...], value: object
) -> None:
    model = tmp_path / "fuzz-model"
    if not model.exists():
        _model(model)
        sign_model(model, key[0], tmp_path / "good.sig")
    bundle = json.loads((tmp_path / "good.sig").read_text())
    _put(bundle, spot, value)
    (tmp_path / "fuzz.sig").write_text(json.dumps(bundle))
    try:
        verified = verify_model(model, load_public_key(key[1]), tmp_path / "fuzz.sig")
    except VerificationError as err:
        assert "fuzz.sig: " in err.message
    else:  # only what the signature does not cover may vary: the key hint is advisory
        assert spot == ("verificationMaterial",) and verified.files == 2


# --- the signature file itself, which lives in the folder an attacker may hand over -----------


def test_signing_never_writes_through_a_planted_signature_link(key: tuple[PrivateKey, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (model / "model.sig").symlink_to(victim)
    written = sign_model(model, key[0])
    assert victim.read_text() == "precious"
    assert not written.is_symlink() and json.loads(written.read_text())["mediaType"] == BUNDLE_MEDIA_TYPE
    assert verify_model(model, load_public_key(key[1])).files == 2


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_a_signature_that_is_not_a_small_regular_file_is_refused(
    key: tuple[PrivateKey, Path], tmp_path: Path, kind: str
) -> None:
    model = _model(tmp_path / "m")
    signature = model / "model.sig"
    if kind == "fifo":
        os.mkfifo(signature)
    elif kind == "device":
        signature.symlink_to("/dev/zero")  # endless bytes
    elif kind == "folder":
        signature.mkdir()
    else:
        with signature.open("wb") as big:
            big.truncate(65 * 1024 * 1024)  # sparse: no disk used
    reasons = {"fifo": "is a FIFO", "device": "is a character device", "folder": "is a folder", "huge": "is larger than"}
    with pytest.raises(VerificationError, match=rf"model\.sig: signature {reasons[kind]}"):
        verify_model(model, load_public_key(key[1]))


def test_a_signature_link_to_a_model_file_does_not_leave_that_file_unsigned(
    key: tuple[PrivateKey, Path], tmp_path: Path
) -> None:
    model = _model(tmp_path / "m")
    (model / "model.sig").symlink_to("weights.bin")
    sign_model(model, key[0])
    bundle = json.loads((model / "model.sig").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["sub/config.json", "weights.bin"]
    assert (model / "weights.bin").read_bytes() == b"\x10\x00" * 500
