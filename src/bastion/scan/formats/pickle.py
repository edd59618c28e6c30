"""Pickle streams, and everything built on them (legacy PyTorch, joblib, NumPy object arrays).

A file may hold several pickles back to back (legacy `torch.save` writes five, and an
attacker may append one for a loader that reads on), so every stream is emulated until
the data stops looking like pickle; what follows the last STOP is reported.
"""

from __future__ import annotations

import io
import re

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats import joblib, tararchive
from bastion.scan.formats.joblib import JoblibMachine, Reader, UnframedSource
from bastion.scan.pickle.opcodes import STREAM_START_BYTES
from bastion.scan.pickle.rules import is_dangerous, judge_global
from bastion.scan.pickle.symbolic import BuildHook, Emulation, Event, Global, Machine
from bastion.scan.source import ByteSource, MemorySource, StreamSource, source_from_bytes

# GLOBAL/INST as raw bytes: what a divergent reader finds where a linear one sees data.
_RAW_GLOBAL = re.compile(rb"[ci]([A-Za-z_][\w.]{0,200})\n([A-Za-z_][\w.]{0,200})\n")

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_LEGACY_PICKLES = 5  # magic, protocol, sys_info, the object, storage keys

_EVENT_RULES: dict[Event, tuple[str, Severity]] = {
    Event.CALL_ON_RESULT: ("pickle.call-chain", Severity.HIGH),
    Event.CALL_NON_CALLABLE: ("pickle.call-chain", Severity.HIGH),
    Event.BUILD_ON_GLOBAL: ("pickle.mutated-global", Severity.HIGH),
    Event.BUILD_DUNDER: ("pickle.build-dunder", Severity.HIGH),
    Event.COMPUTED_GLOBAL: ("pickle.computed-global", Severity.HIGH),
    Event.EXTENSION: ("pickle.extension-registry", Severity.HIGH),
    Event.FRAME_QUIRK: ("pickle.frame-violation", Severity.HIGH),
}
_MAX_GLOBAL_FINDINGS = 200
# What pickle.load's reading of joblib's array bytes is judged by: the names it imports.
# Structural events there (a computed STACK_GLOBAL, a call on a result) are what any
# array, or the nested pickle of an object array, produces when read as opcodes.
_LINEAR_RULES = frozenset({"pickle.dangerous-global", "pickle.unknown-callable", "pickle.attribute-path"})
_EMBEDDED_LOADERS = frozenset(
    {
        "pickle.loads",
        "_pickle.loads",
        "cPickle.loads",
        "dill.loads",
        "dill._dill.loads",
        "torch.storage._load_from_bytes",
    }
)


def sniff(head: bytes) -> bool:
    """True when `head` opens with PROTO of a protocol CPython reads (0-5).

    Streams without PROTO (protocols 0 and 1, or any opcode first) are recognised only
    by parsing them: see `scan_pickle(..., tentative=True)`.
    """
    return len(head) > 1 and head[0] == 0x80 and head[1] <= 5


def _distinct_globals(globals_seen: list[Global]) -> list[Global]:
    """One Global per name, carrying every use any of its imports had (first offset kept)."""
    merged: dict[tuple[str, str], Global] = {}
    for g in globals_seen:
        first = merged.get((g.module, g.name))
        if first is None:
            first = merged[(g.module, g.name)] = Global(g.module, g.name, g.pos, dict(g.uses))
        else:
            for how, pos in g.uses.items():
                first.uses.setdefault(how, pos)
        # Calls are judged by their arguments: every import's calls count, and are kept.
        first.call_count += g.call_count
        for args in g.calls or ():
            first.called_with(args)
        if g.set_attrs:
            first.sets(g.set_attrs)
    return list(merged.values())


