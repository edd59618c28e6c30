"""Which imported names are safe, which are dangerous, and how bad an unknown one is.

The allow-list is the specification catalogue (callables.py): exact callables that real
checkpoints use, each with what it does with its arguments, which the emulator checks on
every call. The deny-list gives CRITICAL to what is known to run code, touch files or the
network, or lead to either through an indirection. Everything else is unknown, and its
severity follows what the stream does with it: calling it or mutating through it is
HIGH, rebuilding an instance of it through the standard reconstruction paths is MEDIUM
(a full model saved with `torch.save` names the user's own classes), a bare mention is LOW.
Classes the libraries themselves describe (`known_classes`, generated from them) are judged by
what they are: an Enum called with a member's value is a lookup, a struct sequence called with
a literal sequence builds a tuple; those exact shapes are not reported.
"""

from __future__ import annotations

import _compat_pickle
import functools
import importlib
from dataclasses import dataclass
from types import ModuleType

from bastion.findings import Severity
from bastion.scan.pickle.callables import DENIED_MODULE_EXCEPTIONS, canonical_module, spec_for
from bastion.scan.pickle.symbolic import Global, PDict, Use

# Modules whose every attribute is dangerous: code execution, processes, files, network,
# debuggers and profilers that run code, importers, and serialisers that load more code.
DANGEROUS_MODULES = frozenset(
    {
        "os",
        "subprocess",
        "pty",
        "runpy",
        "importlib",
        "imp",
        "pickle",
        "marshal",
        "shelve",
        "dill",
        "cloudpickle",
        "joblib.numpy_pickle_compat",
        "ctypes",
        "socket",
        "ssl",
        "shutil",
        "webbrowser",
        "code",
        "codeop",
        "bdb",
        "pdb",
        "profile",
        "cProfile",
        "trace",
        "timeit",
        "pydoc",
        "pip",
        "ensurepip",
        "venv",
        "multiprocessing",
        "asyncio",
        "sys",
        "types",
        "http",
        "urllib",
        "requests",
        "aiohttp",
        "httpx",
        "smtplib",
        "imaplib",
        "ftplib",
        "poplib",
        "telnetlib",
        "nntplib",
        "socketserver",
        "xmlrpc",
        "idlelib",
        "lib2to3",
        "doctest",
        "distutils",
        "setuptools",
        "_aix_support",
        "_osx_support",
        "_pyrepl",
        "test",
        "tempfile",
        "zipimport",
        "pkgutil",
        "signal",
        "threading",
        "concurrent",
        "sqlite3",
        "dbm",
        "interpreters",
        "builtins.__import__",
        "operator",
        "functools",
        "inspect",
        "gc",
        "platform",
        "mailcap",
        "cgi",
        "cgitb",
        "site",
        "sysconfig",
        "numpy.f2py",
        "numpy.testing",
        "numpy.distutils",
        "numpy.ctypeslib",
        "torch.hub",
        "torch.utils.collect_env",
        "torch.utils.bottleneck",
        "torch._inductor",
        "torch._dynamo",
        "torch.fx.experimental",
        "torch.jit.unsupported_tensor_ops",
        "torch.utils._config_module",
        "torch.utils.data.datapipes",
        "torch.package",
        "torch.utils.cpp_extension",
        "torch.testing",
        "torch._export",
        "torch.export",
        "keras.src.saving",
        "tensorflow.python.platform",
        "uuid._get_command_stdout",
        "logging.config",
        "logging.handlers",
        "glob",
        "fileinput",
        "filecmp",
        "tarfile",
        "zipfile",
        "mmap",
        "resource",
        "readline",
        "rlcompleter",
        "curses",
        "tkinter",
        "turtle",
        "antigravity",
        "this",
        "builtins.breakpoint",
        "_winreg",
        "winreg",
        "msvcrt",
    }
)


