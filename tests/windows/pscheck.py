# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Static checks of the collection's PowerShell, with a real PowerShell parser (tree-sitter).

Nothing on the machines that run ``make test`` runs PowerShell, so this is what stands between a
typo and a Hyper-V host:

* ``syntax_errors``: tree-sitter-powershell's parse, every ERROR or MISSING node;
* ``calls`` and ``check_call``: every call of a cmdlet recorded in ``tests/data/hyperv_cmdlets.json``
  (Hyper-V, storage, core and guest cmdlets, each recorded from its Microsoft reference page) uses
  parameter names (or aliases) that exist on the cmdlet, all from one parameter set, with that
  set's mandatory parameters given (by name, by position, by splat or from the pipeline);
* ``literal``: a PowerShell literal (hashtable, array, string, number, $true/$false/$null) as
  Python data, so a module's ``$spec`` can be compared with its documentation.

Stricter than PowerShell on purpose: a parameter must be written in full (PowerShell also accepts
any unambiguous prefix); a splatted hashtable must be built in the same file from literal keys.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing as t
from pathlib import Path

import tree_sitter
import tree_sitter_powershell

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "data" / "hyperv_cmdlets.json"

# Parameters every cmdlet has (about_CommonParameters); WhatIf/Confirm only where a set lists them.
COMMON = {name.lower() for name in (
    "Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ErrorVariable",
    "WarningVariable", "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable")}
COMMON_ALIASES = {"vb": "verbose", "db": "debug", "ea": "erroraction", "wa": "warningaction",
                  "infa": "informationaction", "ev": "errorvariable", "wv": "warningvariable",
                  "iv": "informationvariable", "ov": "outvariable", "ob": "outbuffer",
                  "pv": "pipelinevariable"}
# Built-in aliases that hide which cmdlet runs; the collection's code spells cmdlets out.
FORBIDDEN_ALIASES = {"%", "?", "where", "select", "sort", "foreach", "ls", "dir", "gci", "cat", "gc",
                     "rm", "del", "erase", "rmdir", "cp", "copy", "mv", "move", "echo", "sleep", "iex",
                     "gi", "ni", "gm", "ft", "fl", "measure", "tee", "type", "kill", "ps", "gwmi", "icm"}
VERB_NOUN = re.compile(r"[A-Za-z]+-[A-Za-z0-9]+\Z")

_LANGUAGE = tree_sitter.Language(tree_sitter_powershell.language())


def parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(_LANGUAGE)


def parse(source: bytes) -> tree_sitter.Tree:
    return parser().parse(source)


def _walk(node: tree_sitter.Node) -> t.Iterator[tree_sitter.Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def syntax_errors(source: bytes) -> list[str]:
    """``line:column: ERROR near '...'`` for every error or missing node (1-based lines)."""
    tree = parse(source)
    out = []
    for node in _walk(tree.root_node):
        if node.type == "ERROR" or node.is_missing:
            kind = "missing " + node.type if node.is_missing else "syntax error"
            snippet = source[node.start_byte:node.end_byte][:60].decode("utf-8", "replace")
            out.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1}: {kind} near {snippet!r}")
    if tree.root_node.has_error and not out:
        out.append("1:1: the parser reports an error it does not locate")
    return out


# ------------------------------------------------------------------------------------------------
# Literals

_WRAPPERS = {"pipeline", "pipeline_chain", "logical_expression", "bitwise_expression",
             "comparison_expression", "additive_expression", "multiplicative_expression",
             "format_expression", "range_expression", "unary_expression", "statement_list",
             "parenthesized_expression", "left_assignment_expression"}


class NotLiteral(ValueError):
    """The expression is not a plain literal (it has variables, calls, interpolation...)."""


def _text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8")


def _unwrap(node: tree_sitter.Node) -> tree_sitter.Node:
    while True:
        named = node.named_children
        if node.type == "array_literal_expression" and len(named) == 1:
            node = named[0]
        elif node.type in _WRAPPERS and len(named) == 1:
            node = named[0]
        else:
            return node


def _string(node: tree_sitter.Node) -> str:
    raw = _text(node)
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    if raw.startswith('"') and raw.endswith('"'):
        if any(child.type in ("variable", "sub_expression") for child in _walk(node)):
            raise NotLiteral(f"{raw}: an expandable string with variables")
        return raw[1:-1]
    raise NotLiteral(f"{raw}: not a quoted string")


