"""Keras models: the JSON config inside `.keras` zips and HDF5 `.h5` files.

A Lambda layer carries marshalled Python bytecode that runs when the model is built;
Keras 3 configs can also name any module and function to deserialise (`"module":
"builtins", "class_name": "function", "config": "eval"`), and before Keras 3.9 any
module at all was imported. Configs are read as the loaders read them:

- `.keras`: `json.loads(zf.open("config.json").read())` on bytes, which accepts a UTF-8
  BOM and UTF-16/UTF-32 (`json_document`); a config the loader reads but Bastion cannot
  parse is "not analysed".
- `.h5`: the legacy loader uses the root's `model_config` attribute (and
  `training_config` when compiling), decoded as UTF-8. Rather than trust one attribute
  to be the one h5py returns (a decoy config, a second copy, an attribute in dense
  storage), every JSON object stored in the file's bytes is decoded and judged, from
  every place one can start: attributes are stored contiguously and unfiltered, so each
  config the loader could use is one of them. This is done without an HDF5 library: a
  scanner should not hand hostile files to a C parser with a history of memory-safety bugs.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from collections.abc import Iterator

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.pickle.rules import is_dangerous
from bastion.scan.source import MemorySource, source_from_bytes

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_JSON_START = re.compile(r"\{[ \t\n\r]*\"")  # any whitespace run: a bounded one was a bypass
_JSON_START_BYTES = re.compile(rb"\{[ \t\n\r]*\"")
_KERAS_PACKAGES = frozenset({"keras", "tensorflow", "tf_keras", "keras_nlp", "keras_hub", "keras_cv"})
_CODE_LAYERS = frozenset({"Lambda", "__lambda__"})
_MAX_WALK = 200_000
_MAX_NESTED_JSON = 4
_PARSE_BUDGET_FACTOR = 8
_FIRST_WINDOW = 1024
_CANDIDATE_COST = 256  # a floor per place tried: millions of `{"` in a file are an attack, not a model
_DECODER = json.JSONDecoder()
_EDGE = 32  # longer than any token a cut can leave looking complete ("-Infinity", "\\uXXXX")
_FILTERED_HEAP = re.compile(rb"FRHP\x00")
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")

# Callables inside Keras and TensorFlow themselves that a config can name and that reach
# files, the network, other models or the switch that turns safe mode off (CVE-2025-1550,
# CVE-2025-8747, CVE-2025-9906): a Keras package is not a safe list.
KERAS_GADGETS = frozenset(
    {
        "get_file", "enable_unsafe_deserialization", "load_model", "save_model", "load_weights", "save_weights",
        "model_from_json", "model_from_config", "deserialize_keras_object", "py_function", "numpy_function",
        "py_func", "eager_py_func", "write_file", "read_file", "ReadFile", "WriteFile", "PyFunc", "EagerPyFunc",
        "rmtree", "makedirs", "copy", "rename", "remove", "gfile", "File", "GFile", "extract_archive",
        "func_load", "exec", "eval", "__import__", "import_module", "TFSMLayer",
    }
)  # fmt: skip
_GADGET_PATHS = ("file_utils", "io_utils", "saving", "gfile", "script_ops", "io_ops", "python_utils", "subprocess")
# Config fields a layer class hands to a deserialiser in from_config: the field's value is a
# serialised object, a nested model to scan as the loader will read it (CVE-2025-49655:
# TorchModuleWrapper torch.loads its base64 `module` with weights_only=False).
DESERIALISED_FIELDS: dict[str, dict[str, str]] = {
    "TorchModuleWrapper": {"module": "torch.load"},
}
# Config fields a layer class opens as a file while it is built: a string there makes the
# loader read outside the artifact (CVE-2025-12058: a lookup layer's vocabulary path;
# CVE-2026-1462: TFSMLayer's filepath).
PATH_FIELDS: dict[str, frozenset[str]] = {
    "StringLookup": frozenset({"vocabulary"}),
    "IntegerLookup": frozenset({"vocabulary"}),
    "TextVectorization": frozenset({"vocabulary"}),
    "TFSMLayer": frozenset({"filepath"}),
}
# Field names that hold a file name whatever the class: judged by where they point.
_PATH_NAMES = frozenset({"filepath", "file_path", "path", "fname", "origin", "url", "vocabulary_file", "vocab_file"})
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MODULE_NAME = re.compile(r"^[A-Za-z_][\w.>]*$")
_FUNCTION_MODULE_PARTS = frozenset(
    {"activations", "losses", "metrics", "ops", "initializers", "regularizers", "constraints", "math", "nn", "numpy"}
)


def json_document(data: bytes) -> str | None:
    """The text `json.loads(data)` would parse, if it is a JSON object; else None.

    Keras 3 calls `json.loads` on the bytes of config.json, which detects UTF-8 (with or
    without a BOM), UTF-16 and UTF-32 (`json.detect_encoding`). A sniffing head cut in the
    middle of a character still counts.
    """
    encoding = json.detect_encoding(data[:4])
    if not data[:256].decode(encoding, "replace").removeprefix("\ufeff").lstrip(" \t\n\r").startswith("{"):
        return None
    return data.decode(encoding, "replace").removeprefix("\ufeff")


def looks_like_wide_json(head: bytes) -> bool:
    """A JSON object in UTF-16/UTF-32 or behind a BOM: not text to a UTF-8 sniffer, but JSON to Keras."""
    wide = head[:4].count(0) > 0 or head.startswith(_BOMS)
    return wide and json_document(head) is not None


def scan_config_text(ctx: ScanContext, text: str, loc: Location, name: str, level: int = 0) -> bool:
    """Check a JSON document that may be a Keras config; False if it is not one.

    A file named `config.json` that the loader would read (it starts like a JSON object)
    but that does not parse is not analysed, never passed: the loader may accept what
    Bastion cannot.
    """
    text = text.removeprefix("\ufeff")
    try:
        doc = json.loads(text)
    except RecursionError:
        ctx.incomplete(loc, "JSON config nested too deeply to analyse", "keras")
        return True
    except ValueError:
        if name.rsplit("/", 1)[-1] == "config.json" and text.lstrip(" \t\n\r").startswith("{"):
            ctx.incomplete(loc, "config.json starts like a Keras config but does not parse as JSON", "keras")
            return True
        return False
    if isinstance(doc, dict) and isinstance(doc.get("chat_template"), (str, list)):
        _check_tokenizer_templates(ctx, doc["chat_template"], loc)
    if not _is_keras_config(doc) and not _mentions_code(doc):
        return False
    ctx.saw("keras")
    check_config(ctx, doc, loc, level=level)
    return True


def _check_tokenizer_templates(ctx: ScanContext, value: object, loc: Location) -> None:
    """A Hugging Face tokenizer_config.json: `chat_template` is a string or a list of {name, template}."""
    from bastion.scan.formats.jinja_template import check_template  # noqa: PLC0415  # Jinja2 only when needed

    ctx.saw("hf-tokenizer")
    listed = value if isinstance(value, list) else []
    items = [value] if isinstance(value, str) else [v.get("template") for v in listed if isinstance(v, dict)]
    for item in items:
        if isinstance(item, str):
            check_template(ctx, item, loc, "hf-tokenizer", rule_prefix="hf-tokenizer")


def _mentions_code(doc: object) -> bool:
    """A JSON document with a Keras object somewhere inside, even if its top is not one."""
    if not isinstance(doc, (dict, list)):
        return False
    text = json.dumps(doc)
    return '"class_name"' in text or '"module"' in text or '"function_type"' in text


def _is_keras_config(doc: object) -> bool:
    return isinstance(doc, dict) and "class_name" in doc and "config" in doc


def scan_hdf5(ctx: ScanContext, src: MemorySource, loc: Location, level: int = 0) -> None:
    """Find and check every JSON config stored anywhere in an HDF5 file's bytes."""
    ctx.saw("hdf5")
    if _FILTERED_HEAP.search(src.buf, src.start, src.end) and _has_filtered_heap(src):
        raise ArtifactError("HDF5 attributes are kept in a compressed (filtered) heap that Bastion cannot read")
    found = 0
    for at, doc in json_objects(src, ctx.limits.max_header_bytes):
        if _is_keras_config(doc) or _mentions_code(doc):
            found += 1
            ctx.saw("keras")
            check_config(ctx, doc, loc.at(at), level=level)
    if not found and (src.find(b"model_config") >= 0 or src.find(b"training_config") >= 0):
        raise ArtifactError("HDF5 file names a model_config that could not be decoded")
    _check_hdf5_end(src)


