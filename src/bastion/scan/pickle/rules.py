"""Which imported names are safe, which are dangerous, and how bad an unknown one is.

The allow-list is the specification catalogue (callables.py): exact callables that real
checkpoints use, each with what it does with its arguments, which the emulator checks on
every call. The deny-list gives CRITICAL to what is known to run code, touch files or the
network, or lead to either through an indirection. Everything else is unknown, and its
severity follows what the stream does with it: calling it or mutating through it is
HIGH, rebuilding an instance of it through the standard reconstruction paths is MEDIUM
(a full model saved with `torch.save` names the user's own classes), a bare mention is LOW.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from bastion.findings import Severity
from bastion.scan.pickle.callables import DENIED_MODULE_EXCEPTIONS, canonical_module, spec_for
from bastion.scan.pickle.symbolic import Global, Use

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


def judge_global(g: Global, extra_allowed: frozenset[str] = frozenset()) -> Judgement | None:
    """Judge one imported name by what the stream does with it; None means nothing to report."""
    module, name = g.module, g.name
    strongest = max(g.uses)
    dotted = f"{module}.{name}"
    if is_dangerous(module, name) and not _specified_despite_module(module, name) and not _resolved_getattr(g):
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
    safe = is_safe_callable(module, name, extra_allowed)
    if safe or _resolved_getattr(g):
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
