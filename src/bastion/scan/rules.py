"""The catalogue of scan rules: every rule id Bastion reports, what it means and what to do.

One entry per rule id: its default severity (call sites may pass another where the same
rule covers cases of different weight, such as a custom ONNX operator that runs Python),
a one-line summary, and help text that says what was found, why it matters and how to fix
it. The catalogue feeds SARIF's `rules[]`, the README's rule table and `bastion scan
--explain RULE`; a test checks that every rule id used in the source is listed here and
that nothing listed here is unused. Rule ids are stable: renaming one breaks allow-lists.
"""

from __future__ import annotations

import difflib
import textwrap
from dataclasses import dataclass

from bastion.errors import ConfigError
from bastion.findings import Severity


@dataclass(frozen=True, slots=True)
class Rule:
    """One catalogue entry."""

    id: str
    severity: Severity
    summary: str
    help: str
    incomplete: bool = False
    """The rule reports input that was not fully analysed (verdict INCOMPLETE, exit 2)."""

    @property
    def family(self) -> str:
        """The part before the dot: the format or area the rule belongs to."""
        return self.id.partition(".")[0]


_C, _H, _M, _L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW

_RULES = (
    # -- pickle -----------------------------------------------------------------------------
    Rule(
        "pickle.dangerous-global",
        _C,
        "Imports a function that runs code or reaches the system",
        "The pickle imports a name such as os.system, builtins.eval, subprocess.Popen or "
        "importlib.import_module. Unpickling it (pickle.load, torch.load without weights_only, "
        "joblib.load, numpy.load with allow_pickle) imports and can call it, so loading the file "
        "runs the attacker's code. Do not load the file. Re-create the model from a trusted "
        "source, and prefer formats that cannot carry code (safetensors, ONNX without custom "
        "operators).",
    ),
    Rule(
        "pickle.unknown-callable",
        _H,
        "Calls a function that is not known to be safe",
        "The stream calls (REDUCE, NEWOBJ, OBJ, INST) a callable outside Bastion's list of "
        "callables whose behaviour is specified. Loading the file runs that function with "
        "arguments chosen by whoever wrote the file. If the function is yours and trusted, add "
        "it to the policy's scan.allow_globals; otherwise treat the file as unsafe.",
    ),
    Rule(
        "pickle.unknown-class",
        _M,
        "Rebuilds an instance of a class that is not known to be safe",
        "Loading the file imports the class's module and rebuilds an instance of it, which "
        "runs that module's import-time code and the class's __setstate__ or __reduce__ "
        "logic. Usually a model's own class; the loader needs that code installed and trusted. "
        "Allow-list the class in the policy once you have reviewed it.",
    ),
    Rule(
        "pickle.unknown-global",
        _L,
        "Names a global that it never calls",
        "The stream imports a name without calling or rebuilding it. Importing still runs the "
        "module's top-level code, so the name should be one you expect in this file.",
    ),
    Rule(
        "pickle.attribute-path",
        _H,
        "Reaches a name through a dotted attribute path",
        "A dotted name such as torch.serialization.os.system walks attributes from an "
        "innocent module to any object it references, which is how allow-lists of modules "
        "were bypassed. Real checkpoints do not need it; treat the file as unsafe.",
    ),
    Rule(
        "pickle.malformed-global",
        _H,
        "Imports a name no Python module defines",
        "The module or attribute name is not a sequence of identifiers. A loader may still "
        "resolve it in surprising ways, and scanners that skip such names have been bypassed. "
        "No legitimate writer produces it; treat the file as crafted.",
    ),
    Rule(
        "pickle.mutated-global",
        _H,
        "Changes attributes of an imported module or class while loading",
        "BUILD on an imported global rewrites a module or class in the loading process, so "
        "a later, innocent-looking name can be redirected to any function. Real checkpoints "
        "never do this; treat the file as unsafe.",
    ),
    Rule(
        "pickle.property-setter",
        _H,
        "Sets an attribute whose assignment runs the class's code",
        "BUILD applies a state's second part (slot state) with setattr, one name at a time, and a "
        "property or descriptor with a setter runs the class's own code for that name. Pickles "
        "that libraries write for these classes carry their attributes in the first part, which "
        "is stored without running anything; treat the file as unsafe.",
    ),
    Rule(
        "pickle.computed-global",
        _H,
        "Imports a name that is computed while loading",
        "STACK_GLOBAL received a module or name that is not a literal string (built through "
        "the memo, a call or a concatenation), so what it imports cannot be known without "
        "running the file. Treat the file as unsafe.",
    ),
    Rule(
        "pickle.call-chain",
        _H,
        "Calls the result of a call, or something that is not a callable",
        "The stream calls an object that a previous call returned (f(x)(y)), or applies REDUCE "
        "to data. Such chains turn an innocent first function into a way to reach any other. "
        "Real writers do not produce them; treat the file as unsafe.",
    ),
    Rule(
        "pickle.build-dunder",
        _H,
        "Sets dunder attributes through BUILD",
        "BUILD state that sets names like __class__, __dict__ or __reduce__ changes what an "
        "object is or does after it is built. Real checkpoints do not need it; treat the file "
        "as crafted.",
    ),
    Rule(
        "pickle.extension-registry",
        _H,
        "Imports through the copyreg extension registry",
        "EXT1/EXT2/EXT4 import whatever the loading process registered under a code, so the "
        "imported name depends on the loader's environment and cannot be checked statically. "
        "Ordinary writers never use it.",
    ),
    Rule(
        "pickle.frame-violation",
        _H,
        "Frames that readers disagree on",
        "An opcode or its argument straddles a FRAME boundary, or frames are nested or "
        "mis-sized. CPython's C unpickler ignores frame limits while other readers honour "
        "them, so two tools see different opcodes. No pickler writes this; it hides code.",
    ),
    Rule(
        "pickle.more-globals",
        _L,
        "More flagged names than are listed",
        "The stream imports more flagged names than the report lists one by one; the most "
        "severe are listed. Its severity is that of the worst name left out.",
    ),
    Rule(
        "pickle.multiple-streams",
        _L,
        "Another pickle follows the first",
        "pickle.load stops at the first STOP, but loaders that read on (legacy torch.load, "
        "custom readers) run what follows. Each stream is analysed; this notes that the file "
        "holds more than one.",
    ),
    Rule(
        "pickle.trailing-data",
        _L,
        "Bytes follow the pickle",
        "Data after the last pickle is never read by pickle.load, but other tools may read "
        "it, and it is a common place to hide a second payload or a polyglot. Re-save the "
        "file from its source to drop it.",
    ),
    # -- NumPy ------------------------------------------------------------------------------
    Rule(
        "npy.trailing-data",
        _L,
        "Bytes follow the array data",
        "np.load reads exactly the bytes the header's shape and dtype call for; anything after "
        "them is ignored by NumPy and may be read by another tool.",
    ),
    # -- archives ---------------------------------------------------------------------------
    Rule(
        "archive.path-traversal",
        _H,
        "A member path escapes the extraction folder",
        "A member named with '..', an absolute path or a drive letter is written outside the "
        "folder it is extracted into (zip slip), overwriting files such as shell start-up "
        "scripts. Do not extract the archive.",
    ),
    Rule(
        "archive.hidden-member",
        _H,
        "A member lies outside the zip's central directory",
        "A local header that the central directory does not list is extracted by streaming "
        "unzippers and missed by most scanners: two tools see two different archives.",
    ),
    Rule(
        "archive.name-mismatch",
        _M,
        "A zip member's local and central names differ",
        "PyTorch's reader locates members by the central directory and does not compare names; "
        "zipfile refuses the archive. Scanners built on zipfile were bypassed this way "
        "(CVE-2025-1944). Bastion scans the bytes the loader reads.",
    ),
    Rule(
        "archive.bad-crc",
        _M,
        "A zip member's CRC does not match its data",
        "PyTorch loads such members without checking; zipfile-based tools refuse them, so a "
        "scanner on zipfile sees nothing. The member was scanned as PyTorch reads it.",
    ),
    Rule(
        "archive.encryption-flag",
        _M,
        "A zip member is flagged as encrypted",
        "Loaders that ignore the flag read the data as plain bytes, while scanners that honour "
        "it skip the member (CVE-2025-10156). The member was scanned as plain data.",
    ),
    Rule(
        "archive.link",
        _L,
        "A tar member is a link",
        "Extracting a symbolic or hard link can make later members write through it to any "
        "path; a link whose target leaves the folder is reported as HIGH.",
    ),
    # -- PyTorch ----------------------------------------------------------------------------
    Rule(
        "pytorch.storage-mismatch",
        _H,
        "A tensor storage does not match the archive record torch.load maps for it",
        "data.pkl names each tensor storage by a persistent id ('storage', type, key, location, "
        "element count); torch.load maps the record data/<key> and views that many elements of "
        "the type over it without comparing sizes. A storage larger than its record, a key with "
        "no record or two records, a key that is a path, or an unknown element type makes the "
        "loader read or write past the data or fail: memory corruption under weights_only "
        "loading (CVE-2026-24747). Do not load the file; re-export it from a trusted source.",
    ),
    Rule(
        "torch.torchscript-code",
        _H,
        "TorchScript code runs on load or calls ops outside PyTorch's math",
        "The archive holds TorchScript (a code/ folder), which torch.jit.load compiles and runs, "
        "and torch.load hands to torch.jit.load, with weights_only=True before PyTorch 2.6 "
        "(CVE-2025-32434), and its __setstate__ methods run while the archive loads. A custom op "
        "(torch.ops.<namespace>), a custom class, a prim op not known to be inert, or source "
        "that cannot be parsed does what its library or the attacker chose. The sources are "
        "parsed, never run. Load only TorchScript you built, or export the model to ONNX or "
        "safetensors.",
    ),
    Rule(
        "torch.torchscript-setstate",
        _M,
        "A TorchScript __setstate__ runs while the archive loads",
        "torch.jit.load (and torch.load, which hands TorchScript archives to it) runs every "
        "__setstate__ method of the program as it loads. Its calls are judged like all others "
        "in the program, so one that reaches outside PyTorch's math is also reported at HIGH or "
        "CRITICAL; alone, this is what the scripted code of quantized modules holds (it re-packs "
        "their weights). Block at MEDIUM to refuse any code that runs on load.",
    ),
    Rule(
        "torch.torchscript-dangerous-op",
        _C,
        "TorchScript code calls an op that reaches files, processes or the network",
        "The archive's TorchScript calls an op such as torch.from_file, torch.save, torch.load, "
        "open or an RPC op. It runs when the archive is loaded (from __setstate__) or on its "
        "first call, with the user's rights: it can create, read or overwrite files. Do not "
        "load the archive.",
    ),
    Rule(
        "torch.torchscript-program",
        _L,
        "The archive is a TorchScript program that calls only PyTorch's math",
        "A TorchScript archive is code: torch.load runs it through torch.jit.load. Its sources "
        "were parsed and call only PyTorch's own tensor ops and builtins, with no __setstate__, "
        "so loading it runs nothing an attacker chose; this is a note, not a block. Bastion's "
        "serving gateway still refuses TorchScript (serve/loaders.py): a program is judged by "
        "the people who deploy it, not by a scanner. Prefer safetensors for weights.",
    ),
    # -- other formats ----------------------------------------------------------------------
    Rule(
        "keras.lambda-layer",
        _C,
        "A Keras Lambda layer carries Python code",
        "Lambda layers store marshalled Python bytecode that runs when the model is loaded "
        "(with safe_mode off, or in Keras 2). Replace the Lambda with a registered custom "
        "layer whose code you ship and review, and load with safe_mode=True.",
    ),
    Rule(
        "keras.unsafe-module",
        _C,
        "A Keras config deserialises a function that runs code",
        "Keras 3 configs name a module and a function to import (module: builtins, config: "
        "eval); loading the model imports and calls it. Treat the file as unsafe.",
    ),
    Rule(
        "keras.custom-object",
        _M,
        "A Keras config needs custom code to load",
        "The config names a class or function outside Keras and TensorFlow; loading runs "
        "whatever that module defines. HIGH when it names a plain function. Review the code "
        "and ship it with the model, or register it explicitly.",
    ),
    Rule(
        "onnx.custom-operator",
        _H,
        "An ONNX operator from a custom domain",
        "The graph uses an operator outside the standard domains; running it needs code that "
        "is not part of the model, and onnxruntime-extensions' Py* operators run Python "
        "(CRITICAL). Make sure the operator library is one you trust.",
    ),
    Rule(
        "onnx.external-data-traversal",
        _C,
        "ONNX tensor data is read from outside the model's folder",
        "An external-data location with '..' or an absolute path makes the loader read any "
        "file on the machine into the model (CVE-2024-27318, CVE-2024-5187). Do not load it.",
    ),
    Rule(
        "tf.python-op",
        _C,
        "A TensorFlow graph runs Python (PyFunc)",
        "PyFunc, EagerPyFunc and similar ops call Python functions registered in the loading "
        "process; a graph that contains them runs code outside the model. Treat it as unsafe.",
    ),
    Rule(
        "tf.file-op",
        _H,
        "A TensorFlow graph reads or writes files",
        "Ops such as ReadFile, WriteFile, MatchingFiles or Save touch the machine's file "
        "system when the graph runs, which can leak or overwrite files. Review why a model "
        "needs them.",
    ),
    Rule(
        "gguf.template-injection",
        _C,
        "A GGUF chat template reaches Python internals",
        "Runtimes such as llama-cpp-python render the chat template with Jinja; a template "
        "that climbs to __globals__, __builtins__ or os escapes the sandbox and runs code "
        "(CVE-2024-34359). Replace the template with the model family's standard one.",
    ),
    Rule(
        "safetensors.bad-header",
        _H,
        "The safetensors header is invalid",
        "The header's length, JSON, dtypes, shapes or offsets are inconsistent. safetensors "
        "cannot run code, but a header that lies is how data is hidden or a parser attacked.",
    ),
    Rule(
        "safetensors.overlap",
        _H,
        "Two safetensors tensors share bytes",
        "Overlapping tensors are refused by the reference loader and let one region be read "
        "two ways. Re-save the file with the safetensors library.",
    ),
    Rule(
        "safetensors.gap",
        _H,
        "Bytes between safetensors tensors belong to no tensor",
        "Unclaimed bytes inside the data section are a place to hide a payload for another "
        "tool to pick up. Re-save the file with the safetensors library.",
    ),
    Rule(
        "safetensors.out-of-bounds",
        _H,
        "safetensors tensors claim more data than the file holds",
        "The header points past the end of the file: the file is truncated or crafted, and the "
        "tensors it names cannot be read. Download it again from a trusted source.",
    ),
    Rule(
        "safetensors.trailing-data",
        _H,
        "Bytes after the last safetensors tensor",
        "Data after the last tensor is ignored by the loader and is a place to hide a payload "
        "(a polyglot). Re-save the file with the safetensors library.",
    ),
    Rule(
        "secrets.credential",
        _H,
        "A credential is embedded in the file",
        "A private key or a token shaped like a cloud or API key was found in text, metadata "
        "or a notebook. Anyone who downloads the model gets it. Revoke it and remove it.",
    ),
    Rule(
        "joblib.sidecar-escape",
        _H,
        "A joblib array wrapper loads a sidecar file from outside the model's folder",
        "joblib's NDArrayWrapper names a file next to the pickle that joblib.load then reads "
        "with numpy.load(allow_pickle=True). A name that leaves the folder makes loading read, "
        "and unpickle, a file the model does not ship. Do not load the file.",
    ),
    Rule(
        "keras.external-model",
        _H,
        "A Keras layer loads a model from outside this file",
        "A TFSMLayer loads and runs a TensorFlow SavedModel from the path in its config when "
        "the model is built; that model is not part of this file and was not scanned with it. "
        "Ship the SavedModel with the model and scan it, or remove the layer.",
    ),
    Rule(
        "tf.unreviewed-op",
        _L,
        "A TensorFlow graph uses an op Bastion does not know to be inert",
        "Bastion judges ops that run Python, touch files or the network, or run embedded "
        "graphs; every other op outside its list of common math, array and control ops is "
        "reported once per file so that a new dangerous op is visible, not silently passed. "
        "Check what the op does before trusting the model.",
    ),
    Rule(
        "tf.embedded-graph",
        _M,
        "A TensorFlow op runs a graph carried in a tensor",
        "DatasetFromGraph and similar ops run a GraphDef serialised into a string constant. "
        "Bastion parses graphs found in string tensors and judges their ops with the outer "
        "graph's; this finding records that one is there.",
    ),
    Rule(
        "tf.remote-op",
        _H,
        "A TensorFlow graph talks to other processes or hosts",
        "Ops such as RemoteCall, _Send/_Recv or tf.data service datasets reach other "
        "processes or machines when the graph runs. A model for inference has no need of them.",
    ),
    Rule(
        "keras.deserialised-field",
        _M,
        "A Keras layer deserialises an object stored in its config",
        "Some layer classes hand a config field to a deserialiser when the model is built "
        "(TorchModuleWrapper torch.loads its base64 `module` with weights_only=False, "
        "CVE-2025-49655). Bastion decodes the field and scans it as the nested file it is; "
        "its own findings say whether it carries code.",
    ),
    Rule(
        "keras.external-file",
        _H,
        "A Keras config makes the loader read a file outside the model",
        "A layer opens the file its config names while it is built (a lookup layer's "
        "vocabulary path, CVE-2025-12058; TFSMLayer's filepath, CVE-2026-1462). An absolute "
        "path, '..', '~' or a URL reads the machine's files or the network (HIGH); a relative "
        "path reads from the loading process's folder (MEDIUM). Ship the data inside the model.",
    ),
    Rule(
        "keras.path-traversal",
        _H,
        "A Keras layer name is a path that leaves its folder",
        "Keras uses layer names as file names in the weights store; a name with '..' or an "
        "absolute path makes saving or loading touch files outside it (CVE-2026-12479). "
        "Do not load the model.",
    ),
    Rule(
        "pickle.nested-unanalysable",
        _H,
        "A nested pickle whose bytes cannot be analysed",
        "The stream hands a loads-like function (pickle.loads, torch.storage._load_from_bytes) "
        "bytes made while loading, or longer than the scan keeps, so the inner pickle it "
        "unpickles cannot be seen. What cannot be analysed is not passed; treat it as unsafe.",
    ),
    Rule(
        "pickle.unverified-arguments",
        _H,
        "An allowed callable gets arguments made while loading",
        "The callable is allowed only with arguments its specification can check (what it "
        "calls, imports or unpickles); here they are computed while loading, so what it will "
        "do cannot be known without running the file. Treat it as unsafe.",
    ),
    Rule(
        "gguf.template-computed-name",
        _H,
        "A GGUF chat template builds an attribute name at render time",
        "An attribute or item name is computed by the template (string concatenation, filters, variables), so what it reaches cannot be read from its text; this is how dunder names are spelt to evade keyword lists. Replace the template with the model family's standard one.",
    ),
    Rule(
        "gguf.template-global",
        _H,
        "A GGUF chat template uses a global that leads to Python",
        "The template uses a Jinja global (such as cycler, joiner or lipsum) that real chat templates never use and whose attributes lead to Python's internals: a known way out of the sandbox. Replace the template with the model family's standard one.",
    ),
    Rule(
        "gguf.template-loader",
        _H,
        "A GGUF chat template loads another template",
        "The template includes, imports or extends another template; with a file loader the runtime reads files beside the model, and what they do is not in this file. Real chat templates are self-contained; replace it.",
    ),
    Rule(
        "hf-tokenizer.template-injection",
        _C,
        "A tokenizer's chat template reaches Python internals",
        "The template reads an attribute or item such as __globals__, __builtins__, __subclasses__ or os through Jinja's getattr; rendering it escapes the sandbox and can run code (CVE-2024-34359). Replace the template with the model family's standard one.",
    ),
    Rule(
        "hf-tokenizer.template-computed-name",
        _H,
        "A tokenizer's chat template builds an attribute name at render time",
        "An attribute or item name is computed by the template (string concatenation, filters, variables), so what it reaches cannot be read from its text; this is how dunder names are spelt to evade keyword lists. Replace the template with the model family's standard one.",
    ),
    Rule(
        "hf-tokenizer.template-global",
        _H,
        "A tokenizer's chat template uses a global that leads to Python",
        "The template uses a Jinja global (such as cycler, joiner or lipsum) that real chat templates never use and whose attributes lead to Python's internals: a known way out of the sandbox. Replace the template with the model family's standard one.",
    ),
    Rule(
        "hf-tokenizer.template-loader",
        _H,
        "A tokenizer's chat template loads another template",
        "The template includes, imports or extends another template; with a file loader the runtime reads files beside the model, and what they do is not in this file. Real chat templates are self-contained; replace it.",
    ),
    # -- the scan itself --------------------------------------------------------------------
    Rule(
        "scan.unknown-format",
        _L,
        "Binary content of a format Bastion does not recognise",
        "No plug-in recognised the content. No loader Bastion knows would run it: an "
        "unpickler rejects its first byte (every file starting with an opcode was tried as a "
        "pickle, and binary data that names imports fails closed) and the other code-running "
        "loaders need signatures that were checked. It is "
        "reported, not blocking, because hubs hold images, tokenizers and raw weights of many "
        "formats; a file named like a model (.pt, .model, .dat ...) fails closed instead "
        "(scan.unsupported-format). Block at low to refuse every unrecognised file.",
    ),
    Rule(
        "scan.incomplete",
        _H,
        "Part of the input could not be analysed",
        "The input is truncated, malformed, or read differently by Bastion than a loader "
        "would read it, so it cannot be vouched for. The verdict is INCOMPLETE (exit 2), "
        "never PASS. Re-download the file, or re-save it with its library.",
        incomplete=True,
    ),
    Rule(
        "scan.limit-exceeded",
        _H,
        "A safety limit stopped the analysis",
        "Nesting depth, member count, decompressed size, compression ratio or an emulation "
        "budget was exceeded (a bomb, or a very unusual file). What lies beyond the limit was "
        "not analysed. Raise the limit in the policy if the file is expected to be this large.",
        incomplete=True,
    ),
    Rule(
        "scan.unsupported-format",
        _H,
        "A container or format Bastion does not read",
        "7z and RAR archives, and files named like models whose content matches no known "
        "format, are reported as not analysed rather than passed. Convert the archive to zip "
        "or tar, or check that the file is what its name says.",
        incomplete=True,
    ),
    Rule(
        "scan.read-error",
        _H,
        "The file could not be read",
        "The operating system refused to read the file (permissions, a broken link, an I/O "
        "error). Nothing was analysed.",
        incomplete=True,
    ),
)

