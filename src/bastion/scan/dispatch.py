"""Recognise a format by its content, never by its name, and hand it to its plug-in.

Every format is a plug-in: a name, a priority, a `sniff` that looks at the first bytes
(and, for formats that loaders find elsewhere, at the end or at fixed offsets) and a
`scan`. `PLUGINS` is the one list of them; `scan_source` is a loop over it:

* `Tier.SIGNATURE` plug-ins match a signature at the start; the first one that matches,
  in priority order, reads the data.
* `Tier.ANYWHERE` plug-ins match structures that a loader finds wherever they are: a
  zip's directory at the end of whatever precedes it (zipfile, Keras), an HDF5
  superblock after a user block (h5py), a tar header (`torch.load` tries tar before
  pickle). They read the data whenever they match, besides any signature plug-in, so a
  file that is two formats at once is analysed as both.
* `Tier.GUESS` plug-ins try content that has no signature (a pickle may open with any
  opcode; text; protobuf); each may decline, and they run only when no signature matched.

A name is used only to fail closed: content that no plug-in recognises is reported as
not analysed when the file is named like a model, and as an unknown binary otherwise.
"""

# ruff: noqa: PLC0415  # format modules are imported on first use: start-up time counts in CI

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable
from typing import NamedTuple

from bastion.errors import ArtifactError, LimitExceeded, UnsupportedFormat
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.pickle.opcodes import STREAM_START_BYTES
from bastion.scan.source import ByteSource, MemorySource, source_from_bytes

# Named like a model, a checkpoint or an archive of them: content that matches no
# format is then reported as not analysed (exit 2), never passed as "unknown".
_MODEL_SUFFIXES = (
    ".pkl",
    ".pickle",
    ".pt",
    ".pth",
    ".pt2",
    ".ptl",
    ".joblib",
    ".ckpt",
    ".dill",
    ".sav",
    ".model",
    ".mdl",
    ".dat",
    ".npy",
    ".npz",
    ".h5",
    ".hdf5",
    ".keras",
    ".onnx",
    ".safetensors",
    ".gguf",
    ".pb",
    ".tflite",
    ".mar",
    ".z",
    ".gz",
    ".bz2",
    ".xz",
    ".lzma",
    ".lz4",
    ".zip",
    ".tar",
    ".tgz",
)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".joblib", ".ckpt", ".dill", ".sav", ".p", ".bin")
_PROBE = 1 << 16
_HEAD = 512
_HDF5 = b"\x89HDF\r\n\x1a\n"
_NPY = b"\x93NUMPY"
_TAR_CHECKSUM_FIRST = frozenset(b"01234567 \x00\x80\xff")
_MAX_IN_MEMORY = 128 << 20  # nested containers needing random access; keeps peak memory bounded
_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP_TAIL = _EOCD.size + 0xFFFF  # the record plus the longest comment


# What a pickle that imports something looks like, whichever reader parses it: a GLOBAL or
# INST line pair, or two short strings and a STACK_GLOBAL (memoized or not). Compiled on
# first use: most scans never need it, and start-up time counts.
_IMPORT_EVIDENCE = (
    rb"[ci][A-Za-z_][\w.]{0,200}\n[A-Za-z_][\w.]{0,200}\n"
    rb"|\x8c[\x01-\xc8][A-Za-z_][\w.]{0,199}\x94?\x8c[\x01-\xc8][A-Za-z_][\w.]{0,199}\x94?\x93"
)
_EVIDENCE_WINDOW = 1 << 20


class Tier(enum.Enum):
    """How a plug-in's match combines with the others' (see the module docstring)."""

    SIGNATURE = "signature"
    ANYWHERE = "anywhere"
    GUESS = "guess"


class Hit(NamedTuple):
    """What a sniff found: the kind it names (`"zlib"`, `"onnx"`) and the input's name."""

    kind: str
    name: str


Sniff = Callable[[bytes, "int | None", ByteSource], "str | None"]
"""sniff(head, size, src) -> kind or None. Pure: it may peek, never consume."""
Scan = Callable[[ScanContext, ByteSource, Location, int, Hit], "bool | None"]
"""scan(ctx, src, loc, depth, hit): False declines (the content was not this format)."""


