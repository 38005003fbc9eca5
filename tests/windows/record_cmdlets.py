# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record the parameter sets of the cmdlets the collection's PowerShell calls into tests/data/hyperv_cmdlets.json.

The source is Microsoft's own reference pages, as Markdown in two public repositories:

* MicrosoftDocs/windows-powershell-docs, ``docset/winserver2022-ps/<module>/<Cmdlet>.md``
  (Hyper-V, Storage, ScheduledTasks, ...: Windows Server 2022);
* MicrosoftDocs/PowerShell-Docs, ``reference/5.1/<module>/<Cmdlet>.md`` (the core cmdlets of
  Windows PowerShell 5.1, which Ansible's Windows modules and cloudbase-init's scripts run under).

Each page's SYNTAX section gives the parameter sets: ``-Name <T>`` is mandatory, ``[-Name] <T>``
mandatory and positional, ``[[-Name] <T>]`` optional and positional, ``[-Name <T>]`` optional,
``[-Switch]`` an optional switch. The PARAMETERS section adds aliases and which parameters take
pipeline input. Every entry keeps the page's address and the file it was read from.

Usage (the repositories as bare git directories, e.g. from a ``git clone --mirror``)::

    python tests/windows/record_cmdlets.py --windows-docs DIR --core-docs DIR [CMDLET ...]

Without cmdlet names it records every Verb-Noun command the checked PowerShell calls (see
tests/unit/windows/test_ps_cmdlets.py) that is not a function of the collection's own.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.windows import pscheck  # noqa: E402  (after the path set-up)

SOURCES = (
    ("windows-docs", "MicrosoftDocs/windows-powershell-docs", "docset/winserver2022-ps/"),
    ("core-docs", "MicrosoftDocs/PowerShell-Docs", "reference/5.1/"),
)

_TYPE = r"<[^<>]*>"
_PATTERNS = (
    # (regex, mandatory, positional, switch)
    (re.compile(r"\[\[-(\w+)\]\s*" + _TYPE + r"\]"), False, True, False),
    (re.compile(r"\[-(\w+)\]\s*" + _TYPE), True, True, False),
    (re.compile(r"\[-(\w+)\s+" + _TYPE + r"\]"), False, False, False),
    (re.compile(r"\[-(\w+)\]"), False, False, True),
    (re.compile(r"(?<![\w\[-])-(\w+)\s+" + _TYPE), True, False, False),
    (re.compile(r"(?<![\w\[-])-(\w+)"), True, False, True),
)


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True,
                          text=True).stdout


def parse_syntax(block: str) -> dict:
    """One SYNTAX code block -> mandatory, optional, positional (in order) and switches."""
    text = " ".join(block.split())
    text = text.replace("[<CommonParameters>]", " ")
    first_space = text.find(" ")
    text = " " * (first_space + 1) + text[first_space + 1:]  # drop the cmdlet name
    found = []
    for pattern, mandatory, positional, switch in _PATTERNS:
        for match in pattern.finditer(text):
            found.append((match.start(), match.group(1), mandatory, positional, switch))
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    leftover = text.strip()
    if leftover:
        raise ValueError(f"syntax not understood near {leftover[:60]!r}")
    found.sort()
    return {
        "mandatory": [entry[1] for entry in found if entry[2]],
        "optional": [entry[1] for entry in found if not entry[2]],
        "positional": [entry[1] for entry in found if entry[3]],
        "switches": [entry[1] for entry in found if entry[4]],
    }


def _base_set(heading: str) -> str:
    return heading.replace("(Default)", "").split(" - ")[0].strip()


def _parameter_facts(block: str) -> tuple[list[str], list[str], bool, bool]:
    """(parameter sets, aliases, takes pipeline input, is a switch) from one yaml block of a parameter.

    Two page formats exist: the older ``Parameter Sets: A, B`` / ``Accept pipeline input: True (ByValue)``
    and PlatyPS 2024's ``ParameterSets: [{Name, ValueFromPipeline, ...}]`` / ``Aliases: []``.
    """
    fields = yaml.safe_load(block) or {}
    kind = str(fields.get("Type", ""))
    switch = kind in ("SwitchParameter", "System.Management.Automation.SwitchParameter")
    raw_aliases = fields.get("Aliases") or []
    aliases = raw_aliases if isinstance(raw_aliases, list) else str(raw_aliases).split(",")
    aliases = [str(alias).strip() for alias in aliases if str(alias).strip() and str(alias).strip().lower() != "none"]
    if isinstance(fields.get("ParameterSets"), list):
        sets = [str(entry.get("Name")) for entry in fields["ParameterSets"]]
        pipeline = any(entry.get("ValueFromPipeline") or entry.get("ValueFromPipelineByPropertyName")
                       for entry in fields["ParameterSets"])
    else:
        sets = [name.strip() for name in str(fields.get("Parameter Sets", "(All)")).split(",")]
        pipeline = str(fields.get("Accept pipeline input", "")).strip().lower().startswith("true")
    return sets, aliases, pipeline, switch


