"""Every parser, fuzzed: any bytes end in findings or a typed `ArtifactError`, in time.

Each format gets two properties over random bytes, magic-prefixed random bytes and mutated
valid seeds (`seeds.py`): the parser called directly fails only with `ArtifactError`, and
`scan_bytes` never raises at all (every failure is a not-analysed finding) and its report
renders. Further properties: declared lengths far beyond the data cost neither memory nor
time, truncated files are never reported clean, plain data pickled in any protocol passes,
and harmless opcodes in front of a payload do not hide it.

Every scan is run twice and must give the same report; a pickle reported clean must be one that
the standard library's own opcode reader (`pickletools`) reads to its STOP. No test bounds
wall-clock time: amplification is measured by counting the Python calls a scan makes (the same
on any machine) at two input sizes, and a generous alarm only turns a hang into a failure.

`@example` inputs are regressions: bugs these properties found, fixed since. Tests marked
`xfail(strict=True, reason="BUG: ...")` reproduce open bugs; they turn into failures (XPASS)
once the scanner is fixed: remove the mark then. Under CI=true the examples are derandomized;
BASTION_FUZZ_EXAMPLES raises the number of examples per property for a deeper local run.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import signal
import struct
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity, Verdict
from bastion.policy.schema import ScanPolicy
from bastion.render.scan_json import render_json
from bastion.render.scan_sarif import render_sarif
from bastion.scan import secrets
from bastion.scan.api import scan_bytes
from bastion.scan.context import ScanContext
from bastion.scan.dispatch import scan_source
from bastion.scan.formats import gguf, keras, numpy, protobuf_models, safetensors
from bastion.scan.formats.compressed import scan_compressed
from bastion.scan.formats.pickle import scan_pickle
from bastion.scan.formats.tararchive import scan_tar
from bastion.scan.formats.ziparchive import read_members, scan_zip
from bastion.scan.limits import ScanLimits
from bastion.scan.pickle.opcodes import parse_opcodes
from bastion.scan.pickle.symbolic import Emulation, emulate
from bastion.scan.report import FileReport, ScanReport
from bastion.scan.source import MemorySource

from .seeds import (
    ALL_PICKLES,
    COMPRESSED,
    GGUFS,
    HDF5S,
    KERAS_JSON,
    NOTEBOOK,
    NPY_OBJECT,
    NPYS,
    ONNXS,
    PICKLES,
    SAFETENSORS,
    TARS,
    TEXTS,
    TF_GRAPHS,
    ZIPS,
    fuzz_bytes,
    zip_bytes,
)

MiB = 1 << 20
SMALL_LIMITS = ScanLimits(
    max_depth=4,
    max_members=1000,
    max_expanded_bytes=64 * MiB,
    ratio_grace_bytes=1 * MiB,
    max_pickle_opcodes=200_000,
    max_memo_entries=100_000,
    max_stack_items=100_000,
    max_inline_bytes=64 * 1024,
    max_text_bytes=1 * MiB,
    max_header_bytes=1 * MiB,
    max_embedded_pickles=8,
)

_CI = os.environ.get("CI") == "true"
# Under CI the examples are derandomized so that a run is reproducible; locally each run explores anew.
# BASTION_FUZZ_EXAMPLES=5000 fuzzes deeper (minutes instead of seconds).
# No deadline: an example's duration depends on the machine's load, not on the parser.
FUZZ = settings(
    max_examples=int(os.environ.get("BASTION_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=_CI,
    **({"database": None} if _CI else {}),
)


# -- helpers -----------------------------------------------------------------------------
# A hang guard, not a speed bound: an example that has not ended after this long never will
# (the slowest takes well under a second on a quiet machine; a loaded one is ~10x slower).
_HANG = 120.0


def _ctx() -> ScanContext:
    return ScanContext(SMALL_LIMITS, scan_source)


def _loc() -> Location:
    return Location("fuzz")


def _direct(call: Callable[[], object]) -> None:
    """Run a parser directly: it may only fail with ArtifactError (LimitExceeded included)."""
    with suppress(ArtifactError), _time_limit(_HANG):
        call()


def _scan(data: bytes, name: str) -> FileReport:
    """scan_bytes must not raise; its report must be well formed and render in every format."""
    with _time_limit(_HANG):
        report = scan_bytes(data, name)
    assert isinstance(report.verdict(Severity.HIGH), Verdict)
    assert report.size == len(data)
    for finding in report.findings:
        assert finding.location.file == name
        assert isinstance(finding.severity, Severity)
        assert finding.rule_id and finding.message
    whole = ScanReport((name,), (report,))
    render_json(whole, Severity.HIGH, io.StringIO())
    render_sarif(whole, Severity.HIGH, io.StringIO())
    with _time_limit(_HANG):
        again = scan_bytes(data, name)
    assert (again.formats, again.findings) == (report.formats, report.findings), "the same bytes gave another report"
    return report


# The opcodes with which a loader imports or calls something.
_ACTING = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}
    | {"PERSID", "BINPERSID"}
)


def _reads_to_stop(data: bytes) -> bool:
    """Every opcode parses up to a STOP (no stack or memo checks: `genops` only decodes)."""
    try:
        return any(op.name == "STOP" for op, _arg, _pos in pickletools.genops(data))
    except (ValueError, EOFError, UnicodeDecodeError, struct.error, OverflowError):
        return False


def _loader_runs_nothing_or_reads_all(data: bytes) -> bool:
    """The standard library's disassembler (which checks the stack, and executes nothing) reads a
    complete pickle, or gives up before any opcode that imports or calls: a loader, which fails
    where it does, would have run nothing."""
    out = io.StringIO()
    try:
        pickletools.dis(data, out)
    except (
        ValueError,
        EOFError,
        UnicodeDecodeError,
        struct.error,
        KeyError,
        IndexError,
        TypeError,
        OverflowError,
    ) as err:
        if str(err).startswith("stack not empty after STOP"):
            return True  # read to its STOP: what was left on the stack does not matter to a loader
        if "already defined" in str(err) and _reads_to_stop(data):
            return True  # a memo key set twice: only the disassembler refuses it, both unpicklers overwrite
        done = out.getvalue().splitlines()[:-1]  # the last line printed may be the opcode that failed
        return not any(line.split()[2:3] and line.split()[2] in _ACTING for line in done if ":" in line)
    return True


def _python_calls(call: Callable[[], FileReport]) -> tuple[int, FileReport]:
    """The report of `call` and the number of Python and C function calls it made: a measure of
    work that does not depend on the machine's speed or load."""
    calls = 0

    def count(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    previous = sys.getprofile()
    sys.setprofile(count)
    try:
        with _time_limit(_HANG):
            report = call()
    finally:
        sys.setprofile(previous)
    return calls, report


def _grows_linearly(build: Callable[[int], bytes], name: str, size: int, factor: float = 2.5) -> FileReport:
    """Scanning `build(2 * size)` costs at most `factor` times scanning `build(size)`."""
    scan_bytes(build(size), name)  # imports and caches first: they are not the input's cost
    small, _ = _python_calls(lambda: scan_bytes(build(size), name))
    large, report = _python_calls(lambda: scan_bytes(build(2 * size), name))
    assert large <= factor * small, f"{large} calls for size {2 * size} against {small} for size {size}"
    return report


class _TooSlow(Exception):
    pass


class _Alarm(BaseException):
    """Raised by the timer: not an Exception, so the scanner's last-resort handler cannot swallow it."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Interrupt pure-Python work that runs longer than `seconds` (a hang becomes a failure)."""

    def expire(_signum: int, _frame: object) -> None:
        raise _Alarm

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Alarm:
        raise _TooSlow(f"still running after {seconds} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- pickle: opcode reader, emulator, stream scanner ---------------------------------------
@FUZZ
@given(data=fuzz_bytes(ALL_PICKLES))
@example(data=b"S'\\q'\n.")  # codecs.escape_decode warns on an unknown escape
def test_opcode_parser_fails_only_with_artifact_error(data: bytes) -> None:
    def run() -> None:
        for code, _arg, pos in parse_opcodes(MemorySource(data, "fuzz"), SMALL_LIMITS):
            assert 0 <= pos < len(data)
            assert 0 <= code <= 0xFF

    _direct(run)


@FUZZ
@given(data=fuzz_bytes(ALL_PICKLES))
def test_emulator_reports_malformed_input_in_its_result(data: bytes) -> None:
    try:
        emu = emulate(MemorySource(data, "fuzz"), SMALL_LIMITS)
    except LimitExceeded:
        return
    assert isinstance(emu, Emulation)
    assert (emu.error is None) == (emu.error_pos is None)
    if emu.error is None:
        assert 0 < emu.end <= len(data)


@FUZZ
@given(data=fuzz_bytes(ALL_PICKLES), name=st.sampled_from(["model.pkl", "weights.bin", "<bytes>"]))
@example(data=b"(S'\\\x00true'\niposix\nsystem\n.", name="model.pkl")  # found by fuzzing
@example(data=b"\x80\x02K\x01q\x00K\x02q\x00\x86q\x01.", name="model.pkl")  # memo key set twice: the loader reads on
def test_pickle_scan_never_raises(data: bytes, name: str) -> None:
    _direct(lambda: scan_pickle(_ctx(), MemorySource(data, name), _loc(), 0))
    report = _scan(data, name)
    if name == "model.pkl" and report.verdict(Severity.HIGH) is Verdict.PASS:  # named a pickle: read as one
        assert _loader_runs_nothing_or_reads_all(data), f"passed a pickle a loader would partly run: {data[:80]!r}"


# -- archives ----------------------------------------------------------------------------
def _local_name_length(data: bytes, length: int) -> bytes:
    """A zip whose first local header claims a longer name: the member's data starts past the end."""
    out = bytearray(data)
    struct.pack_into("<H", out, 26, length)
    return bytes(out)


@FUZZ
@given(data=fuzz_bytes(ZIPS))
@example(data=_local_name_length(ZIPS[1], 517))  # deflated member past the end: the inflater once looped forever
@example(data=_local_name_length(ZIPS[2], 517))  # the same with bzip2
def test_zip_reader_fails_only_with_artifact_error(data: bytes) -> None:
    _direct(lambda: read_members(MemorySource(data, "fuzz.zip"), 1000))
    _direct(lambda: scan_zip(_ctx(), MemorySource(data, "fuzz.zip"), _loc(), 0))
    _scan(data, "model.zip")


@FUZZ
@given(data=fuzz_bytes(TARS, max_random=2048))
def test_tar_reader_fails_only_with_artifact_error(data: bytes) -> None:
    _direct(lambda: scan_tar(_ctx(), MemorySource(data, "fuzz.tar"), _loc(), 0))
    _scan(data, "model.tar")


_COMPRESSED_CASES = st.sampled_from(sorted(COMPRESSED)).flatmap(
    lambda kind: st.tuples(st.just(kind), fuzz_bytes([COMPRESSED[kind]], max_random=256))
)


@FUZZ
@given(case=_COMPRESSED_CASES)
@example(case=("lz4", b"\x04\x22\x4d\x18" + bytes(40)))
def test_decompressors_fail_only_with_artifact_error(case: tuple[str, bytes]) -> None:
    kind, data = case
    _direct(lambda: scan_compressed(_ctx(), MemorySource(data, "fuzz"), _loc(), kind, "fuzz.pkl", 0))
    _scan(data, "model.pkl.gz")


# -- tensors and headers -----------------------------------------------------------------
_NPY_UNHASHABLE_KEY = b"\x93NUMPY\x01\x00\x07\x00{[]: 1}"


@FUZZ
@given(data=fuzz_bytes(NPYS))
@example(data=_NPY_UNHASHABLE_KEY)
def test_npy_header_reader_fails_only_with_artifact_error(data: bytes) -> None:
    _direct(lambda: numpy.read_header(MemorySource(data, "fuzz.npy")))
    _direct(lambda: numpy.scan_npy(_ctx(), MemorySource(data, "fuzz.npy"), _loc(), 0))
    _scan(data, "array.npy")


def _safetensors_with(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@FUZZ
@given(data=fuzz_bytes(SAFETENSORS))
@example(data=_safetensors_with(b'{"t": {"dtype": [], "shape": [], "data_offsets": [0, 0]}}'))
def test_safetensors_header_fails_only_with_artifact_error(data: bytes) -> None:
    _direct(lambda: safetensors.scan_safetensors(_ctx(), MemorySource(data, "fuzz"), _loc()))
    _scan(data, "model.safetensors")


def _gguf_nested_arrays(depth: int) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 9)
    return head + struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 0, 0)


@FUZZ
@given(data=fuzz_bytes(GGUFS))
@example(data=_gguf_nested_arrays(5000))
def test_gguf_metadata_fails_only_with_artifact_error(data: bytes) -> None:
    _direct(lambda: gguf.scan_gguf(_ctx(), MemorySource(data, "fuzz.gguf"), _loc()))
    _scan(data, "model.gguf")


# -- Keras, ONNX, TensorFlow ---------------------------------------------------------------
@FUZZ
@given(data=fuzz_bytes(HDF5S, max_random=2048))
def test_keras_hdf5_fails_only_with_artifact_error(data: bytes) -> None:
    _direct(lambda: keras.scan_hdf5(_ctx(), MemorySource(data, "fuzz.h5"), _loc()))
    _scan(data, "model.h5")


@FUZZ
@given(data=fuzz_bytes(KERAS_JSON))
@example(data=b'{"class_name": [], "config": {}}')
def test_keras_json_config_fails_only_with_artifact_error(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    _direct(lambda: keras.scan_config_text(_ctx(), text, _loc(), "config.json"))
    _scan(data, "config.json")


@FUZZ
@given(data=fuzz_bytes(ONNXS + TF_GRAPHS), kind=st.sampled_from(["onnx", "tf", "probe"]))
def test_protobuf_walker_fails_only_with_artifact_error(data: bytes, kind: str) -> None:
    def walk() -> None:
        src = MemorySource(data, "fuzz")
        for _number, wire, start, end in protobuf_models.fields(src, 0, src.size, protobuf_models._Budget()):
            if wire == protobuf_models.LEN:
                assert 0 <= start <= end <= src.size  # a payload never reaches outside its message

    _direct(walk)
    _direct(lambda: protobuf_models.scan_protobuf_model(_ctx(), MemorySource(data, "fuzz"), _loc(), kind))
    _scan(data, {"onnx": "model.onnx", "tf": "saved_model.pb", "probe": "weights.bin"}[kind])


# -- notebooks and secrets ------------------------------------------------------------------
@FUZZ
@given(data=fuzz_bytes([NOTEBOOK, *TEXTS]))
def test_notebook_and_text_scanners_never_raise(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    secrets.scan_notebook(_ctx(), text, _loc())
    secrets.scan_text_for_secrets(_ctx(), text, _loc(), "text")
    _scan(data, "analysis.ipynb")


_PRINTABLE = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=200)


@FUZZ
@given(before=_PRINTABLE, key=st.from_regex(r"AKIA[0-9A-Z]{16}", fullmatch=True), after=_PRINTABLE)
def test_secrets_are_found_and_never_repeated_in_full(before: str, key: str, after: str) -> None:
    report = _scan(f"notes: {before} {key} {after}\n".encode(), "notes.txt")
    found = [f for f in report.findings if f.rule_id == "secrets.credential"]
    assert found
    for f in report.findings:
        assert key not in f.evidence and key not in f.message


# -- declared lengths far beyond the data ----------------------------------------------------
def _pickle_claiming(opcode: bytes, length: int) -> bytes:
    width, most = {
        b"X": ("<I", 2**32 - 1),
        b"B": ("<I", 2**32 - 1),
        b"T": ("<i", 2**31 - 1),
        b"\x8b": ("<i", 2**31 - 1),
    }.get(opcode, ("<Q", 2**64 - 1))
    return b"\x80\x04" + opcode + struct.pack(width, min(length, most)) + b"only a few bytes follow"


def _zip_member_claiming(size: int) -> bytes:
    data = bytearray(zip_bytes([("data.pkl", PICKLES[2])], 0))
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, min(size, 0xFFFFFFFF))  # uncompressed size
    struct.pack_into("<I", data, cd + 20, min(size, 0xFFFFFFFF))  # compressed size
    return bytes(data)


def _zip64_member_claiming(size: int) -> bytes:
    """A member whose zip64 extra field declares `size` bytes, compressed and not."""
    payload = PICKLES[2]
    name = b"data.pkl"
    extra = struct.pack("<HHQQ", 1, 16, size, size)
    local = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 0, 0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra)
    )
    local += name + extra + payload
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        45,
        45,
        0,
        0,
        0,
        0,
        0,
        0xFFFFFFFF,
        0xFFFFFFFF,
        len(name),
        len(extra),
        0,
        0,
        0,
        0,
        0,
    )
    central += name + extra
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local), 0)
    return local + central + eocd


