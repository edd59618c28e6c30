"""Chat templates (Jinja): will rendering this template reach Python internals?

GGUF files and Hugging Face tokenizer configs carry a Jinja chat template that the
runtime renders on every request. Rendered by a plain `jinja2.Environment` (llama-cpp-python
before 0.2.72, CVE-2024-34359, and any home-made server), a template that climbs from a
value to `__globals__` or `__builtins__` runs code; under Jinja's sandbox the same climb is
an attempted escape. A keyword list cannot see a name built at render time
(`"__glo" ~ "bals__"`, `["po", "pen"]|join`, `x|attr(n)`), so the template is parsed with
Jinja2's own parser (parse only: never compiled, never rendered) and its tree is judged:

- every attribute or item name the template spells out (`x.name`, `x["name"]`,
  `x|attr("name")`, `map(attribute="a.b")`, `"{0.name}".format(x)`) must not be private
  (`_...`, which the sandbox refuses) or an escape route (`os`, `popen`, `f_globals` ...);
- a name computed at render time is folded from the template's own constants (through
  `set`, loops over literals, namespaces, macros' call sites, `~`, `+`, `%`, `*`, slices,
  `join`/`replace`/`format`/`lower`... filters and string methods); if the value cannot
  be enumerated, the name is reported as computed (HIGH): real templates index with
  constants, loop variables and integer arithmetic only;
- any string the template can fold to a dunder identifier is reported wherever it appears;
- globals that no chat template uses and whose attributes lead to Python's internals
  (`cycler`, `joiner`, `lipsum`, `self`, Flask's `config`/`request`) and template loading
  (`include`, `import`, `extends`) are reported.

What real templates do passes: loops over messages, `raise_exception`, `strftime_now`,
`tojson`, `namespace()` with `set`, string methods (`strip`, `split`, `startswith`),
`items()`, `selectattr("role", "equalto", "user")`, `messages[loop.index0 - 1]`.
llama.cpp's C++ renderer (minja) exposes no Python objects at all; Jinja's sandbox refuses
`_` attributes, `mro`, `gi_frame`/`cr_frame`/`f_*` paths and format strings that reach
attributes: Bastion's rules are that sandbox's refusals plus the computed names the sandbox
would only catch at render time.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser

from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext

_MAX_STRINGS = 64
_MAX_LEN = 512
_MAX_DEPTH = 64
_MAX_JOIN_ITEMS = 4

ESCAPE_NAMES = frozenset(
    {
        "os", "sys", "system", "popen", "spawn", "eval", "exec", "execfile", "compile", "subprocess",
        "getattr", "setattr", "delattr", "import_module", "importlib", "builtins", "globals", "locals",
        "modules", "mro", "format_map", "func_globals", "func_code", "func_closure", "f_globals",
        "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame",
        "cr_code", "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code", "im_func", "im_class",
        "load_module", "check_output", "from_string",
    }
)  # fmt: skip
"""Attribute names that are a known step out of a template (besides every `_` name)."""

UNUSED_GLOBALS = frozenset(
    {"cycler", "joiner", "lipsum", "self", "url_for", "config", "request", "session", "get_flashed_messages"}
)
"""Globals that real chat templates never use; each one's attributes reach Python's internals."""

_DUNDER = re.compile(r"_[A-Za-z0-9_]*__[A-Za-z0-9_]*")
_DATA_WORDS = frozenset({"system", "compile", "modules", "environment"})  # role names and data keys, as item keys
_NUMBER_FILTERS = frozenset({"length", "count", "int", "float", "abs", "round", "sum", "wordcount", "filesizeformat"})
_DATA_FILTERS = frozenset({"tojson", "dictsort", "items", "batch", "slice", "groupby", "pprint", "xmlattr"})
_ELEMENT_FILTERS = frozenset({"map", "select", "reject", "sort", "unique", "selectattr", "rejectattr", "list"})
_SIMPLE_STRING_FILTERS: dict[str, Callable[[str], str]] = {
    "lower": str.lower, "upper": str.upper, "title": str.title, "capitalize": str.capitalize, "trim": str.strip,
    "string": str, "e": str, "escape": str, "safe": str, "striptags": str.strip, "reverse": lambda s: s[::-1],
    "first": lambda s: s[:1], "last": lambda s: s[-1:],
}  # fmt: skip
_STRING_METHODS = frozenset(
    {"lower", "upper", "title", "capitalize", "strip", "lstrip", "rstrip", "removeprefix", "removesuffix",
     "swapcase", "casefold", "center", "ljust", "rjust", "zfill"}
)  # fmt: skip
_ATTRIBUTE_FILTERS: dict[str, tuple[str, int | None]] = {
    "map": ("attribute", None),
    "selectattr": ("attr", 0),
    "rejectattr": ("attr", 0),
    "groupby": ("attribute", 0),
    "sort": ("attribute", None),
    "sum": ("attribute", None),
    "unique": ("attribute", None),
    "min": ("attribute", None),
    "max": ("attribute", None),
    "join": ("attribute", None),
}
"""Filters whose argument is an attribute path (`a.b.c`) read with Jinja's getattr/getitem."""


