"""Bastion's emulation against CPython's readers, and what counts as a failure.

For one stream, each reader (C `pickle.Unpickler`, pure-Python `pickle._Unpickler`,
joblib's `NumpyUnpickler`, `torch.load`'s path) runs over recorders and logs what it did;
Bastion emulates the same bytes. A disagreement is a FAILURE when Bastion would judge the
stream safer than the loader makes it:

- missed-import: a reader imported a name Bastion never saw (an EXT import counts as seen
  when Bastion reported the extension-registry use, which is HIGH on its own);
- missed-call / missed-new / missed-mutate: a reader called, instantiated (NEWOBJ) or
  changed a global that Bastion holds at a weaker use than CALL / RECONSTRUCT / MUTATE;
- missed-method: a reader called a method of a global itself (NEWOBJ_EX's `**kwargs`
  calls `kwargs.keys()`), and Bastion holds that global below CALL;
- missed-call-chain: a reader called a value that is not a global (a call's result, a
  persistent id) and Bastion observed no call on a non-name;
- missed-persistent: a reader asked persistent_load and Bastion recorded no persistent id;
- stopped-early: a reader loaded the stream to its STOP and Bastion reported it malformed
  (in a headerless stream that makes the scanner treat the bytes as "not a pickle");
- different-stop: both finished, at different offsets (what follows is read differently);
- pass-verdict: a reader called or changed something not on the allow-list, and the
  scanner's verdict on the stream (`scan_bytes`) is PASS. When the emulation saw all the
  reader did and the scanner still passed a headerless stream it had tried as pickle and
  then taken for text or an unknown format, the kind is `pass-verdict-not-pickle`: the
  judgement of formats/pickle.py's tentative path, not a misreading.

torch.load reads data.pkl from an unbuffered BytesIO, where the C reader drops what is left
of a frame when an argument runs past it; Bastion reads linearly and reports every such
frame (FRAME_QUIRK, HIGH, so the scanner blocks): for that reader, missed items in a stream
with a frame irregularity are `fail-closed` too.

When Bastion stopped on a malformed stream before the reader did, the missed-* items above
are not failures by themselves: the scanner reports the stream as not analysed (INCOMPLETE),
which blocks. They are counted as `fail-closed` divergences, and the verdict is checked: if
it were PASS, the stream is a `pass-verdict` failure. Bastion reading on where a reader
stopped (`bastion-read-on`) is stricter, never a failure.
"""

from __future__ import annotations

import io
import pickle
import types
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch

from bastion.errors import LimitExceeded
from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_bytes
from bastion.scan.limits import ScanLimits
from bastion.scan.pickle.rules import judge_global
from bastion.scan.pickle.symbolic import Emulation, Event, Global, Use, emulate
from bastion.scan.source import MemorySource

from .recorders import (
    CALL,
    EXTENSIONS,
    IMPORT,
    METHOD,
    MUTATE,
    NEW,
    PERSISTENT,
    READERS,
    Log,
    Run,
    make_global,
    run_reader,
)

LIMITS = ScanLimits()
_EXT_PAIRS = frozenset(EXTENSIONS.values())
_CALLS_SEEN = frozenset({Event.CALL_ON_RESULT, Event.CALL_NON_CALLABLE})
_TORCH_MODULES = {"torch.tensor": "torch._tensor"}  # torch.load's load_module_mapping

FAILURES = frozenset(
    {
        "missed-import",
        "missed-call",
        "missed-new",
        "missed-mutate",
        "missed-method",
        "missed-call-chain",
        "missed-persistent",
        "stopped-early",
        "different-stop",
        "pass-verdict",
        "pass-verdict-not-pickle",
    }
)


@dataclass(frozen=True, slots=True)
class Disagreement:
    kind: str
    reader: str
    detail: str

    @property
    def failure(self) -> bool:
        return self.kind in FAILURES