def parse_page(markdown: str) -> dict:
    """A reference page -> sets, switches, aliases, pipeline parameters and the page address."""
    front = re.search(r"^(?:online version|HelpUri):\s*(\S+)", markdown, re.MULTILINE)
    page = front.group(1) if front else ""
    page = re.sub(r"[&?](wt\.mc_id|WT\.mc_id)=[^&]*", "", page)
    syntax = markdown.split("## SYNTAX", 1)[1].split("\n## ", 1)[0]
    sets: dict[str, dict] = {}
    switches: set[str] = set()
    heading = "(single set)"
    for part in re.split(r"^(### .*)$", syntax, flags=re.MULTILINE):
        if part.startswith("### "):
            heading = part[4:].strip()
            continue
        for block in re.findall(r"```[a-zA-Z]*\n(.*?)```", part, re.DOTALL):
            parsed = parse_syntax(block)
            switches.update(parsed.pop("switches"))
            name = heading.replace(" (Default)", "").strip()
            sets[name] = {**parsed, "base": _base_set(heading), "pipeline": []}
    if not sets:
        raise ValueError("no SYNTAX code block")
    aliases: dict[str, str] = {}
    parameters = markdown.split("## PARAMETERS", 1)[1].split("\n## ", 1)[0] if "## PARAMETERS" in markdown else ""
    for section in re.split(r"^### -", parameters, flags=re.MULTILINE)[1:]:
        name = section.split("\n", 1)[0].strip()
        for block in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL):
            wanted, names, pipeline, switch = _parameter_facts(block)
            aliases.update((alias, name) for alias in names)
            if switch:
                switches.add(name)
            if not pipeline:
                continue
            for set_name, spec in sets.items():
                if "(All)" in wanted or spec["base"] in wanted or set_name in wanted:
                    if name not in spec["pipeline"] and name in spec["mandatory"] + spec["optional"]:
                        spec["pipeline"].append(name)
    for spec in sets.values():
        spec.pop("base")
    return {"page": page, "sets": sets, "switches": sorted(switches), "aliases": dict(sorted(aliases.items()))}


def dump(data: dict) -> str:
    """JSON with one line per list, so the table stays readable and diffs stay small."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*((?:\"[^\"]*\",?\s*)*)\]",
                  lambda m: "[" + ", ".join(item.strip().rstrip(",") for item in m.group(1).split("\n") if item.strip()) + "]",
                  text)


def _index(git_dir: Path, prefix: str) -> dict[str, str]:
    out = {}
    for path in _git(git_dir, "ls-tree", "-r", "--name-only", "HEAD", prefix).splitlines():
        if path.endswith(".md"):
            out.setdefault(Path(path).stem.lower(), path)
    return out


def used_cmdlets() -> list[str]:
    """The Verb-Noun commands the checked PowerShell calls that the collection does not define itself."""
    sys.path.insert(0, str(ROOT / ".collections"))
    from tests.unit.windows import ps_sources  # pylint: disable=import-outside-toplevel

    local = ps_sources.module_functions()
    names: dict[str, str] = {}
    for _path, source in ps_sources.cmdlet_sources():
        own = local | pscheck.defined_functions(source)
        for call in pscheck.calls(source):
            if pscheck.VERB_NOUN.match(call.name) and call.name.lower() not in own:
                names.setdefault(call.name.lower(), call.name)
    return sorted(names.values(), key=str.lower)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    args.add_argument("--windows-docs", type=Path, required=True, help="git dir of MicrosoftDocs/windows-powershell-docs")
    args.add_argument("--core-docs", type=Path, required=True, help="git dir of MicrosoftDocs/PowerShell-Docs")
    args.add_argument("--out", type=Path, default=pscheck.TABLE)
    args.add_argument("cmdlets", nargs="*")
    options = args.parse_args(argv)
    wanted = options.cmdlets or used_cmdlets()
    indexes = []
    sources = {}
    for key, repository, prefix in SOURCES:
        git_dir = getattr(options, key.replace("-", "_"))
        commit = _git(git_dir, "rev-parse", "HEAD").strip()
        sources[repository] = {"commit": commit, "path": prefix}
        indexes.append((git_dir, repository, _index(git_dir, prefix)))
    cmdlets = {}
    missing = []
    for name in wanted:
        for git_dir, repository, index in indexes:
            path = index.get(name.lower())
            if path:
                entry = parse_page(_git(git_dir, "show", f"HEAD:{path}"))
                cmdlets[name] = {"page": entry.pop("page"), "source": f"{repository}/{path}", **entry}
                break
        else:
            missing.append(name)
    if missing:
        print(f"no reference page found for: {', '.join(missing)}", file=sys.stderr)
        return 1
    data = {
        "about": ("Parameter sets of the cmdlets rum.pool's PowerShell calls, recorded from Microsoft's "
                  "reference pages by tests/windows/record_cmdlets.py; checked by "
                  "tests/unit/windows/test_ps_cmdlets.py. Each entry names its page and source file."),
        "sources": sources,
        "cmdlets": dict(sorted(cmdlets.items(), key=lambda item: item[0].lower())),
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(dump(data) + "\n", encoding="utf-8")
    print(f"recorded {len(cmdlets)} cmdlets into {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