@dataclass(frozen=True, slots=True)
class TemplateRisk:
    """One reason a template is dangerous: rule suffix, severity, what it reaches."""

    kind: str  # "injection" | "computed-name" | "global" | "loader"
    severity: Severity
    evidence: str
    message: str


@dataclass(frozen=True, slots=True)
class _Val:
    """What an expression may evaluate to, as far as the template's own text tells."""

    strings: frozenset[str] = frozenset()  # the string values it may take
    items: frozenset[str] = frozenset()  # the strings a literal container it may be holds
    data: bool = False  # a value from the caller (messages, tools) or a number
    computed: bool = False  # a string built in a way that cannot be enumerated

    def __or__(self, other: _Val) -> _Val:
        val = _Val(
            self.strings | other.strings,
            self.items | other.items,
            self.data or other.data,
            self.computed or other.computed,
        )
        return val if len(val.strings) + len(val.items) <= _MAX_STRINGS else _Val(data=val.data, computed=True)

    @property
    def textual(self) -> bool:
        return bool(self.strings or self.items or self.computed)


_DATA = _Val(data=True)
_COMPUTED = _Val(computed=True)
_NOTHING = _Val()


def _strings(values: set[str] | frozenset[str]) -> _Val:
    if len(values) > _MAX_STRINGS or any(len(v) > _MAX_LEN for v in values):
        return _COMPUTED
    return _Val(strings=frozenset(values))


class TemplateUnparsed(Exception):  # a verdict on the input, not a failure of Bastion
    """The template does not parse; the runtime's Jinja would refuse it too."""


class _GenerationBlock(Extension):
    """transformers' `{% generation %}` tag (assistant-token masks), parsed as a plain block."""

    tags = {"generation"}  # noqa: RUF012  # jinja2 declares a mutable class attribute

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def parse_template(source: str) -> nodes.Template:
    """Jinja2's syntax tree of `source`; raises TemplateUnparsed. Never compiles or renders.

    The extensions are those the Python runtimes enable (transformers: loop controls and
    `generation`; `do` for templates written for it), so a real template always parses.
    """
    env = jinja2.Environment(  # noqa: S701  # nosec B701  # parsed only: nothing is rendered, so nothing needs escaping
        extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", _GenerationBlock]
    )
    try:
        return env.parse(source)
    except RecursionError as err:
        raise TemplateUnparsed("nested too deeply to parse") from err
    except Exception as err:  # TemplateSyntaxError, and whatever else a hostile source provokes
        raise TemplateUnparsed(f"{type(err).__name__}: {err}") from err


def judge_template(source: str) -> list[TemplateRisk]:
    """Every reason the template is dangerous (empty if none); raises TemplateUnparsed."""
    tree = parse_template(source)
    try:
        return _Judge(tree).run()
    except RecursionError as err:
        raise TemplateUnparsed("nested too deeply to analyse") from err