@dataclass(slots=True)
class Tally:
    """Counts over a campaign, and the first few failing streams of each kind."""

    streams: int = 0
    verdicts: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[tuple[bytes, Disagreement]]] = field(default_factory=dict)

    def add(self, data: bytes, found: list[Disagreement]) -> None:
        self.streams += 1
        for d in found:
            self.kinds[d.kind] += 1
            if d.failure:
                shown = self.examples.setdefault(d.kind, [])
                if len(shown) < 5:
                    shown.append((data, d))

    @property
    def failures(self) -> int:
        return sum(n for kind, n in self.kinds.items() if kind in FAILURES)

    def report(self) -> str:
        lines = [f"{self.streams} streams, {self.verdicts} scanned for a verdict, {self.failures} failures"]
        lines += [f"  {kind}: {n}{' (FAILURE)' if kind in FAILURES else ''}" for kind, n in sorted(self.kinds.items())]
        for kind, shown in self.examples.items():
            for data, d in shown:
                lines.append(f"  e.g. {kind} [{d.reader}] {d.detail}: {data[:300]!r}")
        return "\n".join(lines)


def run_bastion(data: bytes) -> Emulation:
    try:
        return emulate(MemorySource(data, "<differential>"), LIMITS)
    except LimitExceeded as err:  # a budget: the scanner reports "not analysed"
        return Emulation(error=f"limit: {err.message}", error_pos=0)


def _refuse(*args: object, **kwargs: object) -> object:
    raise TypeError("the differential test never unpickles for real")


def _torch_reader_module(log_holder: list[Log]) -> types.SimpleNamespace:
    class TorchRecordingUnpickler(pickle.Unpickler):
        # No persistent_load here: torch.load installs its own, as it does for any module.
        def __init__(self, file: io.BytesIO, **kwargs: object) -> None:
            self.log = Log()
            log_holder.append(self.log)
            super().__init__(file, **kwargs)  # type: ignore[arg-type]  # torch passes encoding=

        def find_class(self, module: str, name: str) -> type:
            return make_global(self.log, module, name)

    return types.SimpleNamespace(Unpickler=TorchRecordingUnpickler, load=_refuse, __name__="recording")


