"""TorchScript archives: does loading this archive run code, and what can that code reach?

A TorchScript archive (torch.jit.save) is a program: its `code/` folder holds Python-syntax
sources that torch.jit.load compiles and runs, and torch.load hands such an archive to
torch.jit.load, even with weights_only=True before PyTorch 2.6 (CVE-2025-32434). Methods
named `__setstate__` run while the archive loads; any op the code calls (torch.from_file,
torch.save, custom ops under torch.ops) runs then or at the first forward call.

The sources are parsed with `ast` and never executed or compiled. Every call is
resolved to a dotted name and judged: ops that reach files, processes or the network are
CRITICAL, ops outside PyTorch's own math (custom op namespaces, custom classes, prim ops
not known to be inert) are HIGH, a `__setstate__` method is MEDIUM (what it calls is judged
like every other call), and a program that calls only PyTorch's math is a LOW note: loading it
runs no code an attacker chose, but it is still code, which the serving gateway refuses to load.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext

if TYPE_CHECKING:
    from bastion.scan.formats.ziparchive import ZipMember
    from bastion.scan.source import MemorySource

_MAX_SOURCE = 16 << 20
_MAX_FINDINGS = 16

# Final names of ops and builtins that touch files, processes, the network or code
# loading, in any namespace and as methods (torch.UntypedStorage.from_file, x.save(...)).
_REACHING_OPS = frozenset(
    {
        "from_file",
        "save",
        "load",
        "_save",
        "_load",
        "open",
        "_write_file",
        "_load_for_mobile",
        "_save_for_mobile",
        "_save_parameters",
        "_load_parameters",
        "load_library",
        "_save_jit_module",
        "_load_jit_module",
        "_import_ir_module_from_package",
        "import_ir_module",
        "exec",
        "eval",
        "compile",
        "__import__",
        "system",
        "popen",
        "Popen",
        "rpc_sync",
        "rpc_async",
        "rpc_remote",
        "remote",
        "_rpc_sync_torchscript",
        "_rpc_async_torchscript",
        "_remote_torchscript",
    }
)
# Namespaces of torch.ops whose ops are PyTorch's own tensor math. `prim` is PyTorch's own
# too, but it also holds the interpreter's machinery; only these of its ops are inert.
_INERT_NAMESPACES = frozenset({"aten", "quantized", "_quantized"})  # PyTorch's math, float and quantized
_INERT_PRIM = frozenset(
    {
        "unchecked_cast",
        "NumToTensor",
        "device",
        "dtype",
        "layout",
        "shape",
        "data",
        "is_cuda",
        "is_cpu",
        "is_mps",
        "is_xpu",
        "is_quantized",
        "is_sparse",
        "is_meta",
        "min",
        "max",
        "abs",
        "RaiseException",
        "TupleIndex",
        "requires_grad",
        "grad",
        "name",
        "index",
    }
)
# Names every serialized TorchScript program uses: builtins the printer emits.
_PROGRAM_BUILTINS = frozenset(
    {
        "annotate",
        "uninitialized",
        "unchecked_cast",
        "isinstance",
        "len",
        "int",
        "float",
        "bool",
        "str",
        "range",
        "enumerate",
        "zip",
        "min",
        "max",
        "abs",
        "round",
        "divmod",
        "list",
        "dict",
        "tuple",
        "hash",
        "ord",
        "chr",
        "hex",
        "oct",
        "bin",
        "print",
        "sorted",
        "all",
        "any",
        "sum",
        "complex",
        "_unwrap_optional",
        "Device",
        "Future",
        "Await",
        "RRef",
        "Tensor",
        "NoneType",
        "Optional",
        "List",
        "Dict",
        "Tuple",
        "Union",
        "Final",
        "ScriptObject",
        "CONSTANTS",
    }
)


def is_code_member(name: str, folder: str) -> bool:
    """True for a TorchScript source torch.jit.load compiles: `<folder>/code/**.py`."""
    lower = name.lower()
    return lower.startswith(f"{folder}/code/".lower()) and lower.endswith(".py")


def scan_code(ctx: ScanContext, src: MemorySource, members: list[ZipMember], folder: str, loc: Location) -> None:
    """Judge the TorchScript sources of a PyTorch zip, if it has any.

    Args:
        ctx: the scan's findings and limits.
        src: the whole archive.
        members: its central directory.
        folder: the archive folder PyTorch reads records from.
        loc: where the archive is.
    """
    from bastion.scan.formats.ziparchive import open_member  # noqa: PLC0415  # ziparchive imports this module

    sources = [m for m in members if not m.is_dir and is_code_member(m.name, folder)]
    if not sources:
        return
    ctx.saw("torchscript")
    before = len(ctx.findings)
    for member in sources:
        mloc = loc.inside(member.name)
        if member.size > _MAX_SOURCE:
            ctx.incomplete(mloc, f"TorchScript source of {member.size} bytes, over {_MAX_SOURCE}", "torchscript")
            continue
        try:
            text = open_member(src, member, ctx, member.name).read(member.size)
        except (ArtifactError, LimitExceeded) as err:
            ctx.incomplete(mloc, f"TorchScript source could not be read: {err.message}", "torchscript")
            continue
        _judge_source(ctx, text, mloc)
    if not any(
        f.rule_id.startswith("torch.torchscript") and f.severity >= Severity.HIGH for f in ctx.findings[before:]
    ):
        ctx.add(
            "torch.torchscript-program",
            Severity.LOW,
            loc.inside(f"{folder}/code/"),
            f"a TorchScript program ({len(sources)} source files) that calls only PyTorch's own math; "
            "torch.load runs it through torch.jit.load",
            "torchscript",
        )


def _judge_source(ctx: ScanContext, text: bytes, loc: Location) -> None:
    try:
        tree = ast.parse(text.decode("utf-8"), mode="exec")
    except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError) as err:
        # torch.jit.load compiles what it reads; what ast cannot parse cannot be judged.
        ctx.add(
            "torch.torchscript-code",
            Severity.HIGH,
            loc,
            f"TorchScript source that cannot be parsed ({type(err).__name__}); its behaviour is unknown",
            "torchscript",
        )
        return
    reported = 0
    for node in ast.walk(tree):
        if reported >= _MAX_FINDINGS:
            break
        if isinstance(node, ast.FunctionDef) and node.name == "__setstate__":
            # It runs while the archive loads. What it calls is judged like every other call in
            # the program (below, in every file): an op outside PyTorch's math is HIGH or
            # CRITICAL there. A __setstate__ that only reaches PyTorch's math is what every
            # quantized module's scripted code holds (it re-packs the weights).
            ctx.add(
                "torch.torchscript-setstate",
                Severity.MEDIUM,
                loc,
                "a TorchScript __setstate__ method: torch.jit.load (and torch.load) runs it while loading",
                "torchscript",
                "__setstate__",
            )
            reported += 1
        elif isinstance(node, ast.Call):
            verdict = _judge_call(node.func)
            if verdict is not None:
                rule, severity, name = verdict
                what = (
                    "reaches files, processes or the network" if severity is Severity.CRITICAL else "is not known inert"
                )
                ctx.add(rule, severity, loc, f"TorchScript code calls {name}, which {what}", "torchscript", name)
                reported += 1


def _dotted(node: ast.expr) -> list[str] | None:
    """`torch.ops.aten.add` as its parts; None when the callee is computed (a method on a value)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _judge_call(func: ast.expr) -> tuple[str, Severity, str] | None:
    parts = _dotted(func)
    if parts is None:
        # A method called on a value: judged by its name alone (x.save(...), storage.from_file).
        attr = func.attr if isinstance(func, ast.Attribute) else ""
        if attr in _REACHING_OPS:
            return "torch.torchscript-dangerous-op", Severity.CRITICAL, f"<value>.{attr}"
        return None
    name = ".".join(parts)
    if parts[-1] in _REACHING_OPS:
        return "torch.torchscript-dangerous-op", Severity.CRITICAL, name
    if parts[0] == "torch" and len(parts) >= 2 and parts[1] in ("ops", "classes"):
        rest = parts[2:]
    elif parts[0] in ("ops", "classes"):
        rest = parts[1:]
    else:
        return None  # torch.<op>, builtins, the archive's own classes and methods (self.x.forward)
    kind = parts[1] if parts[0] == "torch" else parts[0]
    if kind == "ops" and rest and (rest[0] in _INERT_NAMESPACES or (rest[0] == "prim" and rest[-1] in _INERT_PRIM)):
        return None
    return "torch.torchscript-code", Severity.HIGH, name
