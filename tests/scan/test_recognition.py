"""What an unpickler reads in full is never an "unknown format" to Bastion.

The oracle is CPython's own pure-Python unpickler, made inert: `find_class` hands back a
recorder class whatever is named, so nothing is imported and nothing runs (this happens in
the tests only, never in the scanner). Streams are the fuzzers' seeds, opened with every kind
of first opcode a writer could use instead of PROTO and then mutated: whenever the inert
unpickler reads one to its STOP, Bastion must have analysed it as a pickle, under a name
that says nothing, rather than reporting it as an unrecognised binary that passes.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

from fuzz.seeds import ALL_PICKLES, mutants
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_bytes
from corpus.expect import describe

EXAMPLES = int(os.environ.get("BASTION_FUZZ_EXAMPLES", "300"))

# Openers that leave the stack as they found it: any opcode can start a stream.
OPENERS = [
    b"",
    b"N0",
    b"(t0",
    b"I1\n0",
    b"I0x64\n0",
    b"L7L\n0",
    b"F1.5\n0",
    b"S'a'\n0",
    b"Va\n0",
    b"}0",
    b"]0",
    b")0",
    b"\x880",
    b"K\x010",
    b"M\x01\x000",
    b"J\x01\x00\x00\x000",
    b"X\x01\x00\x00\x00a0",
    b"C\x01a0",
    b"\x8c\x01a0",
    b"(1",
]


class _Inert:
    """Whatever a stream names: accepts every call, state and item, and does nothing."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __call__(self, *_args: Any, **_kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, _state: object) -> None:
        pass

    def __setitem__(self, _key: object, _value: object) -> None:
        pass

    def append(self, _item: object) -> None:
        pass

    def extend(self, _items: object) -> None:
        pass

    def add(self, _item: object) -> None:
        pass


class _InertUnpickler(pickle._Unpickler):  # the pure-Python reader: its code is the reference
    imported = 0

    def find_class(self, module: str, name: str) -> Any:
        # What import would refuse stops the real loader too: only names that can exist count.
        if not all(part.isidentifier() for part in (*module.split("."), *name.split("."))):
            raise ModuleNotFoundError(module)
        self.imported += 1
        return _Inert

    def persistent_load(self, pid: object) -> Any:
        del pid
        return _Inert()


def _names_imported(data: bytes) -> int | None:
    """How many names the unpickler imports reading `data` to its STOP; None if it cannot."""
    reader = _InertUnpickler(io.BytesIO(data))
    try:
        reader.load()
    except Exception:  # any failure means "not a stream the unpickler reads"
        return None
    return reader.imported


SEEDS = [seed for seed in ALL_PICKLES if _names_imported(seed) is not None]  # EXT codes need a registry
# The emulation reads these openers differently from CPython (issue 11, class 4): until it
# follows the loader, a stream that is text from end to end passes as text. Binary streams
# that import names fail closed whatever the emulation makes of them.
TEXT_GAPS = {b"I0x64\n0"}


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in data


def test_the_oracle_reads_every_opener_and_runs_nothing() -> None:
    assert len(SEEDS) >= len(ALL_PICKLES) - 2
    for opener in OPENERS:
        for seed in SEEDS:
            assert _names_imported(opener + seed) is not None, (opener, seed[:40])


def _check(opener: bytes, data: bytes) -> None:
    imported = _names_imported(data)
    if not imported:
        return  # not read, or imports nothing: no code can run from it
    report = scan_bytes(data, "blob")
    if opener in TEXT_GAPS and _is_text(data):
        return
    assert "scan.unknown-format" not in {f.rule_id for f in report.findings}, describe(report.findings)
    read_as_pickle = bool({"pickle", "torch-legacy"} & set(report.formats))
    assert read_as_pickle or report.verdict(Severity.HIGH) is Verdict.INCOMPLETE, describe(report.findings)


def test_every_opener_before_every_seed_is_read_as_a_pickle() -> None:
    for opener in OPENERS:
        for seed in SEEDS:
            _check(opener, opener + seed)


@settings(max_examples=EXAMPLES, deadline=None)
@given(opener=st.sampled_from(OPENERS), body=mutants(SEEDS))
def test_a_mutated_stream_the_unpickler_reads_is_never_an_unknown_format(opener: bytes, body: bytes) -> None:
    _check(opener, opener + body)
