"""What the registry accepts in each field: one bound and one spelling per field, shared by every edge.

The HTTP API (`api_models.py`) and the library (`Registry`) call the same checks, so a value the API
would refuse cannot reach the database through a library caller either, and the limits match the
columns of `bastion.db.tables` on SQLite and PostgreSQL alike. Each check returns the value to use
(normalised where a field has one canonical spelling) or raises `ConfigError` whose message starts
with the field's name; the API answers it with a 4xx.

Usage:

    name = check_model_name(text)                   # "fraud-detector"
    number = check_version_number(n)                # 1 .. 2**31 - 1 (PostgreSQL INTEGER)
    digest = check_digest(text)                     # "sha256:<64 hex>"
    path = normalise_member_path("./weights/a.npy") # "weights/a.npy"; "x/../y" is refused
    paths = check_member_paths(["a", "b/c"], layout="folder")
    model, number = parse_ref("fraud@7")

Why each bound exists:

- Strings are UTF-8 encodable and hold no control characters (a NUL is refused by PostgreSQL
  with an error, and a lone surrogate from a JSON `\\ud800` by both drivers); one-line fields
  hold no invisible format characters or line separators either (a U+202E RIGHT-TO-LEFT
  OVERRIDE before `gpj.exe` makes it display as `exe.jpg` in a listing or an audit entry).
- Numbers fit the column: version numbers are PostgreSQL `INTEGER`, sizes `BIGINT`.
- Member paths have exactly one spelling, so that `x/../y` cannot alias `y`, no path leaves the
  model's folder when it is checked out, no two paths land on the same file (`a` and `./a`, or
  `A` and `a` on a case-insensitive disk), and a file never sits where a folder must be (`a`
  beside `a/b`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from bastion.errors import ConfigError

MAX_NAME_CHARS = 200  # models.name, principals.name: String(200)
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
ANY_MODEL = "*"  # a grant on every model (roles.ANY_MODEL)
MAX_VERSION_NUMBER = 2**31 - 1  # versions.number: INTEGER on PostgreSQL
MAX_FILE_BYTES = 2**63 - 1  # version_files.size: BIGINT
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
DIGEST_CHARS = 71  # "sha256:" + 64 hex digits
MAX_LICENCE_CHARS = 100  # versions.licence: String(100)
MAX_SOURCE_CHARS = 2048  # a URL: hf://, git+https://, s3://
MAX_DESCRIPTION_CHARS = 10_000
MAX_STAGE_CHARS = 64  # versions.stage, approvals.stage: String(64)
MAX_TOKEN_ID_CHARS = 32  # tokens.token_id: String(32)
TOKEN_ID_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
MAX_PATH_SEGMENT_BYTES = 255  # NAME_MAX on every common file system
MAX_PATH_BYTES = 1024  # well under PATH_MAX (4096) once joined to a checkout folder
MAX_PATH_DEPTH = 32
MAX_MEMBERS = 10_000  # files in one version
LAYOUTS = ("file", "folder")

_DIGEST = re.compile(DIGEST_PATTERN)
_MULTILINE_CONTROLS = frozenset("\t\n\r")
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})  # format characters (bidi overrides, zero-width), line separators


def _refuse(field: str, problem: str, hint: str) -> ConfigError:
    return ConfigError(f"{field}: {problem}", hint=hint)


def check_text(field: str, text: object, *, max_chars: int, multiline: bool = False) -> str:
    """`text` if it is a string of at most `max_chars` encodable characters and no control characters.

    Args:
        field: the field's name, as the caller sent it (it starts the error message).
        text: the value.
        max_chars: the most characters the field may hold.
        multiline: allow tab, newline and carriage return, and format characters such as the
            zero-width joiner of an emoji (descriptions); one-line fields refuse all of them.

    Raises:
        ConfigError: not a string, too long, a control or invisible character, or a lone surrogate.
    """
    if not isinstance(text, str):
        raise _refuse(field, f"must be text, not {type(text).__name__}", "Send a JSON string.")
    if len(text) > max_chars:
        raise _refuse(field, f"is {len(text)} characters long; at most {max_chars} are accepted", "Shorten it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(field, "is not valid Unicode (a lone surrogate)", "Send UTF-8 text.") from None
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc" and not (multiline and char in _MULTILINE_CONTROLS):
            raise _refuse(
                field, f"holds the control character U+{ord(char):04X}", "Remove control characters (NUL included)."
            )
        if category in _INVISIBLE and not multiline:
            raise _refuse(
                field,
                f"holds the invisible character U+{ord(char):04X}",
                "Remove format characters (bidirectional overrides, zero-width characters) and line separators.",
            )
    return text


def check_name(kind: str, text: object) -> str:
    """A model or principal name: 1..200 of letters, digits, `-`, `_`, `.`, not starting with `.`.

    Raises:
        ConfigError: naming `kind` ("model", "principal", "parent") and the rule broken.
    """
    name = check_text(kind, text, max_chars=MAX_NAME_CHARS)
    if not name or not set(name) <= NAME_CHARS or name.startswith("."):
        raise _refuse(
            kind,
            f"bad name {name!r}",
            f"Use letters, digits, '-', '_' and '.', at most {MAX_NAME_CHARS} characters, not starting with '.'.",
        )
    return name


def check_model_name(text: object) -> str:
    """A model's name (see `check_name`)."""
    return check_name("model", text)