def _has_filtered_heap(src: MemorySource) -> bool:
    """A fractal heap (dense attribute storage) whose I/O filter pipeline is not empty."""
    for match in _FILTERED_HEAP.finditer(src.buf, src.start, src.end):
        raw = src.bytes_at(match.start() - src.start + 7, 2)
        if len(raw) == 2 and int.from_bytes(raw, "little") != 0:  # a 16-bit field
            return True
    return False


def json_objects(src: MemorySource, limit: int) -> Iterator[tuple[int, object]]:
    """Every JSON object stored in the bytes, from every place a reader could start one.

    Each `{` followed by optional whitespace and `"` is tried, except those that are
    objects nested inside a document already decoded (it was judged whole). A `{"` that
    sits at the end of a string of a decoded document is tried again: another
    attribute could start there. The NUL-free run around a candidate is decoded once
    (JSON holds no NUL), and the total parsing is bounded by the file's size.
    """
    buf, start, end = src.buf, src.start, src.end
    budget = [_PARSE_BUDGET_FACTOR * (end - start) + (1 << 20)]
    run_end = start
    for match in _JSON_START_BYTES.finditer(buf, start, end):
        first = match.start()
        if first < run_end:
            continue  # judged with the run it sits in
        run_end = buf.find(b"\x00", first, end)
        run_end = end if run_end < 0 else run_end
        if run_end - first > limit:
            raise LimitExceeded(f"a {run_end - first}-byte run of text in an HDF5 file is over the header limit")
        text = bytes(buf[first:run_end]).decode("utf-8", "surrogateescape")
        char, offset = 0, first - start
        for at, doc in _decode_run(text, budget):
            offset += len(text[char:at].encode("utf-8", "surrogateescape"))
            char = at
            yield offset, doc