def check_template(  # where, what, and how strictly
    ctx: ScanContext, template: str, loc: Location, fmt: str, rule_prefix: str = "gguf", required: bool = True
) -> None:
    """Report a chat template that reaches Python internals, or that could not be analysed.

    Args:
        ctx: the scan's context, which collects the findings.
        template: the Jinja source, as the runtime would receive it.
        loc: where the template is stored (file and metadata key or member).
        fmt: the format name for the findings.
        rule_prefix: `gguf` or `hf-tokenizer`: rule ids are `<prefix>.template-injection` etc.
        required: the text is stored where a runtime renders it (a template key), so a
            template that does not parse is "not analysed"; other text that merely looks
            like a template is judged only if it parses.
    """
    try:
        risks = judge_template(template)
    except TemplateUnparsed as err:
        if not required:
            return
        ctx.incomplete(
            loc,
            f"chat template does not parse as Jinja ({err}); the runtime would refuse it too, "
            "but Bastion cannot tell what it does",
            fmt,
        )
        return
    seen: set[tuple[str, str]] = set()
    for risk in risks:
        if (risk.kind, risk.evidence) in seen:
            continue
        seen.add((risk.kind, risk.evidence))
        rule = f"{rule_prefix}.template-{risk.kind}"
        ctx.add(rule, risk.severity, loc, risk.message, fmt, risk.evidence[:200])


def looks_like_template(text: str) -> bool:
    """A string a Jinja runtime would treat as a template (it has tags or expressions)."""
    return "{{" in text or "{%" in text


def name_risk(name: str, item: bool = False) -> str | None:
    """Why an attribute name (`x.name`) or item key (`x["name"]`) is an escape route, or None.

    Any `_` attribute is refused by the sandbox and used by no real template. An item key
    reaches an attribute only when the item is missing, so plain data keys (`_id`, `system`,
    a role name) pass; dunder and name-mangled keys (`_TemplateReference__context`) do not.
    """
    if name.startswith("_") and (not item or _DUNDER.fullmatch(name)):
        return "a private or dunder name, which the Jinja sandbox refuses"
    if name in ESCAPE_NAMES and not (item and name in _DATA_WORDS):
        return "a known step from a template to Python's internals"
    return None