def literal(node: tree_sitter.Node) -> t.Any:
    """A PowerShell literal as Python data; NotLiteral for anything computed."""
    node = _unwrap(node)
    kind = node.type
    if kind == "string_literal":
        return _string(node)
    if kind == "integer_literal":
        return int(_text(node))
    if kind == "real_literal":
        return float(_text(node))
    if kind == "expression_with_unary_operator" and _text(node).startswith("-"):
        value = literal(node.named_children[-1])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    if kind == "variable":
        constants = {"$true": True, "$false": False, "$null": None}
        if _text(node).lower() in constants:
            return constants[_text(node).lower()]
    if kind == "hash_literal_expression":
        out = {}
        for entry in (child for child in _walk(node) if child.type == "hash_entry" and child.parent.parent == node):
            key_node = entry.child_by_field_name("key") or entry.named_children[0]
            key_node = _unwrap(key_node)
            if key_node.type == "key_expression":
                key_node = _unwrap(key_node.named_children[0])
            key = _string(key_node) if key_node.type == "string_literal" else _text(key_node)
            value_node = entry.named_children[-1]
            out[key] = literal(value_node)
        return out
    if kind == "array_expression":
        inner = [child for child in node.named_children if child.type == "statement_list"]
        if not inner:
            return []
        value = literal(inner[0])
        return value if isinstance(value, list) else [value]
    if kind == "array_literal_expression":
        return [literal(child) for child in node.named_children]
    raise NotLiteral(f"{_text(node)[:60]!r} ({kind}) is not a literal")


def assignments(source: bytes) -> dict[str, tree_sitter.Node]:
    """``$name = <value>`` at any depth: the last value node assigned to each variable name (lower case)."""
    out = {}
    for node in _walk(parse(source).root_node):
        if node.type != "assignment_expression":
            continue
        target = _unwrap(node.named_children[0])
        if target.type == "variable":
            out[_text(target).lower()] = node.named_children[-1]
    return out


# ------------------------------------------------------------------------------------------------
# Calls

@dataclasses.dataclass
class Call:
    """One command invocation as written."""

    name: str
    line: int
    parameters: list[str]
    positional: int
    pipeline: bool
    splats: list[str]

    def where(self, path: str = "") -> str:
        return f"{path}:{self.line}: {self.name}"


def _is_switch_value(separator: tree_sitter.Node | None) -> bool:
    return separator is not None and ":" in _text(separator)


def calls(source: bytes, switches: t.Callable[[str, str], bool] = lambda cmd, param: False) -> list[Call]:
    """Every command call with a plain name; ``switches(cmd, param)`` says whether a parameter takes no value."""
    out = []
    for node in _walk(parse(source).root_node):
        if node.type != "command":
            continue
        if any(child.type == "command_invokation_operator" for child in node.children):
            continue  # & $script / & "path" / . $file: not a cmdlet by name
        name_node = next((child for child in node.children if child.type == "command_name"), None)
        if name_node is None:
            continue
        name = _text(name_node)
        previous = node.prev_sibling
        pipeline = previous is not None and previous.type == "|"
        parameters: list[str] = []
        splats: list[str] = []
        positional = 0
        elements = next((child for child in node.children if child.type == "command_elements"), None)
        pending_value = False
        items = list(elements.children) if elements is not None else []
        for index, item in enumerate(items):
            if item.type == "command_argument_sep":
                continue
            if item.type == "redirection":
                continue
            if item.type == "command_parameter":
                parameter = _text(item)[1:]
                parameters.append(parameter)
                following = items[index + 1] if index + 1 < len(items) else None
                pending_value = (_is_switch_value(following) or not switches(name, parameter))
                continue
            text = _text(item)
            if text.startswith("@") and _unwrap(item).type == "variable":
                splats.append(text[1:].lower())
                pending_value = False
                continue
            if pending_value:
                pending_value = False
                continue
            positional += 1
        out.append(Call(name, node.start_point[0] + 1, parameters, positional, pipeline, splats))
    return out


def defined_functions(source: bytes) -> set[str]:
    out = set()
    for node in _walk(parse(source).root_node):
        if node.type == "function_statement":
            name = next((child for child in node.children if child.type == "function_name"), None)
            if name is not None:
                out.add(_text(name).lower())
    return out


def splat_keys(source: bytes) -> dict[str, set[str]]:
    """For ``$p = @{...}`` plus ``$p.Key = ...`` / ``$p['Key'] = ...``: every literal key given to ``$p``."""
    out: dict[str, set[str]] = {}
    for node in _walk(parse(source).root_node):
        if node.type != "assignment_expression":
            continue
        target = _unwrap(node.named_children[0])
        value = _unwrap(node.named_children[-1])
        if target.type == "variable" and value.type == "hash_literal_expression":
            try:
                keys = literal(value).keys()
            except NotLiteral:
                continue
            out.setdefault(_text(target)[1:].lower(), set()).update(keys)
        elif target.type == "member_access" and target.named_children[0].type == "variable":
            member = target.named_children[-1]
            out.setdefault(_text(target.named_children[0])[1:].lower(), set()).add(_text(member))
        elif target.type == "element_access" and target.named_children[0].type == "variable":
            try:
                key = literal(target.named_children[1])
            except NotLiteral:
                continue
            if isinstance(key, str):
                out.setdefault(_text(target.named_children[0])[1:].lower(), set()).add(key)
    return out