class Plugin(NamedTuple):
    """One format: how to recognise it and how to scan it.

    (A NamedTuple rather than a frozen dataclass: as immutable, and it does not cost the
    scanner's start-up a generated __init__.)
    """

    name: str
    priority: int
    sniff: Sniff
    scan: Scan
    tier: Tier = Tier.SIGNATURE
    random_access: bool = False
    """The scan needs the whole input in memory (a streamed member is read in first)."""
    summary: str = ""
    declined_by_name: tuple[str, ...] = ()
    """A guess that matched and then declined fails closed for inputs named with these
    suffixes, when nothing else analysed them: named like this and starting like this,
    the input was meant to be this format."""
    declined_evidence: Callable[[bytes], str | None] | None = None
    """Likewise for content that shows the format's marks (its first MiB is passed): the
    reason to report it as not analysed, or None."""


def in_memory(src: ByteSource, limit: int = _MAX_IN_MEMORY) -> MemorySource:
    """The source as a random-access window (streams are read into memory, up to a limit)."""
    if isinstance(src, MemorySource):
        return src
    if src.size is not None and src.size > limit:
        raise LimitExceeded(f"{src.name}: a {src.size}-byte nested container is too large to analyse in memory")
    data = src.read_some(limit + 1)
    if len(data) > limit:
        raise LimitExceeded(f"{src.name}: nested container larger than {limit} bytes")
    return source_from_bytes(data, src.name)


def scan_source(ctx: ScanContext, src: ByteSource, loc: Location, name: str, depth: int) -> None:
    """Sniff `src` and scan it; any parse failure becomes a not-analysed finding."""
    try:
        _route(ctx, src, loc, name, depth)
    except LimitExceeded as err:
        ctx.incomplete(loc, f"{err.message}; analysis stopped", "limits", "scan.limit-exceeded")
    except UnsupportedFormat as err:
        ctx.incomplete(loc, err.message, "unsupported", "scan.unsupported-format")
    except ArtifactError as err:
        ctx.incomplete(loc, f"could not be fully analysed: {err.message}", "malformed")
    except Exception as err:  # a parser bug must never turn into "clean"
        ctx.incomplete(loc, f"could not be fully analysed (internal error {type(err).__name__}: {err})", "malformed")


def _route(ctx: ScanContext, src: ByteSource, loc: Location, name: str, depth: int) -> None:
    head = src.peek(_HEAD)
    if not head:
        return
    size = src.size
    matched: list[tuple[Plugin, str]] = []
    for plugin in _SIGNATURES:
        kind = plugin.sniff(head, size, src)
        if kind:
            matched.append((plugin, kind))
            break
    signature = bool(matched)
    for plugin in _ANYWHERE:
        kind = plugin.sniff(head, size, src)
        if kind:
            matched.append((plugin, kind))
    if len(matched) > 1 or (matched and matched[0][0].random_access):
        src = in_memory(src)  # several readers, or one that needs random access
    guess_src = src
    if matched and not signature and not isinstance(src, MemorySource):
        # A stream (a decompressed member) read by a tar scan cannot be read again, and a
        # gzip'ed pickle whose first block is also a tar header is unpickled by joblib:
        # the guesses read a buffered copy of its start (pickles that end within it).
        guess_src = source_from_bytes(src.peek(_PROBE), src.name)
    start = src.tell()
    analysed = False
    for plugin, kind in sorted(matched, key=_priority) if len(matched) > 1 else matched:
        _rewind(src, start)
        analysed = plugin.scan(ctx, src, loc, depth, Hit(kind, name)) is not False or analysed
    if not signature:
        if guess_src is src:
            _rewind(src, start)
        analysed = _guess(ctx, guess_src, loc, name, depth, head, analysed=analysed)
    if not analysed:
        _unknown(ctx, loc, name)


def _priority(match: tuple[Plugin, str]) -> int:
    return match[0].priority


def _rewind(src: ByteSource, start: int) -> None:
    if isinstance(src, MemorySource):
        src.seek(start)