class _Judge:
    def __init__(self, tree: nodes.Template) -> None:
        self.tree = tree
        self.out: list[TemplateRisk] = []
        self.symbols: dict[str, list[tuple[str, nodes.Node]]] = {}  # name -> (how bound, expression)
        self.ns_attrs: dict[str, list[nodes.Expr]] = {}
        self.memo: dict[str, _Val] = {}
        self.busy: set[str] = set()
        self.node_memo: dict[int, _Val] = {}
        self.keep: list[nodes.Node] = []  # nodes made here, so that their ids stay unique
        self._collect()

    # -- the symbol table: every way the template gives a name a value ------------------------
    def _bind(self, target: nodes.Node, how: str, expr: nodes.Node) -> None:
        if isinstance(target, nodes.Name):
            self.symbols.setdefault(target.name, []).append((how, expr))
        elif isinstance(target, nodes.NSRef):
            self.ns_attrs.setdefault(target.attr, []).append(expr)  # type: ignore[arg-type]  # always an Expr
        elif isinstance(target, (nodes.Tuple, nodes.List)):
            for item in target.items:
                self._bind(item, "unpack" if how == "value" else how, expr)

    def _collect(self) -> None:  # noqa: C901, PLR0912  # one case per binding form
        macros: dict[str, nodes.Macro] = {}
        for node in self.tree.find_all(nodes.Node):
            if isinstance(node, nodes.Assign):
                self._bind(node.target, "value", node.node)
            elif isinstance(node, nodes.AssignBlock):
                parts = [x for o in node.body if isinstance(o, nodes.Output) for x in o.nodes]
                block = nodes.Concat(parts)
                self.keep.append(block)
                self._bind(node.target, "value", block)
            elif isinstance(node, nodes.For):
                self._bind(node.target, "iter", node.iter)
            elif isinstance(node, nodes.With):
                for target, value in zip(node.targets, node.values, strict=False):
                    self._bind(target, "value", value)
            elif isinstance(node, (nodes.Macro, nodes.CallBlock)):
                for arg in node.args:
                    self.symbols.setdefault(arg.name, []).append(("data", arg))
                for arg, default in zip(reversed(node.args), reversed(node.defaults), strict=False):
                    self._bind(arg, "value", default)
                if isinstance(node, nodes.Macro):
                    macros[node.name] = node
            elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "namespace":
                for kw in node.kwargs:
                    self.ns_attrs.setdefault(kw.key, []).append(kw.value)
        for call in self.tree.find_all(nodes.Call):
            macro = macros.get(call.node.name) if isinstance(call.node, nodes.Name) else None
            if macro is None:
                continue
            for arg, value in zip(macro.args, call.args, strict=False):
                self._bind(arg, "value", value)
            for kw in call.kwargs:
                self.symbols.setdefault(kw.key, []).append(("value", kw.value))
            for dyn in (call.dyn_args, call.dyn_kwargs):
                if dyn is not None:
                    for arg in macro.args:
                        self._bind(arg, "iter", dyn)

    # -- what an expression may evaluate to ---------------------------------------------------
    def name_value(self, name: str) -> _Val:
        if name in self.memo:
            return self.memo[name]
        if name not in self.symbols:
            return _DATA  # the caller's variable: messages, tools, bos_token ...
        if name in self.busy:
            return _COMPUTED  # defined through itself: it can grow without bound
        self.busy.add(name)
        val = _NOTHING
        for how, expr in self.symbols[name]:
            if how == "data":
                val |= _DATA
                continue
            inner = self.value(expr)
            if how == "value":
                val |= inner
            elif how == "iter":  # an element of a literal, a character of a string, or data
                chars = frozenset(c for s in inner.strings for c in s)
                val |= _Val(inner.items | chars, frozenset(), inner.data, inner.computed)
            else:  # unpacked from one value: only data unpacks into something Bastion need not know
                val |= _Val(data=inner.data, computed=inner.textual)
        self.busy.discard(name)
        self.memo[name] = val
        return val

    def ns_value(self, attr: str) -> _Val:
        """Every value a `namespace()` attribute of this name is given, in any namespace."""
        key = "." + attr
        if key in self.memo:
            return self.memo[key]
        if key in self.busy:
            return _COMPUTED
        self.busy.add(key)
        val = _NOTHING
        for expr in self.ns_attrs[attr]:
            val |= self.value(expr)
        self.busy.discard(key)
        self.memo[key] = val
        return val

    def value(self, node: nodes.Node, depth: int = 0) -> _Val:
        """What `node` may evaluate to (memoised per node: templates reuse subexpressions)."""
        known = self.node_memo.get(id(node))
        if known is None:
            known = self.node_memo[id(node)] = self._value(node, depth)
        return known

    def _value(self, node: nodes.Node, depth: int) -> _Val:  # noqa: C901, PLR0912  # one case per node type
        if depth > _MAX_DEPTH:
            return _COMPUTED
        d = depth + 1
        if isinstance(node, nodes.Const):
            return _strings({node.value}) if isinstance(node.value, str) else _DATA
        if isinstance(node, nodes.TemplateData):
            return _strings({node.data})
        if isinstance(node, nodes.Name):
            return self.name_value(node.name)
        if isinstance(node, (nodes.List, nodes.Tuple)):
            return self._container([self.value(item, d) for item in node.items])
        if isinstance(node, nodes.Dict):
            return self._container([self.value(p.key, d) | self.value(p.value, d) for p in node.items])
        if isinstance(node, nodes.Getattr):
            base = self.value(node.node, d)
            val = _Val(base.items, frozenset(), base.data, base.computed)
            return val | self.ns_value(node.attr) if node.attr in self.ns_attrs else val
        if isinstance(node, nodes.Getitem):
            return self._getitem(node, d)
        if isinstance(node, nodes.CondExpr):
            return self.value(node.expr1, d) | (self.value(node.expr2, d) if node.expr2 is not None else _DATA)
        if isinstance(node, (nodes.Concat, nodes.Add, nodes.Mod, nodes.Mul)):
            return self._arith(node, d)
        if isinstance(node, (nodes.Slice, nodes.Sub, nodes.Div, nodes.FloorDiv, nodes.Pow, nodes.UnaryExpr)):
            return _DATA
        if isinstance(node, (nodes.Compare, nodes.And, nodes.Or, nodes.Test)):
            return _DATA
        if isinstance(node, nodes.Filter):
            return self._filter(node, d)
        if isinstance(node, nodes.Call):
            return self._call(node, d)
        if isinstance(node, (nodes.MarkSafe, nodes.MarkSafeIfAutoescape)):
            return self.value(node.expr, d)
        return _COMPUTED

    @staticmethod
    def _container(parts: list[_Val]) -> _Val:
        val = _DATA
        for inner in parts:
            val |= _Val(frozenset(), inner.items | inner.strings, inner.data, inner.computed)
        return val

    def _getitem(self, node: nodes.Getitem, d: int) -> _Val:
        base = self.value(node.node, d)
        val = _Val(base.items, frozenset(), base.data, base.computed)
        if base.strings:
            key = _const_index(node.arg)
            if key is None:
                return val | _COMPUTED  # characters picked from a string by a runtime index
            with contextlib.suppress(IndexError, TypeError, ValueError):
                val |= _strings({s[key] for s in base.strings})
        return val

    def _arith(self, node: nodes.Concat | nodes.Add | nodes.Mod | nodes.Mul, d: int) -> _Val:
        if isinstance(node, nodes.Concat):
            parts, op = [self.value(x, d) for x in node.nodes], "~"
        else:
            parts = [self.value(node.left, d), self.value(node.right, d)]
            op = "+" if isinstance(node, nodes.Add) else "%" if isinstance(node, nodes.Mod) else "*"
            if op in "+*" and not any(p.textual for p in parts):
                return _DATA  # arithmetic: `ns.index + 1`, `loop.index0 * 2`
        if any(p.computed for p in parts):
            return _COMPUTED
        if not any(p.strings for p in parts):
            return _DATA
        if op in "~+" and any(not p.strings for p in parts):
            return _COMPUTED  # template text joined with a runtime value: cannot be enumerated
        return self._fold(op, parts, node)

    def _fold(self, op: str, parts: list[_Val], node: nodes.Node) -> _Val:
        if op in "~+":
            results = {""}
            for p in parts:
                results = {a + b for a in results for b in p.strings}
                if len(results) > _MAX_STRINGS:
                    return _COMPUTED
            return _strings(results)
        left, right = parts
        if op == "*":
            count = node.right if left.strings else node.left  # type: ignore[attr-defined]  # a Mul node
            texts = left.strings or right.strings
            if isinstance(count, nodes.Const) and isinstance(count.value, int) and 0 <= count.value <= _MAX_LEN:
                return _strings({s * count.value for s in texts})
            return _COMPUTED
        # `%` formatting of template constants, with a tuple literal folded element by element
        choices: list[tuple[str, ...]] = [(b,) for b in sorted(right.strings)]
        if isinstance(node, nodes.Mod) and isinstance(node.right, nodes.Tuple):
            per_item = [sorted(self.value(x).strings) for x in node.right.items]
            choices = list(itertools.islice(itertools.product(*per_item), _MAX_STRINGS + 1))
        try:
            return _strings({a % b for a in left.strings for b in choices}) if choices else _COMPUTED
        except (TypeError, ValueError, KeyError):
            return _COMPUTED

    def _filter(self, node: nodes.Filter, d: int) -> _Val:  # noqa: PLR0912  # one case per filter family
        name = node.name
        base = self.value(node.node, d) if node.node is not None else _COMPUTED
        args = [self.value(a, d) for a in node.args]
        if name in _NUMBER_FILTERS:
            return _DATA
        if name in {"default", "d"}:
            return base | (args[0] if args else _DATA)
        if name in _ELEMENT_FILTERS and name != "list":
            return _Val(frozenset(), base.items, base.data, base.computed)
        if name in _DATA_FILTERS:
            return _COMPUTED if base.textual else _DATA
        if base.computed or any(a.computed for a in args):
            return _COMPUTED
        if not base.strings and not base.items:
            return (
                _DATA if name in _SIMPLE_STRING_FILTERS or name in {"join", "list", "replace", "format"} else _COMPUTED
            )
        if any(a.data and not a.strings for a in args):
            return _COMPUTED
        if name == "join":
            seps = args[0].strings if args else frozenset({""})
            if isinstance(node.node, (nodes.List, nodes.Tuple)):
                return (
                    self._fold("~", [self.value(x, d) for x in node.node.items], node)
                    if seps == {""}
                    else _join([sorted(self.value(x, d).strings) for x in node.node.items], seps)
                )
            return _join_any(sorted(base.items | {c for s in base.strings for c in s}), seps)
        if name == "replace" and len(args) >= 2:  # old, new
            return _strings({t.replace(a, b) for t in base.strings for a in args[0].strings for b in args[1].strings})
        if name == "format":
            try:
                return _strings({t % tuple(sorted(a.strings)[0] for a in args) for t in base.strings})
            except (TypeError, ValueError, IndexError):
                return _COMPUTED
        if name == "list":
            return _Val(frozenset(), base.items | {c for s in base.strings for c in s})
        fn = _SIMPLE_STRING_FILTERS.get(name)
        if fn is None:
            return _COMPUTED
        picked = base.items if name in {"first", "last"} else frozenset()
        return _strings({fn(t) for t in base.strings} | picked)

    def _call(self, node: nodes.Call, d: int) -> _Val:  # one case per callee family
        callee = node.node
        if isinstance(callee, nodes.Name) and callee.name == "dict":
            keys = frozenset(kw.key for kw in node.kwargs)
            return self._container([self.value(kw.value, d) for kw in node.kwargs]) | _Val(items=keys)
        if not isinstance(callee, nodes.Getattr):
            return _DATA
        base = self.value(callee.node, d)
        if not base.textual:
            return _DATA  # a method of a runtime value: `message.content.strip()`
        args = [self.value(a, d) for a in node.args]
        if base.computed or any(a.computed or (a.data and not a.textual) for a in args):
            return _COMPUTED
        method = callee.attr
        try:
            if method == "join":
                return _join_any(sorted(args[0].items | args[0].strings), base.strings) if args else _COMPUTED
            if method in {"replace", "format"}:
                values = [sorted(a.strings | a.items) for a in args]
                if method == "replace" and len(values) >= 2:  # old, new
                    return _strings({t.replace(a, b) for t in base.strings for a in values[0] for b in values[1]})
                return _strings({t.format(*[v[0] for v in values if v]) for t in base.strings})
            if method in _STRING_METHODS:
                firsts = [sorted(a.strings)[0] for a in args if a.strings]
                return _strings({getattr(t, method)(*firsts) for t in base.strings})
            if method in {"split", "rsplit", "splitlines", "partition", "rpartition"}:
                sep = [sorted(a.strings)[0] for a in args if a.strings][:1]
                return _Val(items=frozenset(p for t in base.strings for p in getattr(t, method)(*sep)))
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            return _COMPUTED
        if method in {"keys", "values", "items", "get", "pop", "copy"}:
            return _Val(items=base.items | base.strings)
        return _COMPUTED

    # -- the rules ----------------------------------------------------------------------------
    def _flag(self, kind: str, severity: Severity, evidence: str, message: str) -> None:
        self.out.append(TemplateRisk(kind, severity, evidence, message))

    def _check_name(self, name: str, how: str, item: bool = False) -> None:
        why = name_risk(name, item)
        if why:
            self._flag(
                "injection",
                Severity.CRITICAL,
                name,
                f"chat template reads {name!r} through {how}, {why}: rendering it can run code (CVE-2024-34359)",
            )

    def _check_key(self, expr: nodes.Node, how: str) -> None:
        """An attribute or item name given by an expression rather than spelt after a dot."""
        if isinstance(expr, nodes.Const):
            if isinstance(expr.value, str):
                for part in _path_parts(expr.value, how):
                    self._check_name(part, how, item=True)
            return
        if _is_index(expr):
            return
        val = self.value(expr)
        for text in val.strings | val.items:
            for part in _path_parts(text, how):
                self._check_name(part, how, item=True)
        if val.computed or (val.data and not _is_reference(expr)):
            self._flag(
                "computed-name",
                Severity.HIGH,
                how,
                f"chat template reads an attribute or item through {how} with a name computed at render time; "
                "real templates do not, and it is how escapes hide their dunder names",
            )

    def run(self) -> list[TemplateRisk]:  # one case per node type
        assigned = set(self.symbols)
        for node in self.tree.find_all(nodes.Node):
            if isinstance(node, nodes.Getattr):
                self._check_name(node.attr, f"`.{node.attr}`")
            elif isinstance(node, nodes.Getitem):
                self._check_key(node.arg, "`[...]` (Jinja falls back to getattr)")
            elif isinstance(node, nodes.Filter):
                self._check_filter(node)
            elif isinstance(node, nodes.Call):
                self._check_format(node)
            elif isinstance(node, nodes.Name) and node.ctx == "load" and node.name in UNUSED_GLOBALS:
                if node.name not in assigned:
                    self._flag(
                        "global",
                        Severity.HIGH,
                        node.name,
                        f"chat template uses the global {node.name!r}, which real templates never use and whose "
                        "attributes lead to Python's internals",
                    )
            elif isinstance(node, (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
                self._flag(
                    "loader",
                    Severity.HIGH,
                    type(node).__name__.lower(),
                    "chat template loads another template: with a file loader this reads files beside the model",
                )
            if isinstance(node, nodes.Expr) and not isinstance(node, (nodes.Name, nodes.Getattr, nodes.Getitem)):
                self._check_built(node)
        return self.out

    def _check_built(self, node: nodes.Expr) -> None:
        """A dunder name the template builds anywhere, even where it is not yet used as one."""
        val = self.value(node)
        for text in val.strings | val.items:
            name = text.strip()
            if _DUNDER.fullmatch(name):
                self._flag(
                    "injection",
                    Severity.CRITICAL,
                    name,
                    f"chat template builds the name {name!r}: dunder and private names are how templates "
                    "reach Python's internals (CVE-2024-34359)",
                )

    def _check_filter(self, node: nodes.Filter) -> None:
        if node.name == "attr" or node.name in _ATTRIBUTE_FILTERS:
            for dyn in (node.dyn_args, node.dyn_kwargs):  # `x|attr(*names)`, `map(**{"attribute": n})`
                if dyn is not None:
                    self._check_key(dyn, f"the `{node.name}` filter's unpacked arguments")
                    self._flag(
                        "computed-name",
                        Severity.HIGH,
                        node.name,
                        f"chat template passes the `{node.name}` filter unpacked arguments: the attribute it reads "
                        "is not spelt out",
                    )
        if node.name == "attr":
            if node.args:
                self._check_key(node.args[0], "the `attr` filter")
                if not isinstance(node.args[0], nodes.Const):
                    self._flag(
                        "computed-name",
                        Severity.HIGH,
                        "attr",
                        "chat template calls the `attr` filter with a name that is not spelt out; real templates do not",
                    )
            return
        spec = _ATTRIBUTE_FILTERS.get(node.name)
        if spec is None:
            return
        key, position = spec
        exprs = [kw.value for kw in node.kwargs if kw.key == key]
        if position is not None and len(node.args) > position:
            exprs.append(node.args[position])
        for expr in exprs:
            self._check_key(expr, f"the `{node.name}` filter's attribute path")

    def _check_format(self, node: nodes.Call) -> None:
        callee = node.node
        if not isinstance(callee, nodes.Getattr) or callee.attr != "format":
            return
        base = self.value(callee.node)
        if base.computed or not base.strings:
            self._flag(
                "computed-name",
                Severity.HIGH,
                "format",
                "chat template calls str.format on a string it does not spell out; format fields can read attributes",
            )
        for text in base.strings:
            for path in _format_fields(text):
                for part in path:
                    self._check_name(part, "a str.format field")


def _path_parts(text: str, how: str) -> list[str]:
    """The names Jinja reads: a filter's `a.b.c` path splits on dots, an item key does not."""
    if "filter" in how:
        return [p for p in re.split(r"[.\[\]]", text) if p]
    return [text]


def _format_fields(text: str) -> Iterator[list[str]]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return
    for _literal, name, _spec, _conv in parsed:
        if name:
            yield [p for p in re.split(r"[.\[\]]", name)[1:] if p]


def _const_int(node: nodes.Node | None) -> int | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, int):
        return int(node.value)
    if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const) and isinstance(node.node.value, int):
        return -int(node.node.value)
    return None