def _npy_claiming(length: int) -> bytes:
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", min(length, 0xFFFFFFFF)) + b"{'descr': '<f4'"


def _gguf_claiming(field: str, value: int) -> bytes:
    head = b"GGUF" + struct.pack("<I", 3)
    if field == "kv_count":
        return head + struct.pack("<QQ", 0, value) + b"\x00" * 16
    kv = struct.pack("<QQ", 0, 1)
    if field == "key":
        return head + kv + struct.pack("<Q", value) + b"general"
    if field == "string":
        return head + kv + struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, value) + b"text"
    return head + kv + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, value) + b"\x01" * 16  # array


def _tar_member_claiming(size: int) -> bytes:
    info = io.BytesIO()
    import tarfile  # noqa: PLC0415

    header = tarfile.TarInfo("model.pkl")
    header.size = size
    info.write(header.tobuf(format=tarfile.GNU_FORMAT))
    info.write(PICKLES[2])
    return info.getvalue()


HUGE = [2**31 - 1, 2**32 - 1, 2**40, 2**60, 2**62, 2**64 - 1]
CLAIMS: list[tuple[str, Callable[[int], bytes], str]] = [
    *(
        (f"pickle-{op.hex()}", (lambda n, op=op: _pickle_claiming(op, n)), "model.pkl")
        for op in (b"X", b"B", b"T", b"\x8b", b"\x8d", b"\x8e", b"\x96", b"\x95")
    ),
    ("safetensors-header", lambda n: struct.pack("<Q", n) + b'{"a": 1}', "model.safetensors"),
    ("zip-member", _zip_member_claiming, "model.pt"),
    ("zip64-member", _zip64_member_claiming, "model.pt"),
    ("npy-header", _npy_claiming, "array.npy"),
    ("gguf-kv-count", lambda n: _gguf_claiming("kv_count", n), "model.gguf"),
    ("gguf-key", lambda n: _gguf_claiming("key", n), "model.gguf"),
    ("gguf-string", lambda n: _gguf_claiming("string", n), "model.gguf"),
    ("gguf-array", lambda n: _gguf_claiming("array", n), "model.gguf"),
    ("tar-member", _tar_member_claiming, "model.tar"),
    ("gzip-pickle", lambda n: __import__("gzip").compress(_pickle_claiming(b"\x8e", n)), "model.pkl.gz"),
]