def _guess(
    ctx: ScanContext, src: ByteSource, loc: Location, name: str, depth: int, head: bytes, *, analysed: bool
) -> bool:
    """Try the guesses in order; True once one (or an earlier plug-in) analysed the input."""
    start = src.tell()
    for plugin in _GUESSES:
        kind = plugin.sniff(head, src.size, src)
        if not kind:
            continue
        if plugin.random_access:
            src = in_memory(src)
        _rewind(src, start)
        if plugin.scan(ctx, src, loc, depth, Hit(kind, name)) is not False:
            return True
        if not analysed and name.lower().endswith(plugin.declined_by_name):
            raise ArtifactError(f"{name} is named like a {plugin.summary} and starts like one, but does not parse")
        if not analysed and plugin.declined_evidence is not None:
            _rewind(src, start)
            window = src.bytes_at(start, _EVIDENCE_WINDOW) if isinstance(src, MemorySource) else src.peek(_PROBE)
            reason = plugin.declined_evidence(window)
            if reason is not None:
                raise ArtifactError(reason)
        _rewind(src, start)
    return analysed


def _unknown(ctx: ScanContext, loc: Location, name: str) -> None:
    # Content that no plug-in recognises cannot be run by the loaders Bastion knows:
    # an unpickler rejects its first byte unless it is an opcode (and every opcode was
    # tried as a pickle), and the other code-running loaders need the signatures above.
    # Blocking it would block every image, tokenizer and raw weight file on a hub, so it
    # is reported, not blocking; a name that promises a model fails closed instead.
    if name.lower().endswith(_MODEL_SUFFIXES):
        raise UnsupportedFormat(f"named like a model file ({name}) but its content matches no format Bastion knows")
    ctx.saw("unknown")
    ctx.add(
        "scan.unknown-format",
        Severity.LOW,
        loc,
        "binary content of a format Bastion does not recognise; no loader Bastion knows would run it",
        "unknown",
    )


# -- sniffs ------------------------------------------------------------------------------


def _sniff_safetensors(head: bytes, size: int | None, _src: ByteSource) -> str | None:
    # An 8-byte little-endian header length, then the JSON header. Checked before the
    # pickle and zlib magics, which a header length's first byte can equal (0x80, 0x78);
    # a pickle cannot pass for this, as its bytes 2-7 make the "length" exceed the file.
    if len(head) < 10 or head[8:9] != b"{" or head[9:10] not in (b'"', b"}", b" ", b"\n"):
        return None
    length = int.from_bytes(head[:8], "little")
    if head[9:10] == b'"':
        return "safetensors" if length >= 2 else None  # an overrun is safetensors' problem to report
    return "safetensors" if length >= 2 and (size is None or length <= size - 8) else None


