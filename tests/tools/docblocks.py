"""Code blocks of the user guides, for the tests that run them.

A guide marks a fenced code block for the tests with an HTML comment on the line right above its
opening fence (invisible on GitHub and in rendered Markdown)::

    <!-- test: one-machine-pool; stand-ins: runner_pool_image, runner_pool_github.api_url -->
    ```yaml
    # inventory/group_vars/hypervisors/pool.yml
    ...
    ```

- ``test: NAME`` names the block, unique in its document. The tests ask for blocks by name, and
  ``tests/integration/test_docs_guides.py`` fails when a guide has a marked block it did not run.
- ``stand-ins: KEY, KEY.SUB`` (YAML blocks only) names the variables a test may set to its local
  stand-ins (the test image's URL, the fake GitHub's ``api_url``, credentials). A test can set
  these and nothing else: the rest of the block runs as the reader sees it.
- A block whose first line is a comment naming a path (``# inventory/hosts.yml``,
  ``# webhook-service.yml: ...``, ``# /etc/rum-pool/webhook.yml``) is a file to write there;
  other blocks (``bash``) are commands.

Only the blocks come from the guides; nothing here copies their text.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import yaml

MARKER = re.compile(r"^<!--\s*test:\s*(?P<body>.*?)\s*-->\s*$")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
FENCE = re.compile(r"^(?P<fence>```+)\s*(?P<info>[^`]*)$")
PATH_COMMENT = re.compile(r"^#\s+(?P<path>[\w./~-]+?)(?::|\s|$)")
FILE_SUFFIXES = (".yml", ".yaml", ".cfg", ".ini", ".service", ".timer", ".conf", ".json", ".toml", ".txt")


class DocBlockError(Exception):
    """A marker or block a guide got wrong; the message names the document and line."""


@dataclass
class Block:
    """One fenced code block of a guide."""

    doc: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    name: Optional[str] = None
    stand_ins: List[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def path(self) -> Optional[str]:
        """The file this block is, from its first-line comment; None for commands."""
        first = self.text.split("\n", 1)[0]
        match = PATH_COMMENT.match(first)
        if not match or self.lang in ("bash", "sh", "console", "shell"):
            return None
        path = match.group("path")
        return path if path.endswith(FILE_SUFFIXES) else None

    def with_stand_ins(self, values: Mapping[str, Any]) -> str:
        """The block's YAML with each stand-in key set to its value (dotted keys reach into mappings).

        Every key in ``values`` must be one the marker names, and every named key needs a value."""
        unknown = sorted(set(values) - set(self.stand_ins))
        if unknown:
            raise DocBlockError(f"{self.where} ({self.name}): {', '.join(unknown)} is not a stand-in of this "
                                f"block (the marker names: {', '.join(self.stand_ins) or 'none'})")
        missing = [k for k in self.stand_ins if k not in values]
        if missing:
            raise DocBlockError(f"{self.where} ({self.name}): no value for the stand-in {', '.join(missing)}")
        if not self.stand_ins:
            return self.text
        data = yaml.safe_load(self.text)
        if not isinstance(data, dict):
            raise DocBlockError(f"{self.where} ({self.name}): stand-ins need a YAML mapping")
        data = copy.deepcopy(data)
        for key, value in values.items():
            *parents, last = key.split(".")
            target = data
            for part in parents:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise DocBlockError(f"{self.where} ({self.name}): {key}: {part} is not a mapping")
            target[last] = value
        head = self.text.split("\n", 1)[0]
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)
        return (head + "\n" + body) if head.startswith("#") else body


def _marker(body: str, where: str) -> tuple:
    parts = [p.strip() for p in body.split(";")]
    name = parts[0]
    if not NAME.match(name):
        raise DocBlockError(f"{where}: test marker name {name!r}: lower-case letters, digits and '-'")
    stand_ins: List[str] = []
    for part in parts[1:]:
        key, value = (part.split(":", 1) + [""])[:2]
        if key.strip() != "stand-ins" or not value.strip():
            raise DocBlockError(f"{where}: test marker {name!r}: unknown part {part!r} "
                                "(only 'stand-ins: KEY, KEY.SUB')")
        stand_ins += [v.strip() for v in value.split(",") if v.strip()]
    return name, stand_ins


def parse(text: str, doc: str) -> List[Block]:
    """Every fenced block of a Markdown text, with its marker's name and stand-ins if it has one."""
    lines = text.split("\n")
    blocks: List[Block] = []
    pending = None  # (name, stand_ins, line) of a marker waiting for its fence
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            if pending:
                raise DocBlockError(f"{doc}:{pending[2]}: test marker {pending[0]!r} is not followed by a code block")
            pending = _marker(marker.group("body"), f"{doc}:{i + 1}") + (i + 1,)
        elif fence:
            close = fence.group("fence")
            body = []
            j = i + 1
            while j < len(lines) and lines[j].strip() != close:
                body.append(lines[j])
                j += 1
            if j == len(lines):
                raise DocBlockError(f"{doc}:{i + 1}: code block is never closed")
            block = Block(doc, i + 1, fence.group("info").strip().split(" ")[0], "\n".join(body) + "\n")
            if pending:
                block.name, block.stand_ins = pending[0], pending[1]
                pending = None
            blocks.append(block)
            i = j
        elif pending and line.strip():
            raise DocBlockError(f"{doc}:{pending[2]}: test marker {pending[0]!r} is not followed by a code block")
        i += 1
    if pending:
        raise DocBlockError(f"{doc}:{pending[2]}: test marker {pending[0]!r} is not followed by a code block")
    names = [b.name for b in blocks if b.name]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DocBlockError(f"{doc}: test marker names used twice: {', '.join(twice)}")
    for block in blocks:
        if block.stand_ins and block.lang not in ("yaml", "yml"):
            raise DocBlockError(f"{block.where}: stand-ins only work in YAML blocks, this one is {block.lang!r}")
    return blocks


def read(root: str, doc: str) -> List[Block]:
    """The blocks of ``doc`` (a path relative to ``root``)."""
    with open(os.path.join(root, doc), encoding="utf-8") as handle:
        return parse(handle.read(), doc)


def marked(root: str, doc: str) -> Dict[str, Block]:
    """The marked blocks of ``doc`` by name."""
    return {b.name: b for b in read(root, doc) if b.name}