def run_torch(data: bytes) -> Run:
    """torch.load of a zip whose data.pkl is `data`, its unpickler over recorders."""
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    writer.write_record("data.pkl", data, len(data))
    writer.write_record("byteorder", b"little", 6)
    writer.write_end_of_file()
    logs: list[Log] = []
    module = _torch_reader_module(logs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Over recorders: find_class never imports; torch's persistent_load reads storages.
            torch.load(io.BytesIO(out.getvalue()), pickle_module=module, weights_only=False)  # noqa: TID251
    except Exception as err:  # the loader's failure is its verdict
        return Run(logs[0].events if logs else [], False, -1, f"{type(err).__name__}: {err}"[:200])
    return Run(logs[0].events if logs else [], True, -1)


def _uses(emu: Emulation, torch_names: bool) -> dict[tuple[str, str], set[Use]]:
    uses: dict[tuple[str, str], set[Use]] = {}
    for g in emu.globals:
        module = _TORCH_MODULES.get(g.module, g.module) if torch_names else g.module
        uses.setdefault((module, g.name), set()).update(g.uses)
    return uses


def _is_alarming(kind: str, subject: object) -> bool:
    """An event the allow-list does not excuse: the scanner must not PASS the stream."""
    if kind == CALL and isinstance(subject, str):
        return True
    if isinstance(subject, tuple) and kind in (CALL, MUTATE, METHOD):
        module, name = subject
        if not _resolvable(module) or not _resolvable(name):
            # find_class would fail on it (no module or attribute has such a name): the
            # recorder answered where the real reader stops.
            return False
        # What the scanner's rules let a stream call (a specified callable, a known class such
        # as Python 2's __builtin__.xrange) is excused: what it does with its arguments is the
        # emulator's spec check, which the readers' recorders cannot see.
        called = Global(module, name, 0)
        called.use(Use.CALL, 0)
        judgement = judge_global(called)
        return kind == MUTATE or (judgement is not None and judgement.severity >= Severity.HIGH)
    return False


def _resolvable(dotted: str) -> bool:
    return bool(dotted) and all(part.isidentifier() for part in dotted.split("."))


def compare(data: bytes, runs: dict[str, Run], emu: Emulation) -> tuple[list[Disagreement], bool]:
    """The disagreements between the readers' runs and Bastion's emulation of `data`.

    Returns the disagreements (verdict not yet checked) and whether the verdict must be
    checked: a reader did something alarming, or Bastion stopped early and missed something.
    """
    found: list[Disagreement] = []
    seen_events = {obs.event for obs in emu.observations}
    ext_seen = Event.EXTENSION in seen_events
    call_seen = bool(seen_events & _CALLS_SEEN)
    stopped = emu.error is not None
    # torch.load reads from an unbuffered BytesIO: the C reader then drops what is left of
    # a frame when an argument runs past it. Bastion reads linearly and reports every such
    # frame (FRAME_QUIRK, HIGH): the scanner blocks the stream, fail-closed.
    frame_quirk = Event.FRAME_QUIRK in seen_events
    alarming = False
    for reader, run in runs.items():
        is_torch = reader == "torch"
        uses = _uses(emu, is_torch)
        for kind, subject in run.events:
            alarming = alarming or _is_alarming(kind, subject)
            missing = _missing(kind, subject, uses, ext_seen, call_seen, emu, is_torch)
            if missing is not None:
                excused = stopped or (is_torch and frame_quirk)
                found.append(Disagreement("fail-closed" if excused else missing, reader, f"{kind} {subject}"))
        if run.completed and stopped:
            kind = "fail-closed" if is_torch and frame_quirk else "stopped-early"
            found.append(Disagreement(kind, reader, f"Bastion: {emu.error} at {emu.error_pos}"))
        elif run.completed and reader == "c" and emu.end != run.end:
            found.append(Disagreement("different-stop", reader, f"STOP at {run.end}, Bastion at {emu.end}"))
        elif not run.completed and not stopped:
            found.append(Disagreement("bastion-read-on", reader, run.error))
    needs_verdict = alarming or any(d.kind == "fail-closed" for d in found)
    return found, needs_verdict


def _missing(  # one outcome per event kind
    kind: str,
    subject: object,
    uses: dict[tuple[str, str], set[Use]],
    ext_seen: bool,
    call_seen: bool,
    emu: Emulation,
    is_torch: bool,
) -> str | None:
    if isinstance(subject, tuple):
        if subject in _EXT_PAIRS and ext_seen:
            return None
        held = uses.get(subject)  # type: ignore[call-overload]
        if kind == IMPORT:
            return None if held is not None else "missed-import"
        strongest = max(held) if held else 0
        if kind == CALL:
            # getattr(<global>, "<literal>") is resolved by the emulator to the attribute it
            # names (a Global judged on its own) and marked RESOLVED instead of CALL.
            resolved = held is not None and Use.RESOLVED in held
            return None if strongest >= Use.CALL or resolved else "missed-call"
        if kind == NEW:
            return None if strongest >= Use.RECONSTRUCT else "missed-new"
        if kind == MUTATE:
            return None if held and Use.MUTATE in held else "missed-mutate"
        if kind == METHOD:
            return None if strongest >= Use.CALL else "missed-method"
        return None
    if kind == CALL and not is_torch:  # torch's own code calls methods of what it loads
        return None if call_seen else "missed-call-chain"
    if kind == PERSISTENT and not emu.persistent:
        return "missed-persistent"
    return None


def check_stream(data: bytes, readers: tuple[str, ...], verdict: bool, tally: Tally) -> list[Disagreement]:
    """Run every reader and Bastion on `data`, add the outcome to `tally`, return disagreements."""
    emu = run_bastion(data)
    runs = {name: (run_torch(data) if name == "torch" else run_reader(READERS[name](), data)) for name in readers}
    found, needs_verdict = compare(data, runs, emu)
    if verdict and needs_verdict:
        tally.verdicts += 1
        report = scan_bytes(data, "upload")
        if report.verdict(Severity.HIGH) is Verdict.PASS:
            # "not-pickle": the emulation saw all the reader did, but the scanner tried the
            # headerless stream as pickle, found it malformed and took it for something else
            # (formats/pickle.py's tentative path). Otherwise the emulation missed something.
            missed = any(d.kind == "fail-closed" for d in found)
            kind = "pass-verdict" if missed or "pickle" in report.formats else "pass-verdict-not-pickle"
            found.append(Disagreement(kind, "scanner", f"a reader called or changed a name; PASS as {report.formats}"))
    tally.add(data, found)
    return found