# ------------------------------------------------------------------------------------------------
# The cmdlet table

class Table:
    """tests/data/hyperv_cmdlets.json: cmdlet -> page, parameter sets, switches, aliases."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.cmdlets = {name.lower(): entry for name, entry in data["cmdlets"].items()}

    @classmethod
    def load(cls, path: Path = TABLE) -> "Table":
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def entry(self, cmdlet: str) -> dict | None:
        return self.cmdlets.get(cmdlet.lower())

    def canonical(self, cmdlet: str, parameter: str) -> str | None:
        """The parameter's own name (lower case) for a name or alias; None when the cmdlet has no such parameter."""
        entry = self.entry(cmdlet)
        low = parameter.lower()
        if low in COMMON:
            return low
        if low in COMMON_ALIASES:
            return COMMON_ALIASES[low]
        names = {name.lower() for spec in entry["sets"].values()
                 for name in spec["mandatory"] + spec["optional"]}
        if low in names:
            return low
        aliases = {alias.lower(): target.lower() for alias, target in entry.get("aliases", {}).items()}
        return aliases.get(low)

    def is_switch(self, cmdlet: str, parameter: str) -> bool:
        entry = self.entry(cmdlet)
        if entry is None:
            return False
        canonical = self.canonical(cmdlet, parameter)
        if canonical in ("verbose", "debug"):
            return True
        return canonical in {name.lower() for name in entry.get("switches", [])}


def check_call(call: Call, table: Table, splats: dict[str, set[str]] | None = None) -> list[str]:
    """Problems with one call of a recorded cmdlet ([] when it binds to one parameter set)."""
    entry = table.entry(call.name)
    if entry is None:
        return [f"{call.name} is not in the cmdlet table"]
    problems = []
    given: list[str] = []
    for parameter in call.parameters:
        canonical = table.canonical(call.name, parameter)
        if canonical is None:
            problems.append(f"{call.name} has no parameter -{parameter} ({entry['page']})")
        else:
            given.append(canonical)
    for splat in call.splats:
        keys = (splats or {}).get(splat)
        if keys is None:
            problems.append(f"{call.name} @{splat}: the splatted hashtable is not built from literal keys in this file")
            continue
        for key in sorted(keys):
            canonical = table.canonical(call.name, key)
            if canonical is None:
                problems.append(f"{call.name} @{splat} has no parameter -{key} ({entry['page']})")
            else:
                given.append(canonical)
    if problems:
        return problems
    duplicates = sorted({name for name in given if given.count(name) > 1})
    if duplicates:
        return [f"{call.name} gets -{', -'.join(duplicates)} more than once"]
    named = set(given) - COMMON
    fits = []
    reasons = []
    for set_name, spec in entry["sets"].items():
        members = {name.lower() for name in spec["mandatory"] + spec["optional"]}
        outside = sorted(named - members)
        if outside:
            reasons.append(f"{set_name}: no -{', -'.join(outside)}")
            continue
        positional = [name.lower() for name in spec.get("positional", []) if name.lower() not in named]
        if call.positional > len(positional):
            reasons.append(f"{set_name}: {call.positional} positional argument(s), room for {len(positional)}")
            continue
        bound = named | set(positional[:call.positional])
        if call.pipeline:
            takers = [name.lower() for name in spec.get("pipeline", []) if name.lower() not in bound]
            if not takers:
                reasons.append(f"{set_name}: nothing takes pipeline input")
                continue
            bound |= {takers[0]} if len(takers) == 1 else set()
            pipeline_mandatory = set(takers)
        else:
            pipeline_mandatory = set()
        missing = sorted(name for name in (n.lower() for n in spec["mandatory"])
                         if name not in bound and name not in pipeline_mandatory)
        if missing:
            reasons.append(f"{set_name}: mandatory -{', -'.join(missing)} not given")
            continue
        fits.append(set_name)
    if not fits:
        return [f"{call.name} -{' -'.join(call.parameters + ['@' + s for s in call.splats])}: "
                f"no parameter set takes these together ({'; '.join(reasons)}) ({entry['page']})"]
    return []


def check_source(source: bytes, table: Table, path: str = "", local: set[str] | None = None) -> list[str]:
    """Every cmdlet call in ``source``: known (table or ``local`` functions), no aliases, binds to a set."""
    local = (local or set()) | defined_functions(source)
    splats = splat_keys(source)
    problems = []
    for call in calls(source, switches=table.is_switch):
        low = call.name.lower()
        if low in FORBIDDEN_ALIASES:
            problems.append(f"{call.where(path)}: an alias; spell the cmdlet out")
            continue
        if not VERB_NOUN.match(call.name) or low in local:
            continue
        if table.entry(call.name) is None:
            problems.append(f"{call.where(path)}: not in the cmdlet table (tests/windows/record_cmdlets.py records it)")
            continue
        problems.extend(f"{path}:{call.line}: {problem}" for problem in check_call(call, table, splats))
    return problems