def _decode_run(text: str, budget: list[int]) -> Iterator[tuple[int, object]]:
    covered: list[tuple[int, int, list[tuple[int, int]]]] = []  # decoded spans and their strings
    for match in _JSON_START.finditer(text):
        at = match.start()
        covered = [c for c in covered if c[1] > at]
        if _inside_structure(covered, at):
            continue
        decoded = _decode_at(text, at, budget)
        if decoded is not None:
            doc, stop = decoded
            covered.append((at, stop, _string_spans(text, at, stop)))
            yield at, doc
        if budget[0] < 0:
            raise LimitExceeded("HDF5 file holds more JSON than Bastion parses per byte")


def _decode_at(text: str, at: int, budget: list[int]) -> tuple[object, int] | None:
    """The JSON value starting at `at`, or None; parsed in a growing window.

    json's errors count lines up to their position, so parsing the whole run from each
    of many candidates would be quadratic; a window is enough unless the parse reached
    its edge (or an unterminated string, whose error points back at its start).
    """
    budget[0] -= _CANDIDATE_COST
    window = _FIRST_WINDOW
    while True:
        piece = text[at : at + window]
        whole = at + window >= len(text)
        try:
            doc, stop = _DECODER.raw_decode(piece)
        except RecursionError:
            raise LimitExceeded("JSON in an HDF5 file is nested too deeply to analyse") from None
        except json.JSONDecodeError as err:
            near_edge = err.pos >= len(piece) - _EDGE or err.msg.startswith("Unterminated string")
            budget[0] -= len(piece) if near_edge else err.pos + 1
            if whole or not near_edge:
                return None
            if budget[0] < 0:
                raise LimitExceeded("HDF5 file holds more JSON than Bastion parses per byte") from None
            window *= 8
            continue
        budget[0] -= stop
        return doc, at + stop


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _string_spans(text: str, start: int, stop: int) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _STRING.finditer(text, start, stop)]


def _inside_structure(covered: list[tuple[int, int, list[tuple[int, int]]]], at: int) -> bool:
    """True if `at` opens an object nested in a decoded document (not text inside one of its strings)."""
    for lo, hi, strings in covered:
        if lo <= at < hi:
            i = bisect.bisect_left(strings, (at, -1)) - 1  # the last string opening before `at`
            return not (i >= 0 and strings[i][0] < at < strings[i][1])
    return False