# Single names that are dangerous although their module is not.
DANGEROUS_NAMES = frozenset(
    {
        "builtins.eval",
        "builtins.exec",
        "builtins.execfile",
        "builtins.compile",
        "builtins.open",
        "builtins.getattr",
        "builtins.setattr",
        "builtins.delattr",
        "builtins.__import__",
        "builtins.globals",
        "builtins.locals",
        "builtins.vars",
        "builtins.input",
        "builtins.breakpoint",
        "builtins.help",
        "builtins.exit",
        "builtins.quit",
        "builtins.apply",
        "builtins.file",
        "builtins.reload",
        "builtins.type",
        "builtins.super",
        "builtins.memoryview",
        "builtins.dir",
        "builtins.classmethod",
        "builtins.staticmethod",
        "builtins.property",
        "io.open",
        "io.FileIO",
        "io.open_code",
        "io.BufferedReader",
        "io.BufferedWriter",
        "io.TextIOWrapper",
        "logging.FileHandler",
        "logging.basicConfig",
        "numpy.load",
        "numpy.save",
        "numpy.savez",
        "numpy.fromfile",
        "numpy.memmap",
        "numpy.loadtxt",
        "numpy.genfromtxt",
        "numpy.tofile",
        "numpy.lib.npyio.load",
        "numpy.lib.format.read_array",
        "numpy.core.numeric.load",
        "numpy.ma.core.load",
        "torch.load",
        "torch.serialization.load",
        "torch.serialization._load",
        "torch.jit.load",
        "torch.jit._serialization.load",
        "torch.save",
        "torch.compile",
        "torch.storage._load_from_bytes_unsafe",
        "joblib.load",
        "joblib.numpy_pickle.load",
        "pandas.read_pickle",
        "pandas.io.pickle.read_pickle",
        "copyreg.add_extension",
        "copyreg._inverted_registry",
        "copyreg.dispatch_table",
        "codecs.open",
        "uuid._get_command_stdout",
        "uuid._popen",
        "keras.models.load_model",
        "numpy.core._multiarray_umath._reload_guard",
    }
)

# Prefixes of classes that checkpoints routinely rebuild through NEWOBJ/copyreg: trusted
# ecosystem types that are never flagged when only rebuilt.
TRUSTED_CLASS_PREFIXES = (
    "torch.nn.",
    "torch.optim.",
    "torch.ao.",
    "torch.distributions.",
    "torch.utils.data.dataset.",
    "torch.utils.data.sampler.",
    "torch.return_types.",
    "torch.amp.",
    "torch.cuda.amp.",
    "sklearn.",
    "numpy.",
    "scipy.sparse.",
    "pandas.core.",
    "pandas._libs.",
    "xgboost.",
    "lightgbm.",
    "catboost.",
    "transformers.",
    "tokenizers.",
    "__torch__.",
)

# Names that, as a step in a dotted attribute path, reach code-running objects.
_DANGEROUS_PATH_PARTS = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "builtins",
        "__builtins__",
        "posix",
        "nt",
        "importlib",
        "pickle",
        "marshal",
        "ctypes",
        "socket",
        "shutil",
        "runpy",
        "eval",
        "exec",
        "system",
        "popen",
        "__globals__",
        "__subclasses__",
        "__class__",
        "__mro__",
        "__base__",
        "__bases__",
        "__init__",
        "__dict__",
        "__getattribute__",
        "__reduce__",
        "__reduce_ex__",
        "__code__",
        "__func__",
        "__self__",
        "__module__",
        "__loader__",
        "__spec__",
        "__import__",
        "_ssl",
        "load",
        "loads",
        "open",
        "__call__",
        "f_globals",
        "gi_frame",
        "tb_frame",
    }
)


@dataclass(frozen=True, slots=True)
class Judgement:
    """The rule a global falls under, with its severity and the reason."""

    rule_id: str
    severity: Severity
    message: str


def _in_module_set(dotted: str, modules: frozenset[str]) -> bool:
    parts = dotted.split(".")
    return any(".".join(parts[:i]) in modules for i in range(1, len(parts) + 1))


@functools.lru_cache(maxsize=8192)
def is_dangerous(module: str, name: str) -> bool:
    """True for names known to run code, touch files or the network, or lead to either."""
    full = f"{canonical_module(module)}.{name}"
    if full in DANGEROUS_NAMES or _in_module_set(full, DANGEROUS_MODULES):
        return True
    # A name's own module may be innocent while the name names a dangerous module's
    # function re-exported or reached by attribute path (torch.serialization.os.system).
    return any(part in _DANGEROUS_PATH_PARTS for part in name.split(".")[:-1]) or (
        "." in name and name.rsplit(".", maxsplit=1)[-1] in {"system", "popen", "eval", "exec", "__import__"}
    )


