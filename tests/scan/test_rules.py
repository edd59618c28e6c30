"""The rule catalogue is complete: every rule id the source reports has an entry, and no entry is dead.

Rule ids are collected from the source's syntax tree, at every place a finding is made:
`ctx.add(rule, severity, ...)`, `ctx.incomplete(..., rule_id)` (and its default), `Finding(rule,
...)`, `Judgement(rule, ...)`, any `rule_id=` keyword, and any literal followed by a `Severity`
member (tables such as the pickle scanner's event rules). The README's rule table is generated
from the catalogue and must match it.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.findings import INCOMPLETE_RULES, Finding, Location, Severity
from bastion.scan.rules import CATALOGUE, describe, explain, markdown_table

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "bastion"
RULE_ID = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+$")
_RULE_NAMES = frozenset({"rule", "rule_id"})
README_START, README_END = "<!-- rules:start -->", "<!-- rules:end -->"


def _literal(node: ast.AST | None) -> str | None:
    """A rule id spelt as a literal, or, for one built by an f-string, a regex of the ids it can be."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if RULE_ID.match(node.value) else None
    if isinstance(node, ast.JoinedStr):
        texts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        if not any("." in t for t in texts):
            return None  # not a dotted rule id
        parts = [re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z0-9-]+" for v in node.values]
        return "re:^" + "".join(parts) + "$"
    return None


def _is_severity(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Severity"


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _ids_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        candidates: list[ast.AST | None] = []
        if isinstance(node, ast.Call):
            name, args = _callee(node), node.args
            if (name == "add" and len(args) >= 4) or name in ("Finding", "Judgement"):
                candidates.append(args[0] if args else None)
            if name == "incomplete":
                candidates.append(args[3] if len(args) > 3 else None)
            candidates += [k.value for k in node.keywords if k.arg == "rule_id"]
        if isinstance(node, ast.Call | ast.Tuple | ast.List):
            items = node.args if isinstance(node, ast.Call) else node.elts
            candidates += [a for a, b in itertools.pairwise(items) if _is_severity(b)]
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in _RULE_NAMES for t in node.targets):
            candidates.append(node.value)  # rule = f"{prefix}.template-{kind}"; ctx.add(rule, ...)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            every = [*node.args.posonlyargs, *node.args.args]
            positional = every[len(every) - len(node.args.defaults) :]
            candidates += [d for a, d in zip(positional, node.args.defaults, strict=True) if a.arg == "rule_id"]
            keyword = zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
            candidates += [d for a, d in keyword if a.arg == "rule_id"]
        found |= {text for c in candidates if (text := _literal(c)) is not None}
    return found


def _used_in_source() -> dict[str, list[str]]:
    """Rule id (or "re:" pattern of ids built by an f-string) -> the source files that report it."""
    used: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for rule_id in _ids_in(ast.parse(path.read_text(encoding="utf-8"))):
            used.setdefault(rule_id, []).append(str(path.relative_to(ROOT)))
    return used


def used_rule_ids() -> dict[str, list[str]]:
    """Rule id -> the source files that report it; ids built by f-strings are those of the
    catalogue that the f-string can spell."""
    used: dict[str, list[str]] = {}
    for key, files in _used_in_source().items():
        if key.startswith("re:"):
            for rule_id in (r for r in CATALOGUE if re.match(key[3:], r)):
                used.setdefault(rule_id, []).extend(files)
        else:
            used.setdefault(key, []).extend(files)
    return used


def test_the_extractor_finds_rule_ids_in_every_kind_of_call_site() -> None:
    sample = """
ctx.add("a.one", Severity.LOW, loc, "m", "f")
ctx.incomplete(loc, "m", "f", "a.two")
ctx.incomplete(loc, "m", "f", rule_id="a.three")
RULES = {Event.X: ("a.four", Severity.HIGH)}
Judgement("a.five", Severity.HIGH, "m")
seen.add("not.arule")
def incomplete(self, location, message, fmt, rule_id="a.six"): ...
ctx.add(f"{prefix}.template-{kind}", severity, loc, "m", "f")
rule = f"{family}.sidecar-{kind}"
out.append(Risk("injection", Severity.HIGH))
"""
    assert _ids_in(ast.parse(sample)) == {
        "a.one",
        "a.two",
        "a.three",
        "a.four",
        "a.five",
        "a.six",
        r"re:^[a-z0-9-]+\.template\-[a-z0-9-]+$",
        r"re:^[a-z0-9-]+\.sidecar\-[a-z0-9-]+$",
    }


def test_every_rule_id_used_in_the_source_has_a_catalogue_entry() -> None:
    used = used_rule_ids()
    assert len(used) > 30, "the extractor no longer finds the call sites"
    missing = {rule_id: files for rule_id, files in used.items() if rule_id not in CATALOGUE}
    assert not missing, f"add these to bastion/scan/rules.py: {missing}"


def test_every_rule_id_built_by_an_f_string_has_catalogue_entries() -> None:
    patterns = {k: files for k, files in _used_in_source().items() if k.startswith("re:")}
    unmatched = {k[3:]: files for k, files in patterns.items() if not any(re.match(k[3:], r) for r in CATALOGUE)}
    assert not unmatched, f"rule ids built at run time with no catalogue entry: {unmatched}"


def test_every_catalogue_entry_is_used_in_the_source() -> None:
    dead = set(CATALOGUE) - set(used_rule_ids())
    assert not dead, f"rules no source reports (remove them, or find the call site the test misses): {sorted(dead)}"


def test_catalogue_entries_are_well_formed() -> None:
    for rule_id, rule in CATALOGUE.items():
        assert rule.id == rule_id
        assert RULE_ID.match(rule_id), rule_id
        assert rule.summary and not rule.summary.endswith("."), rule_id
        assert len(rule.help) > 80 and rule.help.endswith((".", ")")), rule_id


def test_not_analysed_rules_agree_with_the_findings_vocabulary() -> None:
    marked = {rule_id for rule_id, rule in CATALOGUE.items() if rule.incomplete}
    assert marked == {r for r in CATALOGUE if r in INCOMPLETE_RULES or r.startswith("scan.incomplete")}
    for rule_id in CATALOGUE:
        finding = Finding(rule_id, Severity.HIGH, Location("x"), "m")
        assert finding.is_incomplete == CATALOGUE[rule_id].incomplete, rule_id


def test_readme_rule_table_matches_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_START in readme and README_END in readme, "the README lost its rule-table markers"
    table = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"
    assert table == markdown_table(), (
        "regenerate the README's rule table: python -c 'from bastion.scan.rules import markdown_table; "
        "print(markdown_table())'"
    )


def test_explain_returns_the_entry_and_refuses_unknown_ids_with_close_matches() -> None:
    rule = explain("pickle.dangerous-global")
    assert "pickle.dangerous-global" in describe(rule) and rule.severity is Severity.CRITICAL
    with pytest.raises(ConfigError, match="unknown rule id") as caught:
        explain("pickle.dangerous-globals")
    assert "pickle.dangerous-global" in caught.value.hint