def check_principal_name(text: object) -> str:
    """A principal's name (see `check_name`)."""
    return check_name("principal", text)


def check_grant_target(text: object) -> str:
    """What a grant covers: a model's name, or `*` for every model."""
    return ANY_MODEL if text == ANY_MODEL else check_name("model", text)


def check_version_number(number: object, field: str = "number") -> int:
    """A version number: an integer from 1 to 2**31 - 1 (what PostgreSQL's INTEGER holds).

    Raises:
        ConfigError: not an integer (booleans included) or out of range.
    """
    if isinstance(number, bool) or not isinstance(number, int):
        raise _refuse(field, f"must be an integer, not {type(number).__name__}", "Send a version number.")
    if not 1 <= number <= MAX_VERSION_NUMBER:
        # A 5,000-digit number cannot even be printed (int max_str_digits): show its sign and size.
        shown = (
            str(number) if abs(number) < 10**30 else f"{'-' if number < 0 else ''}<{number.bit_length()}-bit number>"
        )
        raise _refuse(field, f"version number {shown} is outside 1..{MAX_VERSION_NUMBER}", "Use an existing version.")
    return number


def check_file_size(size: object, field: str = "size") -> int:
    """A file's size in bytes: 0 .. 2**63 - 1."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_BYTES:
        raise _refuse(field, f"is not an integer in 0..{MAX_FILE_BYTES}", "Send the file's byte count.")
    return size


def check_digest(text: object, field: str = "digest") -> str:
    """A blob digest: `sha256:` and 64 lower-case hex digits (71 characters)."""
    digest = check_text(field, text, max_chars=DIGEST_CHARS)
    if not _DIGEST.fullmatch(digest):
        raise _refuse(field, f"{digest!r} is not a digest", "Digests look like sha256:<64 lower-case hex digits>.")
    return digest


def check_optional_digest(text: object, field: str) -> str:
    """`""` (not given) or a digest (see `check_digest`)."""
    return "" if text == "" else check_digest(text, field)


def check_licence(text: object, field: str = "licence") -> str:
    """A licence name or SPDX expression, at most 100 characters on one line."""
    return check_text(field, text, max_chars=MAX_LICENCE_CHARS)


def check_source(text: object, field: str = "source") -> str:
    """Where a version came from (a URL), at most 2,048 characters on one line."""
    return check_text(field, text, max_chars=MAX_SOURCE_CHARS)


def check_description(text: object, field: str = "description") -> str:
    """A free-text description, at most 10,000 characters; tabs and line breaks allowed."""
    return check_text(field, text, max_chars=MAX_DESCRIPTION_CHARS, multiline=True)


def check_stage_name(text: object, field: str = "stage") -> str:
    """A stage's name as a caller spells it: 1..64 characters on one line (the policy says which exist)."""
    stage = check_text(field, text, max_chars=MAX_STAGE_CHARS)
    if not stage:
        raise _refuse(field, "is empty", "Name a stage from the policy, e.g. staging or production.")
    return stage


def check_token_id(text: object, field: str = "token_id") -> str:
    """A token's public id: 1..32 letters, digits or `-`."""
    token_id = check_text(field, text, max_chars=MAX_TOKEN_ID_CHARS)
    if not token_id or not set(token_id) <= TOKEN_ID_CHARS:
        raise _refuse(field, f"{token_id!r} is not a token id", "Token ids are the hex after `bst_` in a token.")
    return token_id


def check_layout(text: object, field: str = "layout") -> str:
    """`file` (one file) or `folder`."""
    if text not in LAYOUTS:
        raise _refuse(field, f"unknown layout {text!r}", "Use 'file' or 'folder'.")
    return str(text)