def _const_index(arg: nodes.Node) -> int | slice | None:
    if isinstance(arg, nodes.Slice):
        parts = [None if p is None else _const_int(p) for p in (arg.start, arg.stop, arg.step)]
        given = [p for p in (arg.start, arg.stop, arg.step) if p is not None]
        if sum(p is not None for p in parts) != len(given) or parts[2] == 0:
            return None
        return slice(*parts)
    return _const_int(arg)


def _is_index(expr: nodes.Node) -> bool:
    """Integer or slice subscripts and arithmetic on them: `[-1]`, `[1:]`, `[loop.index0 - 1]`."""
    if isinstance(expr, (nodes.Slice, nodes.Neg, nodes.Sub, nodes.FloorDiv, nodes.Div)):
        return True
    if isinstance(expr, nodes.Const):
        return not isinstance(expr.value, str)
    if isinstance(expr, (nodes.Add, nodes.Mul)):
        return any(_const_int(side) is not None for side in (expr.left, expr.right))
    if isinstance(expr, nodes.Filter):
        return expr.name in _NUMBER_FILTERS
    return False


def _is_reference(expr: nodes.Node) -> bool:
    """A value read from the caller's data, as real templates index with: `value[key]`, `x[tool.name]`."""
    if isinstance(expr, nodes.Filter) and expr.name in _SIMPLE_STRING_FILTERS and expr.node is not None:
        return _is_reference(expr.node)  # `roles[message.role|lower]`: the caller's value, normalised
    while isinstance(expr, (nodes.Getattr, nodes.Getitem)):
        if isinstance(expr, nodes.Getitem) and not (isinstance(expr.arg, nodes.Const) or _is_reference(expr.arg)):
            return False
        expr = expr.node
    return isinstance(expr, nodes.Name)


def _join(choices: list[list[str]], seps: frozenset[str]) -> _Val:
    """A literal list joined in its own order: `["__glo", "bals__"]|join`."""
    out: set[str] = set()
    for sep in seps:
        for combo in itertools.product(*choices):
            out.add(sep.join(combo))
            if len(out) > _MAX_STRINGS:
                return _COMPUTED
    return _strings(out)


def _join_any(items: list[str], seps: frozenset[str]) -> _Val:
    """Strings joined in an order Bastion does not track: every order of a few of them."""
    if len(items) > _MAX_JOIN_ITEMS or not seps:
        return _COMPUTED
    out = {sep.join(p) for sep in seps for r in range(1, len(items) + 1) for p in itertools.permutations(items, r)}
    return _strings(out)