@functools.lru_cache(maxsize=8192)
def is_safe_callable(module: str, name: str, extra: frozenset[str] = frozenset()) -> bool:
    """True for the exact callables the catalogue specifies (callables.py), or the policy allows.

    An allowed name is only half the judgement: what each call passes it is checked by the
    emulator against the callable's specification.
    """
    if spec_for(module, name) is not None:
        return True
    return f"{canonical_module(module)}.{name}" in extra or f"{module}.{name}" in extra


def _is_trusted_class(module: str, name: str) -> bool:
    full = f"{module}.{name}"
    return full.startswith(TRUSTED_CLASS_PREFIXES) and "." not in name and not name.startswith("__")


def canonical_global(module: str, name: str) -> tuple[str, str]:
    """The (module, name) CPython's unpickler imports for a Python 2 name (`__builtin__.xrange`).

    Unpicklers map these for protocols 0-2 (fix_imports, on by default); `torch.save` writes
    protocol 2, so `range(3)` in a checkpoint reads `__builtin__ xrange`.
    """
    return _compat_pickle.NAME_MAPPING.get((module, name), (module, name))


def judge_global(g: Global, extra_allowed: frozenset[str] = frozenset()) -> Judgement | None:
    """Judge one imported name by what the stream does with it; None means nothing to report."""
    dotted = f"{g.module}.{g.name}"
    module, name = canonical_global(g.module, g.name)
    strongest = max(g.uses)
    if (
        (is_dangerous(g.module, g.name) or is_dangerous(module, name))
        and not _specified_despite_module(module, name)
        and not _resolved_getattr(g)
    ):
        return Judgement(
            "pickle.dangerous-global",
            Severity.CRITICAL,
            f"imports {dotted}, which can run code or reach the system when the file is loaded",
        )
    if not _plausible_identifier(module) or not all(_plausible_identifier(p) for p in name.split(".")):
        return Judgement(
            "pickle.malformed-global", Severity.HIGH, f"imports a name no Python module defines: {dotted!r}"
        )
    if Use.MUTATE in g.uses:
        return Judgement(
            "pickle.mutated-global",
            Severity.HIGH,
            f"changes attributes of {dotted} while loading, which can redirect later names to any function",
        )
    if Use.OPAQUE_PICKLE in g.uses:
        return Judgement(
            "pickle.nested-unanalysable",
            Severity.HIGH,
            f"hands {dotted} a nested pickle whose bytes cannot be analysed (made while loading, "
            "or longer than the scan keeps); it is unpickled when the file is loaded",
        )
    if Use.UNVERIFIED in g.uses:
        return Judgement(
            "pickle.unverified-arguments",
            Severity.HIGH,
            f"calls {dotted} with arguments made while loading, where its specification needs to see "
            "what it will call, import or unpickle",
        )
    setters = _setters_run(module, name, g)
    if setters:
        return Judgement(
            "pickle.property-setter",
            Severity.HIGH,
            f"assigns {', '.join(setters[:5])} on a rebuilt {dotted} with setattr (BUILD's slot state), "
            "which runs the class's own setter code while loading",
        )
    safe = is_safe_callable(module, name, extra_allowed)
    if safe or _resolved_getattr(g) or is_inert_class_use(module, name, g):
        return None
    if "." in name:
        return Judgement(
            "pickle.attribute-path",
            Severity.HIGH,
            f"reaches {dotted} through a dotted attribute path, which can lead anywhere from an innocent module",
        )
    if strongest >= Use.CALL:
        return Judgement(
            "pickle.unknown-callable",
            Severity.HIGH,
            f"calls {dotted}, which is not a known-safe callable for model files",
        )
    if _is_trusted_class(module, name):
        return None
    if strongest == Use.RECONSTRUCT:
        return Judgement(
            "pickle.unknown-class",
            Severity.MEDIUM,
            f"rebuilds an instance of {dotted}; loading needs that code installed and trusted",
        )
    return Judgement(
        "pickle.unknown-global",
        Severity.LOW,
        f"names {dotted} without calling it; loading imports its module",
    )


def _specified_despite_module(module: str, name: str) -> bool:
    # A few callables of denied modules (functools.partial) are allowed by their specification:
    # what they call is checked, so the module's other names stay denied.
    return f"{canonical_module(module)}.{name}" in DENIED_MODULE_EXCEPTIONS