def report_emulation(ctx: ScanContext, emu: Emulation, loc: Location, fmt: str) -> None:
    """Turn what a stream did into findings: judged globals, then structural events."""
    judged = [(g, j) for g in _distinct_globals(emu.globals) if (j := judge_global(g, ctx.allow_globals)) is not None]
    judged.sort(key=lambda pair: -pair[1].severity)
    for g, judgement in judged[:_MAX_GLOBAL_FINDINGS]:
        ctx.add(judgement.rule_id, judgement.severity, loc.at(g.pos), judgement.message, fmt, g.dotted)
    if len(judged) > _MAX_GLOBAL_FINDINGS:
        rest = judged[_MAX_GLOBAL_FINDINGS:]
        ctx.add(
            "pickle.more-globals",
            max(j.severity for _g, j in rest),
            loc,
            f"{len(rest)} more imported names were flagged; the most severe are listed above",
            fmt,
        )
    reported: set[Event] = set()
    for obs in emu.observations:
        if obs.event in reported and obs.event is not Event.FRAME_QUIRK:
            continue
        reported.add(obs.event)
        rule_id, severity = _EVENT_RULES[obs.event]
        detail = f": {obs.detail}" if obs.detail else ""
        ctx.add(rule_id, severity, loc.at(obs.pos), f"the stream {obs.event.value}{detail}", fmt, obs.detail)


