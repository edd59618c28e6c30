"""Recognise a format by its content, never by its name, and hand it to its scanner.

A name is used only to fail closed: a file named like a model whose content matches
no known format is reported as not analysed, not passed over as "unknown".
"""

# ruff: noqa: PLC0415  # format modules are imported on first use: start-up time counts in CI

from __future__ import annotations

from bastion.errors import ArtifactError, LimitExceeded, UnsupportedFormat
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats import compressed, tararchive
from bastion.scan.pickle.opcodes import STREAM_START_BYTES
from bastion.scan.source import ByteSource, MemorySource, source_from_bytes

_MODEL_SUFFIXES = (
    ".pkl",
    ".pickle",
    ".pt",
    ".pth",
    ".joblib",
    ".ckpt",
    ".dill",
    ".sav",
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
)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".joblib", ".ckpt", ".dill", ".sav", ".p", ".bin")
_PROBE = 1 << 16
_HDF5 = b"\x89HDF\r\n\x1a\n"
_NPY = b"\x93NUMPY"
_MAX_IN_MEMORY = 128 << 20  # nested containers needing random access; keeps peak memory bounded


def _looks_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start >= len(head) - 3  # a character cut by the peek window
    return True


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


def _route(ctx: ScanContext, src: ByteSource, loc: Location, name: str, depth: int) -> None:  # noqa: C901, PLR0912  # one flat routing table
    head = src.peek(512)
    lower = name.lower()
    if not head:
        return
    if _is_safetensors(head, src.size):
        from bastion.scan.formats.safetensors import scan_safetensors

        scan_safetensors(ctx, src, loc)
    elif head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        from bastion.scan.formats.ziparchive import scan_zip

        scan_zip(ctx, in_memory(src), loc, depth)
    elif head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        from bastion.scan.formats.pickle import scan_pickle

        scan_pickle(ctx, src, loc, depth)
    elif head.startswith(_NPY):
        from bastion.scan.formats.numpy import scan_npy

        scan_npy(ctx, src, loc, depth)
    elif (kind := compressed.sniff(head)) is not None:
        from bastion.scan.formats.compressed import scan_compressed

        scan_compressed(ctx, src, loc, kind, name, depth)
    elif head.startswith(b"GGUF"):
        from bastion.scan.formats.gguf import scan_gguf

        scan_gguf(ctx, src, loc)
    elif head.startswith(_HDF5) or (
        isinstance(src, MemorySource) and any(src.bytes_at(o, 8) == _HDF5 for o in (512, 1024, 2048))
    ):
        from bastion.scan.formats.keras import scan_hdf5

        scan_hdf5(ctx, in_memory(src), loc)
    elif tararchive.sniff(head):
        from bastion.scan.formats.tararchive import scan_tar

        scan_tar(ctx, src, loc, depth)
    elif head.startswith(b"7z\xbc\xaf\x27\x1c"):
        raise UnsupportedFormat("7z archives are not unpacked by Bastion; their members cannot be analysed")
    elif head.startswith(b"Rar!\x1a\x07"):
        raise UnsupportedFormat("RAR archives are not unpacked by Bastion; their members cannot be analysed")
    elif head[0] in STREAM_START_BYTES and _tentative_pickle(ctx, src, loc, depth):
        return
    elif head[0] in STREAM_START_BYTES and lower.endswith(_PICKLE_SUFFIXES):
        raise ArtifactError(f"{name} is named like a pickle and starts like one, but does not parse as one")
    elif _looks_text(head) or _looks_wide_json(head):
        _scan_text(ctx, src, loc, name, depth)
    elif not _scan_protobuf(ctx, src, loc, head, lower):
        _unknown(ctx, loc, name, lower)


def _is_safetensors(head: bytes, size: int | None) -> bool:
    # An 8-byte little-endian header length, then the JSON header. Checked before the
    # pickle and zlib magics, which a header length's first byte can equal (0x80, 0x78);
    # a pickle cannot pass for this, as its bytes 2-7 make the "length" exceed the file.
    if len(head) < 10 or head[8:9] != b"{" or head[9:10] not in (b'"', b"}", b" ", b"\n"):
        return False
    length = int.from_bytes(head[:8], "little")
    if head[9:10] == b'"':
        return length >= 2  # a header that overruns the file is safetensors' problem to report
    return length >= 2 and (size is None or length <= size - 8)


def _scan_protobuf(ctx: ScanContext, src: ByteSource, loc: Location, head: bytes, lower: str) -> bool:
    from bastion.scan.formats import protobuf_models

    kind = protobuf_models.sniff(head, lower)
    return kind is not None and protobuf_models.scan_protobuf_model(ctx, in_memory(src), loc, kind)


def _unknown(ctx: ScanContext, loc: Location, name: str, lower: str) -> None:
    if lower.endswith(_MODEL_SUFFIXES):
        raise UnsupportedFormat(f"named like a model file ({name}) but its content matches no format Bastion knows")
    ctx.saw("unknown")
    ctx.add(
        "scan.unknown-format",
        Severity.LOW,
        loc,
        "binary content of a format Bastion does not recognise; no loader Bastion knows would run it",
        "unknown",
    )


def _tentative_pickle(ctx: ScanContext, src: ByteSource, loc: Location, depth: int) -> bool:
    """Scan data that starts with a pickle opcode but no PROTO; False if it is not a pickle.

    The unpickler does not need PROTO first, so any opcode can open a stream. A window
    on memory is tried in place and rewound; a stream is probed on its buffered head
    and, only if that parses, scanned for real.
    """
    from bastion.scan.formats.pickle import scan_pickle

    if isinstance(src, MemorySource):
        start = src.tell()
        if scan_pickle(ctx, src, loc, depth, tentative=True):
            return True
        src.seek(start)
        return False
    probe = src.peek(_PROBE)
    trial = ScanContext(ctx.limits, ctx.dispatch, ctx.allow_globals)
    if not scan_pickle(trial, source_from_bytes(probe, src.name), loc, depth, tentative=True):
        if len(probe) < _PROBE:
            return False  # the whole stream was tried
        if not any(f.rule_id == "scan.incomplete" for f in trial.findings):
            return False
    return scan_pickle(ctx, src, loc, depth)


def _looks_wide_json(head: bytes) -> bool:
    # A JSON object in UTF-16/32 or behind a BOM: json.loads(bytes), as Keras reads config.json, accepts it.
    if head[:4].count(0) == 0 and not head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return False
    from bastion.scan.formats import keras

    return keras.looks_like_wide_json(head)


def _scan_text(ctx: ScanContext, src: ByteSource, loc: Location, name: str, depth: int) -> None:
    data = src.read_some(ctx.limits.max_text_bytes)
    from bastion.scan import secrets
    from bastion.scan.formats import keras

    document = keras.json_document(data)  # decoded as json.loads(bytes) would: BOM, UTF-16, UTF-32
    text = document if document is not None else data.decode("utf-8", "replace")
    lower = name.lower()
    if document is not None and (secrets.scan_notebook(ctx, text, loc) or keras.scan_config_text(ctx, text, loc, lower)):
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