@pytest.mark.parametrize(("build", "name"), [(b, n) for _, b, n in CLAIMS], ids=[c[0] for c in CLAIMS])
@pytest.mark.parametrize("length", HUGE, ids=lambda n: f"2^{math.log2(n + 1):.0f}")
def test_declared_lengths_beyond_the_data_allocate_nothing(
    build: Callable[[int], bytes], name: str, length: int
) -> None:
    data = build(length)
    tracemalloc.start()
    try:
        with _time_limit(_HANG):  # a hang guard: what is bounded here is memory, not time
            report = scan_bytes(data, name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * MiB, f"{peak} bytes allocated for a {len(data)}-byte input"
    assert report.verdict(Severity.HIGH) is not Verdict.PASS, report.findings


def test_tar_member_declaring_the_whole_budget_is_skipped_without_reading_it() -> None:
    scan_bytes(_tar_member_claiming(1 << 20), "model.tar")  # imports and caches first
    small, _ = _python_calls(lambda: scan_bytes(_tar_member_claiming(1 << 20), "model.tar"))
    huge, report = _python_calls(lambda: scan_bytes(_tar_member_claiming(16 << 30), "model.tar"))
    assert huge <= 2 * small, f"{huge} calls for a 16 GiB claim against {small} for 1 MiB"
    assert report.verdict(Severity.HIGH) is Verdict.INCOMPLETE, report.findings
    assert "scan.incomplete" in {f.rule_id for f in report.findings}


@FUZZ
@given(
    opcode=st.sampled_from([b"X", b"B", b"T", b"\x8b", b"\x8d", b"\x8e", b"\x96", b"\x95"]),
    length=st.integers(min_value=1 << 16, max_value=2**64 - 1),
)
def test_any_huge_pickle_length_is_reported_not_analysed(opcode: bytes, length: int) -> None:
    data = _pickle_claiming(opcode, length)
    assert _scan(data, "model.pkl").verdict(Severity.HIGH) is not Verdict.PASS


# -- amplification: small inputs whose analysis must stay cheap ------------------------------
def _dup_tuple_tower(levels: int) -> bytes:
    # EMPTY_DICT; EMPTY_TUPLE, then (DUP, TUPLE2) * levels: a tuple DAG with 2**levels leaves; BUILD; STOP
    return b"\x80\x02})" + b"2\x86" * levels + b"b."


def _self_appending_list(copies: int) -> bytes:
    # EMPTY_DICT; EMPTY_LIST, then (DUP, APPEND) * copies: a list that contains itself; BUILD; STOP
    return b"\x80\x02}]" + b"2a" * copies + b"b."


@pytest.mark.parametrize(
    ("build", "size"),
    [(_dup_tuple_tower, 20), (_self_appending_list, 1000)],
    ids=["dup-tuple-tower", "self-appending-list"],
)
def test_shared_substructure_in_build_state_is_analysed_in_linear_work(
    build: Callable[[int], bytes], size: int
) -> None:
    # A tower of 40 levels is a DAG of 2**40 leaves: walked as a tree, it would never end.
    report = _grows_linearly(build, "model.pkl", size)
    assert report.verdict(Severity.HIGH) is Verdict.PASS, report.findings  # plain containers: nothing to flag


def _repeated_build(items: int) -> bytes:
    # EMPTY_DICT; a list of `items` ints, memoized and popped; then (BINGET 0, BUILD) * items
    return b"\x80\x02}](" + b"K\x01" * items + b"eq\x000" + b"h\x00b" * items + b"."


def test_repeated_build_of_one_state_is_analysed_in_linear_work() -> None:
    report = _grows_linearly(_repeated_build, "model.pkl", 10_000)
    assert report.verdict(Severity.HIGH) is Verdict.PASS, report.findings


@pytest.mark.parametrize("limits", [ScanLimits(max_open_marks=1000), ScanLimits()], ids=["small", "default"])
def test_open_marks_are_bounded(limits: ScanLimits) -> None:
    # Each open MARK holds a list: 10 MB of '(' once held 740 MB. Past the budget, the file is not analysed.
    data = b"\x80\x02" + b"(" * (limits.max_open_marks + 1) + b"N."
    report = scan_bytes(data, "model.pkl", ScanPolicy(limits=limits))
    assert "scan.limit-exceeded" in {f.rule_id for f in report.findings}, report.findings
    assert report.verdict(Severity.HIGH) is Verdict.INCOMPLETE


def test_findings_per_file_stay_bounded() -> None:
    data = b"\x80\x04" + (b"\x95" + struct.pack("<Q", 1 << 40)) * 10_000 + b"N."
    report = scan_bytes(data, "model.pkl")
    assert report.verdict(Severity.HIGH) is Verdict.FAIL
    assert len(report.findings) <= 100


def test_hdf5_full_of_json_openings_is_analysed_in_linear_work() -> None:
    report = _grows_linearly(lambda n: b"\x89HDF\r\n\x1a\n" + b'{"' * n, "model.h5", 256 * 1024)
    assert report.verdict(Severity.HIGH) is not Verdict.PASS, report.findings  # not an HDF5 file a loader reads
    assert "scan.incomplete" in {f.rule_id for f in report.findings}


_CALL_CHAIN = b"\x80\x02cposix\nsystem\n" + b")R" * 5000 + b"."  # os.system()()()... 5000 calls deep


def test_long_call_chains_are_analysed_not_crashed() -> None:
    with _time_limit(_HANG):
        emu = emulate(MemorySource(_CALL_CHAIN, "fuzz"), SMALL_LIMITS)
    report = _grows_linearly(lambda n: b"\x80\x02cposix\nsystem\n" + b")R" * n + b".", "model.pkl", 2500)
    assert [g.dotted for g in emu.globals] == ["posix.system"]
    assert report.verdict(Severity.HIGH) is Verdict.FAIL
    assert "pickle.dangerous-global" in {f.rule_id for f in report.findings}


# -- fail closed: a truncated file is never clean ----------------------------------------------
# (what, bytes, name, trailer): cutting into the trailer loses nothing a loader would run.
# A zip's trailer is its end-of-central-directory record (22 bytes).
TRUNCATABLE = [
    *((f"pickle-p{p}", PICKLES[p], "model.pkl", 0) for p in range(2, 6)),
    ("safetensors", SAFETENSORS[0], "model.safetensors", 0),
    *((f"gguf-{i}", g, "model.gguf", 0) for i, g in enumerate(GGUFS)),
    *((f"zip-{i}", z, "model.pt", 22) for i, z in enumerate(ZIPS)),
    ("npy-object", NPY_OBJECT, "array.npy", 0),
    ("tar-gz", TARS[1], "model.tar.gz", 0),
    *((kind, data, "model.pkl.z", 0) for kind, data in sorted(COMPRESSED.items())),
]


@FUZZ
@given(case=st.sampled_from(TRUNCATABLE), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_file_is_never_reported_clean(case: tuple[str, bytes, str, int], cut: float) -> None:
    _, data, name, trailer = case
    keep = 16 + int(cut * (len(data) - trailer - 16))
    report = _scan(data[:keep], name)
    assert report.verdict(Severity.HIGH) is not Verdict.PASS, (keep, len(data), report.findings)


# -- no false alarm on plain data ------------------------------------------------------------
_PLAIN_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_HASHABLE = st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.binary(max_size=10)


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(_HASHABLE, children, max_size=5)
    )


PLAIN_DATA = st.recursive(_PLAIN_LEAVES, _containers, max_leaves=25)


@FUZZ
@given(value=PLAIN_DATA, protocol=st.sampled_from([0, 2, 3, 4, 5]))
def test_plain_data_pickles_pass(value: object, protocol: int) -> None:
    report = _scan(pickle.dumps(value, protocol=protocol), "data.pkl")
    assert report.verdict(Severity.HIGH) is Verdict.PASS, report.findings


@FUZZ
@given(value=PLAIN_DATA)
@example(value=1.5)
@example(value="text")
def test_plain_data_pickles_pass_in_protocol_1(value: object) -> None:
    report = _scan(pickle.dumps(value, protocol=1), "data.pkl")
    assert report.verdict(Severity.HIGH) is Verdict.PASS, report.findings


# -- no bypass: harmless opcodes in front of a payload do not hide it -------------------------
_PAYLOAD = b"0cposix\nsystem\n(S'true'\ntR."  # POP what came before, then call os.system("true")


def _strip(data: bytes) -> bytes:
    """A pickle's opcodes without PROTO, FRAME and STOP: what a crafted stream may start with."""
    if data[:1] == b"\x80":
        data = data[2:]
    if data[:1] == b"\x95":
        data = data[9:]
    return data[:-1]


@FUZZ
@given(value=PLAIN_DATA, protocol=st.integers(0, 5), name=st.sampled_from(["model.pkl", "weights.bin"]))
@example(value=1.5, protocol=1, name="weights.bin")  # starts with BINFLOAT 'G'
@example(value=257, protocol=1, name="model.pkl")  # starts with BININT2 'M'
@example(value=True, protocol=2, name="model.pkl")  # starts with NEWTRUE
def test_payload_after_harmless_opcodes_is_flagged(value: object, protocol: int, name: str) -> None:
    data = _strip(pickle.dumps(value, protocol=protocol)) + _PAYLOAD
    report = _scan(data, name)
    assert report.verdict(Severity.HIGH) is Verdict.FAIL, (data[:40], report.formats, report.findings)


@FUZZ
@given(depth=st.integers(1, 64), protocol=st.integers(0, 5))
def test_deeply_nested_plain_data_passes(depth: int, protocol: int) -> None:
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 3 == 0 else ({"k": value} if level % 3 == 1 else (value, level))
    report = _scan(pickle.dumps(value, protocol=protocol), "data.pkl")
    assert report.verdict(Severity.HIGH) is Verdict.PASS, report.findings