class _Stream:
    """One pass over a source that may hold several pickles and joblib's inline arrays.

    Streams are read linearly, as CPython's C unpickler reads them (pickle.load,
    torch.load). A joblib array wrapper shows the file is joblib's: a window on memory
    is then read again from its start the way joblib.load reads it (`Reader.JOBLIB`),
    and of the linear reading past the wrapper only what would run code is kept (both
    loaders may be pointed at the file). See `scan_pickle` for forward-only streams.
    """

    def __init__(
        self, ctx: ScanContext, src: ByteSource, loc: Location, fmt: str, depth: int, reader: Reader = Reader.PLAIN
    ) -> None:
        self.ctx = ctx
        self.src = src
        self.loc = loc
        self.fmt = fmt
        self.depth = depth
        self.reader = reader
        self.sidecars: set[str] = set()
        self.joblib_at: int | None = None

    def _embedded(self, data: bytes, pos: int, func: str) -> None:
        # Only bytes handed to a loader are a file to analyse; bytes given to anything
        # else (numpy's _frombuffer array data) are data, whatever they happen to start with.
        ctx = self.ctx
        module, _, name = func.rpartition(".")
        if func not in _EMBEDDED_LOADERS and not is_dangerous(module, name):
            return
        ctx.embedded += 1
        if ctx.embedded > ctx.limits.max_embedded_pickles:
            return
        ctx.nested(
            source_from_bytes(data, "embedded"), self.loc.inside(f"<embedded@{pos}>"), "embedded", self.depth + 1
        )

    def _spot_joblib(self, machine: Machine, target: object, src: ByteSource, pos: int) -> None:
        # pickle.load goes on after a wrapper, reading joblib's array bytes as opcodes:
        # let the linear reading run on, and note where joblib's reading parts from it.
        del machine, src
        if self.joblib_at is None and joblib.wrapper_class(target) is not None:
            self.joblib_at = pos

    def _joblib_build(self, machine: Machine, target: object, src: ByteSource, pos: int) -> None:
        # joblib's load_build: after BUILD, a wrapper on top of the stack reads from the file.
        name = joblib.wrapper_class(target)
        if name is None or not isinstance(machine, JoblibMachine) or not isinstance(src, UnframedSource):
            return
        inline = name in joblib.INLINE_WRAPPERS
        if inline and self.reader is Reader.COMPAT:
            return  # ZipNumpyUnpickler knows only the sidecar wrappers
        self.ctx.saw("joblib")
        attrs = machine.attributes_of(target)
        joblib.mark_rebuilt_classes(name, attrs, pos)
        if not inline:
            filename = attrs.get("filename")
            key = f"{name}:{filename}"
            if key not in self.sidecars:
                self.sidecars.add(key)
                joblib.follow_sidecar(self.ctx, self.loc, name, filename, self.depth)
            return
        layout = joblib.array_layout(attrs, pos)
        if not layout.has_object:
            joblib.skip_inline_array(src.file, layout)
            return
        # An array of objects follows as a whole pickle, read by a plain pickle._Unpickler
        # on the file (no wrapper handling), from wherever the file stands.
        inner = self._emulate(UnframedSource(src.file), None)
        if inner.error is not None:
            raise ArtifactError(f"object array at byte {pos}: {inner.error}")

    def _emulate(self, src: ByteSource, hook: BuildHook | None) -> Emulation:
        machine = JoblibMachine(self.ctx.limits, self._embedded, hook) if hook is not None else None
        emu = (machine or Machine(self.ctx.limits, self._embedded, None)).run(src)
        report_emulation(self.ctx, emu, self.loc, self.fmt)
        return emu

    def emulate_one(self) -> Emulation:
        """Emulate the next pickle as the stream's reader would load it."""
        if self.reader is not Reader.PLAIN:
            return self._emulate(UnframedSource(self.src), self._joblib_build)
        machine = Machine(self.ctx.limits, self._embedded, self._spot_joblib)
        emu = machine.run(self.src)
        report_emulation(self.ctx, emu, self.loc, self.fmt)
        for obs in emu.observations:
            if obs.event is Event.FRAME_QUIRK:
                self._hidden_globals(obs.pos)
        return emu

    def _hidden_globals(self, pos: int) -> None:
        # Readers disagree on where an argument that straddles a frame ends (CPython's C
        # unpickler drops what is left of the frame); look for names in those bytes.
        if not isinstance(self.src, MemorySource):
            return
        window = self.src.bytes_at(pos, 4096)
        for match in _RAW_GLOBAL.finditer(window):
            module, name = (g.decode("latin-1") for g in match.groups())
            if is_dangerous(module, name):
                self.ctx.add(
                    "pickle.dangerous-global",
                    Severity.CRITICAL,
                    self.loc.at(pos + match.start()),
                    f"imports {module}.{name}, hidden in bytes that straddle a frame boundary, where readers disagree",
                    self.fmt,
                    f"{module}.{name}",
                )

    def run(self, tentative: bool) -> bool:
        """Emulate every stream; False when `tentative` and the data turned out not to be pickle."""
        ctx = self.ctx
        before = len(ctx.findings)
        start = self.src.tell()
        emu = self.emulate_one()
        if start == 0 and self.reader is Reader.PLAIN:
            ctx.first_pickle_refs[self.loc] = list(emu.persistent)
        if self.joblib_at is not None and isinstance(self.src, MemorySource):
            self._keep_linear_reading(before, self.joblib_at)
            self.src.seek(start)
            self.reader = Reader.JOBLIB
            emu = self.emulate_one()
        if emu.error is not None:
            if tentative and not self._worth_keeping(before):
                del ctx.findings[before:]
                return False
            ctx.incomplete(
                self.loc.at(emu.error_pos),
                f"the pickle stream is malformed or truncated ({emu.error}); it cannot be fully analysed",
                self.fmt,
            )
        elif emu.value == TORCH_LEGACY_MAGIC:
            ctx.saw("torch-legacy")
            self._legacy_rest()
        else:
            self._further_streams()
        return True

    def _keep_linear_reading(self, before: int, parted_at: int) -> None:
        # Up to the first wrapper both readings agree (joblib's run reports it again).
        # Past it, joblib's bytes are data and pickle.load's a malformed stream, as a
        # rule: keep only the dangerous names pickle.load would import there.
        ctx = self.ctx
        linear = ctx.findings[before:]
        del ctx.findings[before:]
        ctx.findings.extend(
            f
            for f in linear
            if f.location.offset is None
            or f.location.offset <= parted_at
            or (f.severity >= Severity.HIGH and f.rule_id in _LINEAR_RULES)
        )

    def _legacy_rest(self) -> None:
        # Legacy torch.save: after the magic number, pickles of the protocol version,
        # sys_info, the object and the storage keys; then the storages' raw bytes.
        storages: dict[str, int] = {}
        for index in range(1, TORCH_LEGACY_PICKLES):
            emu = self.emulate_one()
            if emu.error is not None:
                raise ArtifactError(f"legacy PyTorch file is truncated or malformed ({emu.error})")
            if index == TORCH_LEGACY_PICKLES - 2:
                storages = _storage_sizes(emu)
        # The storages are read as bytes, never unpickled: walk them only to prove that
        # every one is there, so a truncated download is not reported clean.
        _walk_legacy_storages(self.src, emu.value, storages)

    def _further_streams(self) -> None:
        # pickle.load stops at STOP; a loader that reads on runs what follows.
        src = self.src
        while not src.at_end():
            start = src.tell()
            if src.peek(1)[0] not in STREAM_START_BYTES:
                self._trailing(start)
                return
            emu = self.emulate_one()
            if emu.error is not None:
                self._trailing(start)
                return
            self.ctx.add(
                "pickle.multiple-streams",
                Severity.LOW,
                self.loc.at(start),
                "another pickle follows the first; loaders that read on will run it too",
                self.fmt,
            )

    def _worth_keeping(self, before: int) -> bool:
        # Text that merely starts like protocol 0 (TorchScript's "class ...") is not a
        # pickle: a name no module defines is what text read as GLOBAL gives. A broken
        # stream that reached a call (a dangerous name, or a call on a computed value) is
        # one, since the unpickler runs every REDUCE it reaches before it fails.
        return any(
            f.severity >= Severity.HIGH and f.rule_id != "pickle.malformed-global" for f in self.ctx.findings[before:]
        )

    def _trailing(self, pos: int | None) -> None:
        where = pos if pos is not None else self.src.tell()
        self.ctx.add(
            "pickle.trailing-data",
            Severity.LOW,
            self.loc.at(where),
            "bytes follow the pickle that pickle.load never reads; other loaders or tools might",
            self.fmt,
        )
        if isinstance(self.src, MemorySource):
            from bastion.scan.formats.ziparchive import scan_appended_zip  # noqa: PLC0415  # rare

            scan_appended_zip(self.ctx, self.src.window(0, self.src.size, self.src.name), self.loc, self.depth)