def _check_hdf5_end(src: MemorySource) -> None:
    """The superblock records where the file ends; a shorter file is truncated."""
    at = next((o for o in (0, 512, 1024, 2048) if src.bytes_at(o, 8) == _HDF5_SIGNATURE), None)
    if at is None:
        return
    version = src.bytes_at(at + 8, 1)
    if not version:
        raise ArtifactError("HDF5 superblock is truncated")
    if version[0] in (0, 1):
        size_at, addresses = at + 13, at + 24 + (4 if version[0] == 1 else 0)
        field = 2  # base, free-space info, end of file
    elif version[0] in (2, 3):
        size_at, addresses = at + 9, at + 12
        field = 2  # base, superblock extension, end of file
    else:
        return
    width = src.bytes_at(size_at, 1)
    if not width or width[0] not in (2, 4, 8):
        raise ArtifactError("HDF5 superblock has an invalid offset size")
    n = width[0]
    raw = src.bytes_at(addresses, n * (field + 1))
    if len(raw) != n * (field + 1):
        raise ArtifactError("HDF5 superblock is truncated")
    base = int.from_bytes(raw[:n], "little")
    end = int.from_bytes(raw[field * n : (field + 1) * n], "little")
    if end != (1 << (8 * n)) - 1 and base + end > src.size:
        raise ArtifactError(f"HDF5 file ends at byte {src.size} but its superblock says {base + end} (truncated)")


def check_config(ctx: ScanContext, doc: object, loc: Location, depth: int = 0, *, level: int = 0) -> None:
    """Walk a Keras config and report layers and objects that carry or name code.

    `depth` counts configs serialised inside strings; `level` is the container depth of
    the file the config came from, so that payloads nested in fields are scanned one deeper.
    """
    stack: list[object] = [doc]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > _MAX_WALK:
            raise LimitExceeded("Keras config is too large to walk")
        if isinstance(node, list):
            stack.extend(node)
            continue
        if isinstance(node, str):
            _check_embedded_json(ctx, node, loc, depth, level)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        _check_object(ctx, node, loc, level)


def _check_embedded_json(ctx: ScanContext, text: str, loc: Location, depth: int, level: int) -> None:
    """A config serialised again inside a string value is judged too (a nested config)."""
    if depth >= _MAX_NESTED_JSON or not text.lstrip().startswith("{") or '"class_name"' not in text:
        return
    try:
        inner = json.loads(text)
    except (ValueError, RecursionError):
        return
    check_config(ctx, inner, loc, depth + 1, level=level)


def _package(module: str) -> str:
    return module.split(".", 1)[0].split(">", 1)[0]


def _is_gadget(module: str, name: str) -> bool:
    parts = {*module.split("."), *name.split(".")}
    return (
        name in KERAS_GADGETS
        or name.rsplit(".", 1)[-1] in KERAS_GADGETS
        or any(part in _GADGET_PATHS for part in parts)
        or is_dangerous(module, name)
    )


def _check_object(
    ctx: ScanContext, node: dict[str, object], loc: Location, level: int
) -> None:  # one rule per way a config names code
    cls = node.get("class_name")
    cls = cls if isinstance(cls, str) else ""
    module = node.get("module")
    registered = node.get("registered_name")
    registered = registered if isinstance(registered, str) else ""
    config = node.get("config")
    layer_name = config.get("name", "") if isinstance(config, dict) else ""
    if (
        cls in _CODE_LAYERS
        or registered in _CODE_LAYERS
        or node.get("function_type") == "lambda"
        or ("code" in node and ("closure" in node or "defaults" in node))
    ):
        ctx.add(
            "keras.lambda-layer",
            Severity.CRITICAL,
            loc,
            f"Lambda layer {layer_name!r} carries Python code that runs when the model is loaded",
            "keras",
            str(layer_name or cls or "lambda"),
        )
        return
    target = config if isinstance(config, str) and cls == "function" else cls
    # Only a Keras object (one with a class_name) is imported, and only a name can be: a
    # "module" field holding data (TorchModuleWrapper's base64 pickle) is judged as the data
    # it is, and never echoed as evidence.
    is_reference = isinstance(module, str) and bool(cls or registered) and bool(_MODULE_NAME.match(module))
    names = [(str(module), target)] if is_reference else []
    if ">" in registered:  # "package>Name": the custom-object registry's key
        package, _sep, rest = registered.partition(">")
        names.append((package, rest))
    if cls == "TFSMLayer" or registered.endswith("TFSMLayer"):
        path = config.get("filepath", "") if isinstance(config, dict) else ""
        ctx.add(
            "keras.external-model",
            Severity.HIGH,
            loc,
            f"TFSMLayer loads and runs a TensorFlow SavedModel from {str(path)[:200]!r}, outside this file",
            "keras",
            "TFSMLayer",
        )
    for mod, name in names:
        _check_reference(ctx, node, loc, mod, str(name))
    if isinstance(config, dict):
        kind = (registered.rpartition(">")[2] if registered else "") or cls
        _check_deserialised_fields(ctx, kind, config, loc, level)
        _check_paths(ctx, kind, config, loc)