CATALOGUE: dict[str, Rule] = {rule.id: rule for rule in _RULES}
"""Every rule id Bastion reports, in the order of the README's table."""


def explain(rule_id: str) -> Rule:
    """The catalogue entry of `rule_id`.

    Raises:
        ConfigError: unknown id; the hint names the closest ids.
    """
    rule = CATALOGUE.get(rule_id.strip())
    if rule is not None:
        return rule
    close = difflib.get_close_matches(rule_id, list(CATALOGUE), n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(close)}?" if close else "See the rule table in the README."
    raise ConfigError(f"unknown rule id {rule_id!r}", hint=hint)


def describe(rule: Rule) -> str:
    """The entry as text a person reads: id, severity, summary, then the help."""
    kind = " (not analysed: verdict INCOMPLETE)" if rule.incomplete else ""
    return f"{rule.id}  [{rule.severity.name.lower()}]{kind}\n{rule.summary}\n\n{textwrap.fill(rule.help, 88)}\n"


def markdown_table() -> str:
    """The README's rule table."""
    lines = ["| rule | default severity | what it means |", "| --- | --- | --- |"]
    for rule in CATALOGUE.values():
        severity = "not analysed" if rule.incomplete else rule.severity.name.lower()
        lines.append(f"| `{rule.id}` | {severity} | {rule.summary} |")
    return "\n".join(lines) + "\n"
