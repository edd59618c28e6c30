"""The manifest of a model: one SHA-256 per file, in the order OpenSSF model signing uses.

A model is a file or a folder. Files are named by their POSIX path relative to the
model's root and sorted part by part (as `PurePosixPath` orders them: `a/z` < `a-b/c` <
`a.txt`), the order the model-signing `files` serialization signs. The root digest is the
SHA-256 of the per-file digests' raw bytes in that order. Git's own files at the root
are ignored, as model-signing does by default. Files are hashed on several threads
(hashlib releases the GIL) in fixed-size chunks, so memory stays bounded whatever the
model's size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NewType

from bastion.errors import ArtifactError, VerificationError

Sha256 = NewType("Sha256", str)
"""A SHA-256 digest as 64 lowercase hex characters."""

GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
CHUNK = 256 << 10  # fits in L2: read into cache, hash from cache (0.57 s vs 0.73 s for 8 MiB on 1.9 GB)


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One file of a model: its path relative to the root, and its digest."""

    name: str
    digest: Sha256


@dataclass(frozen=True, slots=True)
class Manifest:
    """Every file of a model with its digest, in signing order."""

    files: tuple[FileDigest, ...]

    def root_digest(self) -> Sha256:
        """SHA-256 over the files' raw digests, in order: the statement's subject digest."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(bytes.fromhex(f.digest))
        return Sha256(h.hexdigest())

    def to_json(self) -> str:
        return json.dumps({"files": [{"name": f.name, "sha256": f.digest} for f in self.files]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Read a manifest written by `to_json`; malformed input is a VerificationError."""
        try:
            doc = json.loads(text)
            files = tuple(FileDigest(str(e["name"]), _checked_digest(e["sha256"])) for e in doc["files"])
        except (ValueError, KeyError, TypeError) as err:
            raise VerificationError(f"manifest is malformed: {err}", hint="Regenerate it with `bastion sign`.") from err
        return cls(tuple(sorted(files, key=lambda f: PurePosixPath(f.name))))


@dataclass(frozen=True, slots=True)
class ManifestDiff:
    """What differs between the manifest that was signed and the files on disk."""

    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.changed or self.missing or self.extra or self.renamed)

    def reasons(self) -> list[str]:
        """One sentence per difference, naming the file."""
        return (
            [f"{name}: digest differs from the signed manifest (its bytes changed)" for name in self.changed]
            + [f"{name}: missing (signed, but not on disk)" for name in self.missing]
            + [f"{name}: extra file (on disk, but not signed)" for name in self.extra]
            + [f"{old} was renamed to {new}" for old, new in self.renamed]
        )


def _checked_digest(value: object) -> Sha256:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{value!r} is not a SHA-256 hex digest")
    return Sha256(value)


def _is_ignored(rel: str, ignored: tuple[str, ...]) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in ignored)


def list_model_files(
    root: Path, ignore: Iterable[str] = (), *, ignore_git: bool = True, allow_symlinks: bool = False
) -> list[PurePosixPath]:
    """The files of a model, relative to its root, in signing order.

    Symbolic links are refused unless allowed; when allowed, a link to a file is hashed as
    the file it points to and a link to a folder is not followed (no cycles).

    Raises:
        ArtifactError: the model does not exist, or holds a symlink that is not allowed.
    """
    if root.is_file() and not root.is_symlink():
        return [PurePosixPath(root.name)]
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such model file or folder", hint="Check the path.")
    ignored = tuple(PurePosixPath(p).as_posix() for p in (*ignore, *(GIT_PATHS if ignore_git else ())))
    found: list[str] = []
    _collect(str(root), "", ignored, allow_symlinks, found)
    return sorted(PurePosixPath(name) for name in found)


def _collect(folder: str, base: str, ignored: tuple[str, ...], allow_symlinks: bool, found: list[str]) -> None:
    # os.scandir's entries carry their type, so a thousand small files cost no extra stat calls.
    with os.scandir(folder) as entries:
        for entry in entries:
            rel = f"{base}{entry.name}"
            if _is_ignored(rel, ignored):
                continue
            if entry.is_symlink():
                if not allow_symlinks:
                    raise ArtifactError(
                        f"{rel}: is a symbolic link; signing what a link points to can be swapped under it",
                        hint="Replace the link with the file, or allow symlinks explicitly.",
                    )
                if entry.is_file():
                    found.append(rel)
            elif entry.is_dir(follow_symlinks=False):
                _collect(entry.path, rel + "/", ignored, allow_symlinks, found)
            elif entry.is_file(follow_symlinks=False):
                found.append(rel)


def hash_file(path: Path) -> Sha256:
    """SHA-256 of a file, read in fixed-size chunks."""
    h = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        # One buffer per call, filled in place: no new 8 MiB object per read.
        while n := handle.readinto(buffer):
            h.update(view[:n])
    return Sha256(h.hexdigest())


def hash_model(
    root: Path,
    ignore: Iterable[str] = (),
    *,
    ignore_git: bool = True,
    allow_symlinks: bool = False,
    workers: int | None = None,
) -> Manifest:
    """The manifest of a model file or folder.

    Args:
        root: the model file, or the folder holding it.
        ignore: paths relative to the root to leave out (e.g. the signature file).
        ignore_git: leave out .git, .github, .gitignore and .gitattributes at the root.
        allow_symlinks: hash what links point to instead of refusing them.
        workers: threads hashing files at once; default one per core.

    Raises:
        ArtifactError: the model is missing or unreadable, or holds a refused symlink.
    """
    names = list_model_files(root, ignore, ignore_git=ignore_git, allow_symlinks=allow_symlinks)
    paths = [root] if root.is_file() else [root / Path(*n.parts) for n in names]
    try:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            digests = list(pool.map(hash_file, paths))
    except OSError as err:
        raise ArtifactError(f"{err.filename}: cannot be read: {err.strerror}") from err
    return Manifest(tuple(FileDigest(n.as_posix(), d) for n, d in zip(names, digests, strict=True)))


def compare_manifests(signed: Manifest, actual: Manifest) -> ManifestDiff:
    """Name every file whose bytes changed, went missing, appeared, or moved."""
    expected = {f.name: f.digest for f in signed.files}
    found = {f.name: f.digest for f in actual.files}
    changed = tuple(n for n in expected if n in found and found[n] != expected[n])
    missing = [n for n in expected if n not in found]
    extra = [n for n in found if n not in expected]
    renamed: list[tuple[str, str]] = []
    for old in list(missing):
        new = next((n for n in extra if found[n] == expected[old]), None)
        if new is not None:
            renamed.append((old, new))
            missing.remove(old)
            extra.remove(new)
    return ManifestDiff(changed, tuple(missing), tuple(extra), tuple(renamed))
