"""Pickle streams, and everything built on them (legacy PyTorch, joblib, NumPy object arrays).

A file may hold several pickles back to back (legacy `torch.save` writes five, and an
attacker may append one for a loader that reads on), so every stream is emulated until
the data stops looking like pickle; what follows the last STOP is reported.
"""

from __future__ import annotations

import re

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats.joblib import NestedPickle, read_inline_array
from bastion.scan.pickle.opcodes import STREAM_START_BYTES
from bastion.scan.pickle.rules import is_dangerous, judge_global
from bastion.scan.pickle.symbolic import Emulation, Event, Global, Machine
from bastion.scan.source import ByteSource, MemorySource, source_from_bytes

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
    """One pass over a source that may hold several pickles and joblib's inline arrays."""

    def __init__(self, ctx: ScanContext, src: ByteSource, loc: Location, fmt: str, depth: int) -> None:
        self.ctx = ctx
        self.src = src
        self.loc = loc
        self.fmt = fmt
        self.depth = depth

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

    def _after_build(self, machine: Machine, target: object, src: ByteSource, pos: int) -> None:
        try:
            read_inline_array(machine, target, src, pos)
        except NestedPickle:
            self.ctx.saw("joblib")
            inner = self.emulate_one()
            if inner.error is not None:
                raise ArtifactError(f"object array at byte {pos}: {inner.error}") from None

    def emulate_one(self) -> Emulation:
        machine = Machine(self.ctx.limits, self._embedded, self._after_build)
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
        # pickle; a broken stream that already named something dangerous still counts,
        # since the unpickler runs every REDUCE it reaches before it fails.
        return any(
            f.severity >= Severity.HIGH and f.rule_id not in ("pickle.malformed-global", "pickle.call-chain")
            for f in self.ctx.findings[before:]
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


_ELEMENT_SIZES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QInt8Storage": 1, "QUInt8Storage": 1,
    "QInt32Storage": 4, "UntypedStorage": 1,
}  # fmt: skip


def _storage_sizes(emu: Emulation) -> dict[str, int]:
    """Element size of each storage key named by the legacy checkpoint's persistent ids."""
    sizes: dict[str, int] = {}
    for ref in emu.persistent:
        pid = ref.pid
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[2], str):
            kind = pid[1]
            name = kind.name if isinstance(kind, Global) else ""
            sizes[pid[2]] = _ELEMENT_SIZES.get(name, 0)
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


def scan_pickle(
    ctx: ScanContext, src: ByteSource, loc: Location, depth: int, fmt: str = "pickle", tentative: bool = False
) -> bool:
    """Scan one or more pickle streams from `src`.

    Args:
        tentative: the data only might be pickle (protocol-0 text); if it turns out not to
            be, nothing is reported and False is returned.

    Returns:
        True when the data was analysed as pickle.
    """
    try:
        done = _Stream(ctx, src, loc, fmt, depth).run(tentative)
    except LimitExceeded as err:
        ctx.incomplete(loc, f"{err.message}; not analysed further", fmt, "scan.limit-exceeded")
        return True
    if done:
        ctx.saw(fmt)
    return done