def _check_deserialised_fields(
    ctx: ScanContext, kind: str, config: dict[str, object], loc: Location, level: int
) -> None:
    """Scan a field the layer class deserialises as the nested file it is."""
    for field, loader in DESERIALISED_FIELDS.get(kind, {}).items():
        value = config.get(field)
        if not isinstance(value, str):
            continue
        ctx.add(
            "keras.deserialised-field",
            Severity.MEDIUM,
            loc,
            f"{kind} passes its config field {field!r} to {loader} when the model is loaded; "
            "the embedded object is scanned as a nested file",
            "keras",
            f"{kind}.{field}",
        )
        try:  # as from_config decodes it: base64.b64decode(value.encode("ascii")), non-validating
            data = base64.b64decode(value.encode("ascii"))
        except (UnicodeEncodeError, binascii.Error):
            continue  # the loader fails here too, before deserialising anything
        ctx.nested(source_from_bytes(data, f"{kind}.{field}"), loc.inside(f"<{kind}.{field}>"), "embedded", level + 1)


def _outside_artifact(path: str) -> bool:
    """A path that names a file outside the artifact however the loader's folder is chosen."""
    text = path.strip()
    return (
        bool(_URL.match(text))
        or text.startswith(("/", "\\", "~"))
        or bool(re.match(r"^[A-Za-z]:[\\/]", text))
        or ".." in re.split(r"[\\/]", text)
    )


def _check_paths(ctx: ScanContext, kind: str, config: dict[str, object], loc: Location) -> None:
    """Config fields that make the loader open a file: outside the artifact is HIGH."""
    named = PATH_FIELDS.get(kind, frozenset())
    for field, value in config.items():
        if not isinstance(value, str) or not value or (field not in named and field not in _PATH_NAMES):
            continue
        outside = _outside_artifact(value)
        if not outside and field not in named:
            continue
        ctx.add(
            "keras.external-file",
            Severity.HIGH if outside else Severity.MEDIUM,
            loc,
            f"{kind or 'a Keras object'} reads the file named by its config field {field!r} when the model is "
            + ("loaded, outside the model file" if outside else "loaded, relative to the loading process"),
            "keras",
            f"{kind}.{field}",
        )
    name = config.get("name")
    if isinstance(name, str) and _outside_artifact(name):
        ctx.add(
            "keras.path-traversal",
            Severity.HIGH,
            loc,
            f"{kind or 'a Keras object'} has a name that is a path leaving its folder; Keras uses layer names "
            "as file names when it saves and loads weights (CVE-2026-12479)",
            "keras",
            f"{kind}.name",
        )


def _check_reference(ctx: ScanContext, node: dict[str, object], loc: Location, module: str, name: str) -> None:
    is_function = node.get("class_name") == "function" or node.get("registered_name") == "function"
    if _is_gadget(module, name):
        ctx.add(
            "keras.unsafe-module",
            Severity.CRITICAL,
            loc,
            f"config deserialises {module}.{name}, which can run code or reach files, the network or other models",
            "keras",
            f"{module}.{name}",
        )
    elif _package(module) not in _KERAS_PACKAGES:
        ctx.add(
            "keras.custom-object",
            Severity.HIGH if is_function else Severity.MEDIUM,
            loc,
            f"config needs custom code {module}.{name} to load; it runs whatever that module defines",
            "keras",
            f"{module}.{name}",
        )
    elif is_function and module != "builtins" and not _FUNCTION_MODULE_PARTS & set(module.split(".")):
        ctx.add(
            "keras.unsafe-module",
            Severity.HIGH,
            loc,
            f"config calls {module}.{name}, a Keras or TensorFlow function outside the activations, losses "
            "and metrics real models use",
            "keras",
            f"{module}.{name}",
        )