ELEMENT_SIZES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QInt8Storage": 1, "QUInt8Storage": 1,
    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}  # fmt: skip
TORCH_TAR_RECORDS = frozenset({"storages", "tensors"})


def _storage_sizes(emu: Emulation) -> dict[str, int]:
    """Element size of each storage key named by the legacy checkpoint's persistent ids."""
    sizes: dict[str, int] = {}
    for ref in emu.persistent:
        pid = ref.pid
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[2], str):
            kind = pid[1]
            name = kind.name if isinstance(kind, Global) else ""
            sizes[pid[2]] = ELEMENT_SIZES.get(name, 0)
    return sizes


def _walk_legacy_storages(src: ByteSource, keys: object, sizes: dict[str, int]) -> None:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ArtifactError("legacy PyTorch file: the storage key list is not a list of names")
    for key in keys:
        element = sizes.get(key, 0)
        if element == 0:
            raise ArtifactError(f"legacy PyTorch file: storage {key!r} has an unknown element type")
        count = int.from_bytes(src.read(8), "little", signed=True)
        if count < 0:
            raise ArtifactError(f"legacy PyTorch file: storage {key!r} declares {count} elements")
        src.skip(count * element)


_REREAD_BELOW = 64 << 20


class _Prefixed(io.RawIOBase):
    """Bytes already read from a stream, then the rest of that stream."""

    def __init__(self, head: bytes, rest: ByteSource) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io's stub names it `b`
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _rereadable(src: ByteSource) -> tuple[ByteSource, Reader]:
    """A forward-only stream, as a source both readings can be run on when that is affordable.

    Up to 64 MiB is read into memory, so that the linear reading (pickle.load,
    np.load) and joblib's can both be run. Past that, a whole-file decompression
    (unknown length: joblib's way of storing pickles) is read as joblib.load reads it,
    and a member of an archive linearly.
    """
    # In chunks: one read of the whole allowance would reserve it, whatever the data's size.
    chunks: list[bytes] = []
    total = 0
    while total <= _REREAD_BELOW:
        chunk = src.read_some(min(1 << 20, _REREAD_BELOW + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    head = b"".join(chunks)
    if len(head) <= _REREAD_BELOW:
        return source_from_bytes(head, src.name), Reader.PLAIN
    stream = StreamSource(io.BufferedReader(_Prefixed(head, src), 1 << 16), src.name, src.size)
    return stream, (Reader.JOBLIB if src.size is None else Reader.PLAIN)


def scan_pickle(
    ctx: ScanContext,
    src: ByteSource,
    loc: Location,
    depth: int,
    fmt: str = "pickle",
    tentative: bool = False,
    reader: Reader = Reader.PLAIN,
) -> bool:
    """Scan one or more pickle streams from `src`.

    Args:
        tentative: the data only might be pickle (protocol-0 text); if it turns out not to
            be, nothing is reported and False is returned.
        reader: the unpickler that will read it, when the container says (joblib's ZF).

    Returns:
        True when the data was analysed as pickle.
    """
    if reader is Reader.PLAIN and not isinstance(src, MemorySource):
        src, reader = _rereadable(src)
    # torch.load tries any file that is not a zip as a tar first, pickle.load reads it as a
    # pickle: a file whose first block is both is read both ways.
    also_tar = not tentative and isinstance(src, MemorySource) and src.tell() == 0 and tararchive.sniff(src.peek(512))
    try:
        done = _Stream(ctx, src, loc, fmt, depth, reader).run(tentative)
    except LimitExceeded as err:
        ctx.incomplete(loc, f"{err.message}; not analysed further", fmt, "scan.limit-exceeded")
        return True
    if done:
        ctx.saw(fmt)
    if also_tar and isinstance(src, MemorySource):
        tararchive.scan_tar(ctx, src.window(0, src.size, src.name), loc, depth)
    return done


def _record_count(emu: Emulation, what: str, limit: int) -> int:
    if emu.error is not None:
        raise ArtifactError(f"legacy PyTorch tar: the {what} pickle is malformed ({emu.error})")
    count = emu.value
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ArtifactError(f"legacy PyTorch tar: the {what} count is not a number")
    if count > limit:
        raise LimitExceeded(f"legacy PyTorch tar: {count} {what}, more than the limit of {limit}")
    return count


def scan_torch_tar_records(ctx: ScanContext, src: ByteSource, loc: Location, depth: int, member: str) -> None:
    """`storages` or `tensors` of the oldest torch.save format (a tar), read as torch.load reads them.

    Both are a pickled count, then per record a pickle followed by raw bytes whose length
    the record gives (a storage's element count and type; a tensor's ndim), and for
    `storages` one more pickle of views. torch.load runs every one of those pickles with
    plain pickle.load, so each is emulated; the raw bytes between them are skipped exactly.
    """
    ctx.saw("torch-legacy-tar")
    stream = _Stream(ctx, src, loc, "torch-legacy-tar", depth)
    count = _record_count(stream.emulate_one(), member, ctx.limits.max_members)
    for index in range(count):
        emu = stream.emulate_one()
        if emu.error is not None:
            raise ArtifactError(f"legacy PyTorch tar: {member} record {index} is malformed ({emu.error})")
        if member == "storages":
            args = emu.value
            kind = args[2] if isinstance(args, tuple) and len(args) == 3 else None
            element = ELEMENT_SIZES.get(kind.name, 0) if isinstance(kind, Global) else 0
            if element == 0:
                raise ArtifactError(f"legacy PyTorch tar: storage record {index} has an unknown element type")
            elements = int.from_bytes(src.read(8), "little", signed=True)
            if elements < 0:
                raise ArtifactError(f"legacy PyTorch tar: storage record {index} declares {elements} elements")
            src.skip(elements * element)
        else:
            ndim = int.from_bytes(src.read(4), "little", signed=True)
            if ndim < 0:
                raise ArtifactError(f"legacy PyTorch tar: tensor record {index} declares {ndim} dimensions")
            src.skip(4 + 16 * ndim + 8)  # padding, sizes, strides, storage offset
    if member == "storages":
        views = stream.emulate_one()
        if views.error is not None:
            raise ArtifactError(f"legacy PyTorch tar: the storage views pickle is malformed ({views.error})")