def _sniff_zip(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "zip" if head.startswith((b"PK\x03\x04", b"PK\x05\x06")) else None


def _sniff_pickle(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "pickle" if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5 else None


def _sniff_npy(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "npy" if head.startswith(_NPY) else None


def _sniff_compressed(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    # compressed.sniff knows the loaders' magics (zlib, .lzma, joblib's ZF ...). Its module is
    # imported only here: inputs that match a signature before it (every PROTO pickle) skip it.
    from bastion.scan.formats import compressed

    return compressed.sniff(head)


def _sniff_gguf(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "gguf" if head.startswith(b"GGUF") else None


def _sniff_hdf5(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "hdf5" if head.startswith(_HDF5) else None


def _sniff_hdf5_userblock(head: bytes, size: int | None, src: ByteSource) -> str | None:
    # h5py looks for the superblock at 0, 512, 1024, 2048, ...: a user block of any
    # content (a pickle, a script) may precede it, and Keras loads the model all the same.
    if size is None or size < 512 + len(_HDF5) or head.startswith(_HDF5) or not isinstance(src, MemorySource):
        return None
    offset = 512
    while offset + len(_HDF5) <= size:
        if src.bytes_at(offset, len(_HDF5)) == _HDF5:
            return "hdf5"
        offset *= 2
    return None


def _sniff_tar(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    # tarfile (and so `torch.load`, which tries tar first) takes any 512-byte header whose
    # checksum is right; tararchive.sniff checks it as tarfile does. The checksum field opens
    # with an octal digit, a space, a NUL or a base-256 marker: other heads skip the import.
    if len(head) < 512 or head[148] not in _TAR_CHECKSUM_FIRST:
        return None
    from bastion.scan.formats import tararchive

    return "tar" if tararchive.sniff(head) else None


def _sniff_7z(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "7z" if head.startswith(b"7z\xbc\xaf\x27\x1c") else None


def _sniff_rar(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "rar" if head.startswith(b"Rar!\x1a\x07") else None


def _sniff_zip_directory(head: bytes, size: int | None, src: ByteSource) -> str | None:
    # zipfile and Keras find a zip by the end-of-central-directory record, so a zip can be
    # preceded by anything (a script, a pickle, another format): look where they look.
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")) or not isinstance(src, MemorySource) or size is None:
        return None
    if size < _EOCD.size:
        return None
    at = src.rfind(b"PK\x05\x06", max(0, size - _ZIP_TAIL))
    record = src.bytes_at(at, _EOCD.size) if at >= 0 else b""
    if len(record) != _EOCD.size:
        return None
    _sig, _disk, _cd_disk, _here, count, cd_size, cd_offset, _clen = _EOCD.unpack(record)
    if count == 0:
        return None  # an empty directory lists nothing a loader could read
    if src.bytes_at(at - 20, 4) == b"PK\x06\x07":
        return "zip"  # zip64: the reader follows the locator to the real directory
    shift = at - (cd_offset + cd_size)
    return "zip" if shift >= 0 and src.bytes_at(cd_offset + shift, 4) == b"PK\x01\x02" else None


def _sniff_any_opcode(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    return "pickle" if head[0] in STREAM_START_BYTES else None


def _sniff_text(head: bytes, _size: int | None, _src: ByteSource) -> str | None:
    if not head:
        return None
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.start >= len(head) - 3:
                return "text"  # a character cut by the peek window
        else:
            return "text"
    if head[:4].count(0) or head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        # A JSON object in UTF-16/32 or behind a BOM: json.loads(bytes), as Keras reads
        # config.json, accepts it.
        from bastion.scan.formats import keras

        return "text" if keras.looks_like_wide_json(head) else None
    return None


def _sniff_protobuf(head: bytes, _size: int | None, src: ByteSource) -> str | None:
    # Protobuf has no signature and writers may order fields freely: any first byte that is
    # a valid field key (wire type 0, 1, 2 or 5) may open an ONNX model or a TF graph.
    if src.name.lower().endswith((".onnx", ".pb")):
        return "probe"
    if len(head) < 2 or head[0] & 0x07 not in (0, 1, 2, 5) or head[0] >> 3 == 0:
        return None
    return "probe"


# -- scans: each format module keeps its scanner; these adapt the call -------------------


def _scan_safetensors(ctx: ScanContext, src: ByteSource, loc: Location, _depth: int, _hit: Hit) -> None:
    from bastion.scan.formats.safetensors import scan_safetensors

    scan_safetensors(ctx, src, loc)


def _scan_zip(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, _hit: Hit) -> None:
    from bastion.scan.formats.ziparchive import scan_zip

    scan_zip(ctx, in_memory(src), loc, depth)


def _scan_pickle(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, _hit: Hit) -> None:
    from bastion.scan.formats.pickle import scan_pickle

    scan_pickle(ctx, src, loc, depth)


def _scan_npy(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, _hit: Hit) -> None:
    from bastion.scan.formats.numpy import scan_npy

    scan_npy(ctx, src, loc, depth)


def _scan_compressed(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, hit: Hit) -> None:
    from bastion.scan.formats.compressed import scan_compressed

    scan_compressed(ctx, src, loc, hit.kind, hit.name, depth)


def _scan_gguf(ctx: ScanContext, src: ByteSource, loc: Location, _depth: int, _hit: Hit) -> None:
    from bastion.scan.formats.gguf import scan_gguf

    scan_gguf(ctx, src, loc)


def _scan_hdf5(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, _hit: Hit) -> None:
    from bastion.scan.formats.keras import scan_hdf5

    scan_hdf5(ctx, in_memory(src), loc, depth)


def _scan_tar(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, _hit: Hit) -> None:
    from bastion.scan.formats.tararchive import scan_tar

    scan_tar(ctx, src, loc, depth)


def _refuse(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, hit: Hit) -> None:
    del ctx, src, loc, depth
    raise UnsupportedFormat(f"{hit.kind} archives are not unpacked by Bastion; their members cannot be analysed")


def _scan_tentative_pickle(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, _hit: Hit) -> bool:
    """Scan data that starts with a pickle opcode but no PROTO; False if it is not a pickle.

    The unpickler does not need PROTO first, so any opcode can open a stream. A window
    on memory is tried in place; a stream is probed on its buffered head and, only if
    that parses, scanned for real.
    """
    from bastion.scan.formats.pickle import scan_pickle

    if isinstance(src, MemorySource):
        return scan_pickle(ctx, src, loc, depth, tentative=True)
    probe = src.peek(_PROBE)
    trial = ScanContext(ctx.limits, ctx.dispatch, ctx.allow_globals)
    parsed = scan_pickle(trial, source_from_bytes(probe, src.name), loc, depth, tentative=True)
    if not parsed and (len(probe) < _PROBE or not any(f.rule_id == "scan.incomplete" for f in trial.findings)):
        return False  # the whole stream was tried
    return scan_pickle(ctx, src, loc, depth)


def _pickle_evidence(data: bytes) -> str | None:
    """Why binary data that opens with an opcode and imports names, yet did not emulate, fails closed.

    Where the emulation and CPython's unpickler disagree (an argument spelt in a way only one
    of them accepts), the unpickler reads on and imports what the stream names; passing such
    a file as an unknown binary would pass its payload. Text is left to the text scan: word
    lists would look like GLOBAL lines.
    """
    if _sniff_text(data[:_HEAD], None, source_from_bytes(b"", "")) is not None:
        return None
    match = re.search(_IMPORT_EVIDENCE, data)  # re caches the compiled pattern
    if match is None:
        return None
    return (
        f"opens with a pickle opcode and imports names (at byte {match.start()}), but could not be "
        "emulated; an unpickler may read it differently"
    )


def _scan_text(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, hit: Hit) -> None:
    data = src.read_some(ctx.limits.max_text_bytes)
    from bastion.scan import secrets

    document = None
    if b"{" in data[:256]:  # "{" is byte 0x7B in every encoding json.loads detects
        from bastion.scan.formats import keras

        document = keras.json_document(data)  # decoded as json.loads(bytes) would: BOM, UTF-16, UTF-32
    text = document if document is not None else data.decode("utf-8", "replace")
    lower = hit.name.lower()
    if document is not None and (
        secrets.scan_notebook(ctx, text, loc) or keras.scan_config_text(ctx, text, loc, lower, depth)
    ):
        return
    if lower.endswith((".pb", ".onnx")):
        from bastion.scan.formats import protobuf_models

        kind = protobuf_models.sniff(data[:512], lower)
        if kind is not None:
            protobuf_models.scan_protobuf_model(ctx, source_from_bytes(data, src.name), loc, kind)
            return
    from bastion.scan.formats import model_text

    model_text.scan_model_text(ctx, text, loc, lower)  # saved_model.pbtxt, chat_template.jinja
    ctx.saw("text")
    secrets.scan_text_for_secrets(ctx, text, loc, "text")


def _scan_protobuf(ctx: ScanContext, src: ByteSource, loc: Location, _depth: int, hit: Hit) -> bool:
    from bastion.scan.formats import protobuf_models

    memory = in_memory(src)
    kind = protobuf_models.sniff(memory.peek(_HEAD), hit.name.lower()) or "probe"
    if kind != "probe" or memory.peek(1) == b"\x08":
        # Named .onnx/.pb, or opening as ONNX and SavedModel files do: a model that fails
        # to parse deeper down is a damaged model, reported as not analysed.
        if protobuf_models.scan_protobuf_model(ctx, memory, loc, kind):
            return True
        return _protobuf_data(ctx, memory)
    # Any other first byte is only a guess: a parse failure means "not a model".
    trial = ScanContext(ctx.limits, ctx.dispatch, ctx.allow_globals)
    try:
        recognised = protobuf_models.scan_protobuf_model(trial, memory, loc, kind)
    except (ArtifactError, LimitExceeded):
        recognised = False
    if recognised:
        ctx.findings.extend(trial.findings)
        for fmt in trial.formats:
            ctx.saw(fmt)
        return True
    return _protobuf_data(ctx, memory)


def _protobuf_data(ctx: ScanContext, src: MemorySource) -> bool:
    # A well-formed protobuf message that is neither ONNX nor TensorFlow (a SentencePiece
    # `tokenizer.model`, a TFLite-free config): data that no code-running loader reads,
    # since no unpickler accepts its first byte. Recognised so that its name cannot make
    # it fail closed; every top-level field must parse to the last byte.
    from bastion.scan.formats import protobuf_models

    try:
        count = sum(1 for _ in protobuf_models.fields(src, 0, src.size, protobuf_models._Budget()))
    except (ArtifactError, LimitExceeded):
        return False
    if count == 0:
        return False
    ctx.saw("protobuf")
    return True


PLUGINS: tuple[Plugin, ...] = tuple(
    sorted(
        (
            Plugin("safetensors", 10, _sniff_safetensors, _scan_safetensors, summary="safetensors header and offsets"),
            Plugin("zip", 20, _sniff_zip, _scan_zip, random_access=True, summary="zip: PyTorch, .keras, .npz"),
            Plugin("pickle", 30, _sniff_pickle, _scan_pickle, summary="pickle with a PROTO opcode"),
            Plugin("npy", 40, _sniff_npy, _scan_npy, summary="NumPy .npy, versions 1-3"),
            Plugin(
                "compressed",
                50,
                _sniff_compressed,
                _scan_compressed,
                summary="gzip, bzip2, xz, lzma, zlib, lz4, joblib's ZF container",
            ),
            Plugin("gguf", 60, _sniff_gguf, _scan_gguf, summary="GGUF metadata and chat templates"),
            Plugin("7z", 90, _sniff_7z, _refuse, summary="7z: refused as not analysable"),
            Plugin("rar", 91, _sniff_rar, _refuse, summary="RAR: refused as not analysable"),
            Plugin("hdf5", 70, _sniff_hdf5, _scan_hdf5, random_access=True, summary="HDF5 (Keras .h5)"),
            Plugin(
                "hdf5-userblock",
                75,
                _sniff_hdf5_userblock,
                _scan_hdf5,
                Tier.ANYWHERE,
                random_access=True,
                summary="HDF5 whose superblock follows a user block",
            ),
            Plugin("tar", 80, _sniff_tar, _scan_tar, Tier.ANYWHERE, summary="tar, ustar and V7 headers"),
            Plugin(
                "zip-directory",
                95,
                _sniff_zip_directory,
                _scan_zip,
                Tier.ANYWHERE,
                random_access=True,
                summary="zip found by its directory at the end, after anything",
            ),
            Plugin(
                "pickle-opcode",
                100,
                _sniff_any_opcode,
                _scan_tentative_pickle,
                Tier.GUESS,
                summary="pickle",
                declined_by_name=_PICKLE_SUFFIXES,
                declined_evidence=_pickle_evidence,
            ),
            Plugin("text", 110, _sniff_text, _scan_text, Tier.GUESS, summary="notebooks, JSON configs, secrets"),
            Plugin(
                "protobuf",
                120,
                _sniff_protobuf,
                _scan_protobuf,
                Tier.GUESS,
                random_access=True,
                summary="ONNX, TensorFlow graphs, other protobuf data",
            ),
        ),
        key=lambda p: p.priority,
    )
)
"""Every format Bastion reads, in priority order: the one place a format is registered."""

_SIGNATURES = tuple(p for p in PLUGINS if p.tier is Tier.SIGNATURE)
_ANYWHERE = tuple(p for p in PLUGINS if p.tier is Tier.ANYWHERE)
_GUESSES = tuple(p for p in PLUGINS if p.tier is Tier.GUESS)
