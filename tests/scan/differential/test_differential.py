"""The differential test: Bastion's emulation never reads a stream safer than CPython's readers.

Issue 11's acceptance: over at least 100,000 generated streams per CI run, no disagreement
that Bastion resolves as safer than CPython. Each stream goes through CPython's C
unpickler (as `pickle.load` reads a file) and its pure-Python one, every tenth through
joblib's `NumpyUnpickler` and every hundredth through `torch.load`'s path, all over inert
recorders (`recorders.py`: nothing is imported or run), and through Bastion's emulation;
`compare.py` defines which disagreements are failures. Streams under which a reader calls
or changes something the allow-list does not excuse also go through the scanner's real
entry (`scan_bytes`) and must not PASS.

The campaign is one seeded, deterministic loop (hypothesis' per-example overhead would
cost more than the readers); a smaller hypothesis property over opcode fragments adds
shrinking, so that a failure it finds comes back as a handful of opcodes.

    BASTION_DIFF_STREAMS=2000000 BASTION_DIFF_SEED=7 pytest tests/scan/differential -k campaign -s

runs a local campaign; the count and every disagreement kind are printed in any case.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_bytes

from .compare import FAILURES, Tally, check_stream
from .recorders import bounded_memory, register_extensions
from .streams import _SNIPPETS, NAMES, streams

STREAMS = int(os.environ.get("BASTION_DIFF_STREAMS", "100000"))
SEED = int(os.environ.get("BASTION_DIFF_SEED", "20261203"))

# Disagreements counted and printed but not failed here (none open now: a headerless stream
# that reached a call before breaking is kept as a pickle, see
# `test_headerless_call_chain_then_garbage_is_not_passed`).
KNOWN_OPEN: frozenset[str] = frozenset()


@pytest.fixture
def extensions() -> Iterator[None]:
    remove = register_extensions()
    try:
        yield
    finally:
        remove()


def _readers(index: int) -> tuple[str, ...]:
    readers: tuple[str, ...] = ("c", "python")
    if index % 10 == 0:
        readers += ("joblib",)
    if index % 100 == 0:
        readers += ("torch",)
    return readers


def run_campaign(seed: int, count: int) -> Tally:
    tally = Tally()
    with bounded_memory():
        for index, (_origin, data) in enumerate(streams(seed, count)):
            check_stream(data, _readers(index), verdict=True, tally=tally)
    return tally


@pytest.mark.slow
@pytest.mark.usefixtures("extensions")
def test_campaign_bastion_never_reads_a_stream_safer_than_cpython(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    tally = run_campaign(SEED, STREAMS)
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\ndifferential: seed {SEED}, {tally.streams} streams in {seconds:.0f} s "
            f"({tally.streams / seconds:.0f}/s)\n{tally.report()}",
            file=sys.stderr,
        )
    assert tally.streams == STREAMS
    failing = {kind: n for kind, n in tally.kinds.items() if kind in FAILURES - KNOWN_OPEN}
    assert not failing, tally.report()


# --- hypothesis: the same comparison, shrinking to a few opcodes ------------------------------------------

_GLOBALS = [b"c" + m.encode() + b"\n" + n.encode() + b"\n" for m, n in NAMES]
_FRAGMENTS = sorted(
    {
        *_SNIPPETS,
        *_GLOBALS,
        b")", b"]", b"}", b"\x8f", b"N", b"\x88", b"K\x00", b"K\x01", b"\x8c\x01a", b"\x8c\x02os", b"\x8c\x06system",
        b"C\x01x", b"\x96\x01\x00\x00\x00\x00\x00\x00\x00x", b"\x86", b"\x87", b"\x92", b"\x91", b"q\x01", b"h\x01",
        b"r\x02\x00\x00\x00", b"j\x02\x00\x00\x00", b"\x98", b"o", b"ios\nsystem\n", b"\x82\x02", b"\x83\x01\x00",
        b"I00\n", b"I 1\n", b"g 0\n", b"p1\x00\n", b"S'ab'\n", b"L12\n", b"F1e500\n",
    }
)  # fmt: skip
_STREAM = st.builds(
    lambda proto, body, stop: proto + b"".join(body) + stop,
    st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05"]),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=24),
    st.sampled_from([b".", b".", b""]),
)


@pytest.mark.usefixtures("extensions")
@settings(max_examples=int(os.environ.get("BASTION_FUZZ_EXAMPLES", "1500")), derandomize=os.environ.get("CI") == "true")
@given(data=_STREAM)
def test_fragment_streams_are_never_read_safer_than_cpython(data: bytes) -> None:
    tally = Tally()
    with bounded_memory():
        found = check_stream(data, ("c", "python", "joblib"), verdict=True, tally=tally)
    failing = [d for d in found if d.failure and d.kind not in KNOWN_OPEN]
    assert not failing, (data, failing)


def test_headerless_call_chain_then_garbage_is_not_passed() -> None:
    # The C and Python readers call the persistent value (REDUCE), then fail on 0xff.
    assert scan_bytes(b"P0\n)R\xff", "upload").verdict(Severity.HIGH) is not Verdict.PASS