def parse_ref(text: object, field: str = "parent") -> tuple[str, int]:
    """`MODEL@NUMBER` as (model, number), both checked.

    Raises:
        ConfigError: not of that shape, a bad model name, or a number out of range.
    """
    ref = check_text(field, text, max_chars=MAX_NAME_CHARS + 1 + len(str(MAX_VERSION_NUMBER)))
    name, at, digits = ref.rpartition("@")
    # isdigit() accepts other scripts' digits ("٣"), and int() would read them; only ASCII is a number here.
    if not at or not digits.isascii() or not digits.isdigit():
        raise _refuse(field, f"{ref!r} is not MODEL@NUMBER", "Name a version like fraud-detector@3.")
    if len(digits) > len(str(MAX_VERSION_NUMBER)):
        raise _refuse(field, f"version number in {ref!r} is out of range", "Use an existing version.")
    return check_name(field, name), check_version_number(int(digits), field)


def normalise_member_path(text: object, field: str = "path") -> str:
    """The one spelling of a file's path inside a model: relative, `/`-separated, no `.` or `..`.

    Redundant spelling is normalised (`./y` and `a//y` become `y` and `a/y`); anything that could
    name a file outside the model or mean different files on different systems is refused:
    an empty path or `.`, a `..` segment (so `x/../y` never aliases `y`), an absolute path, a
    backslash (`a\\..\\b` on Windows), a trailing `/`, a segment over 255 bytes, a path over 1,024
    bytes or 32 levels, control characters.

    Raises:
        ConfigError: naming `field` and the offending path.
    """
    raw = check_text(field, text, max_chars=MAX_PATH_BYTES)
    hint = "Send a relative path inside the model, with '/' between folders, e.g. weights/model.safetensors."
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    if "\\" in raw:
        raise _refuse(field, f"{shown!r} holds a backslash", hint)
    if raw.startswith("/"):
        raise _refuse(field, f"{shown!r} is absolute", hint)
    if raw.endswith("/"):
        raise _refuse(field, f"{shown!r} names a folder, not a file", hint)
    if len(raw.encode("utf-8")) > MAX_PATH_BYTES:
        raise _refuse(field, f"{shown!r} is longer than {MAX_PATH_BYTES} bytes", hint)
    segments = [segment for segment in raw.split("/") if segment not in {"", "."}]
    if not segments:
        raise _refuse(field, f"{shown!r} names no file", hint)
    if ".." in segments:
        raise _refuse(field, f"{shown!r} has a '..' segment", hint)
    if len(segments) > MAX_PATH_DEPTH:
        raise _refuse(field, f"{shown!r} is {len(segments)} levels deep; at most {MAX_PATH_DEPTH}", hint)
    for segment in segments:
        if len(segment.encode("utf-8")) > MAX_PATH_SEGMENT_BYTES:
            raise _refuse(field, f"a segment of {shown!r} is longer than {MAX_PATH_SEGMENT_BYTES} bytes", hint)
    return "/".join(segments)


def check_member_paths(paths: Iterable[object], *, layout: str, field: str = "files") -> tuple[str, ...]:
    """Every path of one version, normalised (in the order given), refused as a set if they clash.

    Refused: no path or more than 10,000; two paths with one spelling after normalisation, or
    that differ only in case or Unicode normal form (one file on macOS and Windows); a path that
    is also another's folder (`a` beside `a/b`); `layout="file"` with other than one top-level name.

    Raises:
        ConfigError: naming `field` and the paths that clash.
    """
    check_layout(layout)
    normal = tuple(normalise_member_path(path, field) for path in paths)
    if not normal:
        raise _refuse(field, "a version needs at least one file", "Send the model's files.")
    if len(normal) > MAX_MEMBERS:
        raise _refuse(
            field, f"{len(normal)} files; at most {MAX_MEMBERS} are accepted", "Pack the model into fewer files."
        )
    if layout == "file" and (len(normal) != 1 or "/" in normal[0]):
        raise _refuse(
            field, "layout 'file' takes exactly one file at the top level", "Use layout 'folder' for several files."
        )
    seen: dict[str, str] = {}
    for path in normal:
        folded = unicodedata.normalize("NFC", path).casefold()
        if folded in seen:
            raise _refuse(
                field, f"{seen[folded]!r} and {path!r} name the same file", "Send each file once, under one name."
            )
        seen[folded] = path
    for folded, path in seen.items():
        parts = folded.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in seen:
                raise _refuse(
                    field, f"{seen[folder]!r} is a file and also the folder of {path!r}", "Rename one of them."
                )
    return normal
