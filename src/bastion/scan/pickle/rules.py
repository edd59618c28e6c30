"""Which imported names are safe, which are dangerous, and how bad an unknown one is.

The allow-list names exact callables that real checkpoints use (PyTorch's rebuild
functions and storages, NumPy's reconstruction, scikit-learn's Cython types, plain data
types). The deny-list gives CRITICAL to what is known to run code, touch files or the
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
from dataclasses import dataclass

from bastion.findings import Severity
from bastion.scan.pickle import known_classes
from bastion.scan.pickle.symbolic import Global, PDict, Use

# Python 2 names that CPython maps on load (pickle's fix_imports, _compat_pickle).
_MODULE_ALIASES = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "cPickle": "pickle",
    "_pickle": "pickle",
    "posix": "os",
    "nt": "os",
    "_operator": "operator",
    "_functools": "functools",
    "_io": "io",
    "httplib": "http.client",
    "urllib2": "urllib.request",
    "commands": "subprocess",
    "exceptions": "builtins",
    "_codecs": "codecs",
    "Queue": "queue",
    "cStringIO": "io",
    "StringIO": "io",
    "_posixsubprocess": "subprocess",
    "_winapi": "subprocess",
    "_sre": "re",
    "_socket": "socket",
    "_ssl": "ssl",
    "_ctypes": "ctypes",
    "_thread": "threading",
    "thread": "threading",
    "_lsprof": "cProfile",
    "_interpreters": "interpreters",
    "_xxsubinterpreters": "interpreters",
    "_multiprocessing": "multiprocessing",
    "_bootlocale": "locale",
}

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

# Names in a dangerous module that are inert: what they do is specified in known_classes
# (types.SimpleNamespace stores keyword arguments as attributes and runs nothing else).
INERT_IN_DANGEROUS_MODULES = frozenset({"types.SimpleNamespace"})

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

# Exact names real checkpoints call (REDUCE) or instantiate while loading.
SAFE_CALLABLES = frozenset(
    {
        # Plain data types.
        "builtins.set",
        "builtins.frozenset",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.str",
        "builtins.int",
        "builtins.float",
        "builtins.complex",
        "builtins.bool",
        "builtins.slice",
        "builtins.range",
        "builtins.len",
        "builtins.object",
        "builtins.Ellipsis",
        "builtins.NotImplemented",
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
        "collections.deque",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
        "pathlib.Path",
        "argparse.Namespace",
        "codecs.encode",
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "enum.Enum",
        "re._compile",
        "zoneinfo.ZoneInfo",
        "ipaddress.IPv4Address",
        "ipaddress.IPv6Address",
        # NumPy reconstruction (numpy 1 and 2 spellings).
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ma.core._mareconstruct",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random._generator.Generator",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.matrix",
        "numpy.ma.core.MaskedArray",
        "numpy.recarray",
        "numpy.record",
        "numpy.core.records.recarray",
        "numpy._core.records.recarray",
        "numpy.dtypes.Float64DType",
        "numpy.dtypes.Float32DType",
        "numpy.dtypes.Int64DType",
        # PyTorch serialization.
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_sparse_csr_tensor",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor",
        "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_wrapper_subclass",
        "torch._utils._rebuild_xla_tensor",
        "torch._utils._rebuild_mps_tensor",
        "torch._tensor._rebuild_from_type_v2",
        "torch._tensor._rebuild_from_type",
        "torch.serialization._get_layout",
        "torch.storage._load_from_bytes",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.device",
        "torch.Size",
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
        "torch.nn.parameter.UninitializedParameter",
        "torch.torch_version.TorchVersion",
        "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_tensorlist",
        "torch.jit._pickle.build_doublelist",
        "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensor_from_id",
        "torch.jit._pickle.restore_type_tag",
        "torch._C._nn.gelu",
        "torch.per_tensor_affine",
        "torch.per_channel_affine",
        # scikit-learn's Cython types rebuild by calling their class.
        "sklearn.tree._tree.Tree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        # Cython's `newObj(cls)` only calls cls.__new__(cls).
        "sklearn.neighbors._kd_tree.newObj",
        "sklearn.neighbors._ball_tree.newObj",
        "sklearn.neighbors._binary_tree.newObj",
        "sklearn.metrics._dist_metrics.newObj",
        "sklearn.utils._bunch.Bunch",
        # joblib wraps arrays it writes next to the pickle.
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "joblib.numpy_pickle.ZNDArrayWrapper",
        "joblib.numpy_pickle_utils.NDArrayWrapper",
        "joblib.numpy_pickle.NDArrayWrapper",
    }
)

# Module prefixes whose callables real checkpoints call while loading.
SAFE_CALLABLE_PREFIXES = (
    "sklearn._loss._loss.Cy",
    "torch.ao.quantization.",
    "numpy.dtypes.",
)

# Packages whose Cython `__pyx_unpickle_*` reconstructors are trusted.
_CYTHON_TRUSTED = ("numpy.", "sklearn.", "scipy.", "pandas._libs.")

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

TORCH_TYPES = frozenset(
    {
        "FloatStorage",
        "DoubleStorage",
        "HalfStorage",
        "BFloat16Storage",
        "LongStorage",
        "IntStorage",
        "ShortStorage",
        "CharStorage",
        "ByteStorage",
        "BoolStorage",
        "ComplexFloatStorage",
        "ComplexDoubleStorage",
        "QInt8Storage",
        "QUInt8Storage",
        "QInt32Storage",
        "QUInt4x2Storage",
        "QUInt2x4Storage",
        "UntypedStorage",
        "float32",
        "float",
        "float64",
        "double",
        "float16",
        "half",
        "bfloat16",
        "int64",
        "long",
        "int32",
        "int",
        "int16",
        "short",
        "int8",
        "uint8",
        "bool",
        "complex64",
        "cfloat",
        "complex128",
        "cdouble",
        "complex32",
        "chalf",
        "qint8",
        "quint8",
        "qint32",
        "quint4x2",
        "quint2x4",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "uint16",
        "uint32",
        "uint64",
        "bits8",
        "bits16",
        "strided",
        "sparse_coo",
        "sparse_csr",
        "sparse_csc",
        "sparse_bsr",
        "sparse_bsc",
        "_mkldnn",
        "contiguous_format",
        "channels_last",
        "channels_last_3d",
        "preserve_format",
        "per_tensor_affine",
        "per_channel_affine",
        "per_tensor_symmetric",
        "per_channel_symmetric",
        "per_channel_affine_float_qparams",
        "Size",
        "device",
        "dtype",
        "layout",
        "Tensor",
    }
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


@functools.lru_cache(maxsize=8192)
def canonical_module(module: str) -> str:
    """The module a name really resolves to, after Python 2 and C-accelerator aliases."""
    head, _, rest = module.partition(".")
    alias = _MODULE_ALIASES.get(module) or _MODULE_ALIASES.get(head)
    if alias is None:
        return module
    return alias if module in _MODULE_ALIASES else f"{alias}.{rest}"


def _in_module_set(dotted: str, modules: frozenset[str]) -> bool:
    parts = dotted.split(".")
    return any(".".join(parts[:i]) in modules for i in range(1, len(parts) + 1))


@functools.lru_cache(maxsize=8192)
def is_dangerous(module: str, name: str) -> bool:
    """True for names known to run code, touch files or the network, or lead to either."""
    full = f"{canonical_module(module)}.{name}"
    if full in DANGEROUS_NAMES or (_in_module_set(full, DANGEROUS_MODULES) and full not in INERT_IN_DANGEROUS_MODULES):
        return True
    # A name's own module may be innocent while the name names a dangerous module's
    # function re-exported or reached by attribute path (torch.serialization.os.system).
    return any(part in _DANGEROUS_PATH_PARTS for part in name.split(".")[:-1]) or (
        "." in name and name.rsplit(".", maxsplit=1)[-1] in {"system", "popen", "eval", "exec", "__import__"}
    )


@functools.lru_cache(maxsize=8192)
def is_safe_callable(module: str, name: str, extra: frozenset[str] = frozenset()) -> bool:
    """True for the exact callables real checkpoints use while loading."""
    full = f"{canonical_module(module)}.{name}"
    if full in SAFE_CALLABLES or full in extra or f"{module}.{name}" in extra:
        return True
    if module == "torch" and name in TORCH_TYPES:
        return True
    # Cython's generated `__pyx_unpickle_<Class>` rebuilds its own extension type.
    if name.startswith("__pyx_unpickle_") and "." not in name and full.startswith(_CYTHON_TRUSTED):
        return True
    return full.startswith(SAFE_CALLABLE_PREFIXES) and "." not in name


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
    if is_dangerous(g.module, g.name) or is_dangerous(module, name):
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
    safe = is_safe_callable(module, name, extra_allowed)
    if safe or is_inert_class_use(module, name, g):
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


def _plausible_identifier(part: str) -> bool:
    # Module paths are dotted identifiers; anything else cannot name real code.
    return bool(part) and all(p.isidentifier() for p in part.split("."))


# -- classes judged by what they are (known_classes, generated from the libraries) -------------

_SCALAR_TYPES = (str, int, float, bool, bytes, type(None))


def is_inert_class_use(module: str, name: str, g: Global) -> bool:
    """True when everything the stream does with this class is known to run no code.

    Mentioning or rebuilding a class the libraries define as plain is inert; calling one is
    inert only for the kinds whose call is known from its arguments: an Enum called with one
    literal that is a member's value (a dictionary lookup), a struct sequence called with a
    literal sequence, a reviewed compiled class called with its number of literal numbers. Any
    call whose arguments were not kept (implied by another callee, or past the limit) is not.
    """
    key = f"{module}:{name}"
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