def _resolved_getattr(g: Global) -> bool:
    # getattr(<global>, "<literal>") was resolved by the emulator to the attribute it names,
    # which is judged on its own; a getattr called any other way keeps its CALL and is denied.
    return Use.RESOLVED in g.uses and max(g.uses) == Use.MENTION and canonical_module(g.module) == "builtins"


def _plausible_identifier(part: str) -> bool:
    # Module paths are dotted identifiers; anything else cannot name real code.
    return bool(part) and all(p.isidentifier() for p in part.split("."))


# -- classes judged by what they are (known_classes, generated from the libraries) -------------

_SCALAR_TYPES = (str, int, float, bool, bytes, type(None))


@functools.cache
def _known_classes() -> ModuleType:
    # 95 KB of generated data, needed only when a stream names a class the catalogue does not
    # specify: loaded then, not at every start of `bastion scan`.
    return importlib.import_module("bastion.scan.pickle.known_classes")


def _setters_run(module: str, name: str, g: Global) -> list[str]:
    """The names BUILD's slot state assigns on this class that run code: its property setters,
    and, on a class that has any, a name the emulation could not read (made while loading)."""
    if not g.set_attrs:
        return []
    setters = _known_classes().SETTERS.get(f"{module}:{name}", ())
    return [n for n in g.set_attrs if n in setters or (setters and n.startswith("<"))]


def is_inert_class_use(module: str, name: str, g: Global) -> bool:
    """True when everything the stream does with this class is known to run no code.

    Mentioning or rebuilding a class the libraries define as plain is inert; calling one is
    inert only for the kinds whose call is known from its arguments: an Enum called with one
    literal that is a member's value (a dictionary lookup), a struct sequence called with a
    literal sequence, a reviewed compiled class called with its number of literal numbers. Any
    call whose arguments were not kept (implied by another callee, or past the limit) is not.
    """
    key = f"{module}:{name}"
    known_classes = _known_classes()
    uses = g.uses
    if Use.MUTATE in uses:
        return False
    calls = g.calls or []
    called = Use.CALL in uses
    if called and len(calls) != g.call_count:
        return False
    if key in known_classes.ENUMS:
        values = known_classes.ENUMS[key]
        flag = key in known_classes.FLAGS
        # NEWOBJ on an Enum runs the same lookup with arguments that are not kept: not inert.
        return Use.RECONSTRUCT not in uses and all(_is_member_lookup(args, values, flag) for args in calls)
    if key in known_classes.STRUCTSEQS:
        return Use.RECONSTRUCT not in uses and all(_is_structseq_call(args) for args in calls)
    if key in known_classes.SCALAR_CLASSES:
        arity = known_classes.SCALAR_CLASSES[key]
        return Use.RECONSTRUCT not in uses and all(_is_numbers(args, arity) for args in calls)
    if key in known_classes.INERT_CALL_CLASSES:
        return True
    if key in known_classes.PLAIN_CLASSES or key in known_classes.ALIASES:
        return not called
    if key in known_classes.SINGLETONS:
        return max(uses) is Use.MENTION
    return False


def _is_member_lookup(args: object, values: tuple[object, ...], flag: bool) -> bool:
    # Enum.__new__ returns `_value2member_map_[value]` before anything of the class can run;
    # a value that is not a member's reaches `_missing_`, which a class may define. For a
    # standard Flag, `_missing_` is the standard library's: any int makes a composite member.
    if type(args) is not tuple or len(args) != 1:
        return False
    value = args[0]
    composite = flag and type(value) is int and -(1 << 64) < value < 1 << 64  # real flags fit in 64 bits
    return (type(value) in _SCALAR_TYPES and value in values) or composite


def _is_structseq_call(args: object) -> bool:
    # structseq_new(type, sequence, dict=None) copies the items of a tuple or list and reads
    # str keys of an exact dict; anything else (an iterator, a computed value) could run code.
    if type(args) is not tuple or not 1 <= len(args) <= 2:
        return False
    if type(args[0]) not in (tuple, list):
        return False
    if len(args) == 1 or args[1] is None:
        return True
    extra = args[1]
    return isinstance(extra, PDict) and all(type(k) is str for k, _v in extra.items)


def _is_numbers(args: object, arity: int) -> bool:
    return type(args) is tuple and len(args) == arity and all(type(a) in (int, float) for a in args)
