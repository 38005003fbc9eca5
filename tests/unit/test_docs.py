"""The user guides against the code, without running them (tests/integration/test_docs_guides.py runs
their marked blocks): the test markers, every YAML and shell block, the names the guides use (roles,
modules, playbooks, role variables, GitHub options), the commands' inventory and vault password."""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess

import pytest
import yaml

from tests.tools.docblocks import Block, DocBlockError, marked, parse, read

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDES = sorted(["README.md"] + [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))]
                + ["roles/webhook_service/README.md"])
ALL_MARKDOWN = sorted(set(GUIDES + [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "*", "README.md"))
                                    + glob.glob(os.path.join(ROOT, "roles", "*", "README.md"))]))


def text(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


# -- the marker convention ---------------------------------------------------------------------

SAMPLE = """# A guide

<!-- test: hosts -->
```yaml
# inventory/hosts.yml
all: {}
```

Some text.

<!-- test: pool; stand-ins: runner_pool_image, runner_pool_github.api_url -->

```yaml
# inventory/group_vars/hypervisors/pool.yml
runner_pool_name: ci
runner_pool_github:
  organization: acme
runner_pool_image:
  url: https://images.example.com/x.qcow2
```

```bash
echo not marked
```

<!-- test: run -->
```bash
ansible-playbook -i inventory/ rum.pool.pool
```
"""


def test_marked_blocks_are_found_with_their_names_files_and_stand_ins():
    blocks = parse(SAMPLE, "guide.md")
    assert [(b.name, b.lang, b.path, b.line) for b in blocks] == [
        ("hosts", "yaml", "inventory/hosts.yml", 4),
        ("pool", "yaml", "inventory/group_vars/hypervisors/pool.yml", 13),
        (None, "bash", None, 22),
        ("run", "bash", None, 27)]
    assert blocks[1].stand_ins == ["runner_pool_image", "runner_pool_github.api_url"]
    assert blocks[3].text == "ansible-playbook -i inventory/ rum.pool.pool\n"


def test_stand_ins_set_only_the_named_keys():
    pool = parse(SAMPLE, "guide.md")[1]
    out = pool.with_stand_ins({"runner_pool_image": {"url": "file:///x", "checksum": "sha256:00"},
                               "runner_pool_github.api_url": "http://127.0.0.1:1"})
    assert out.startswith("# inventory/group_vars/hypervisors/pool.yml\n")
    assert yaml.safe_load(out) == {
        "runner_pool_name": "ci",
        "runner_pool_github": {"organization": "acme", "api_url": "http://127.0.0.1:1"},
        "runner_pool_image": {"url": "file:///x", "checksum": "sha256:00"}}


def test_stand_ins_refuse_unnamed_keys_and_need_every_named_one():
    pool = parse(SAMPLE, "guide.md")[1]
    with pytest.raises(DocBlockError, match=r"guide.md:13 \(pool\): runner_pool_name is not a stand-in"):
        pool.with_stand_ins({"runner_pool_name": "x", "runner_pool_image": {}, "runner_pool_github.api_url": ""})
    with pytest.raises(DocBlockError, match="no value for the stand-in runner_pool_github.api_url"):
        pool.with_stand_ins({"runner_pool_image": {}})
    hosts = parse(SAMPLE, "guide.md")[0]
    assert hosts.with_stand_ins({}) == hosts.text


@pytest.mark.parametrize("doc, error", [
    ("<!-- test: lonely -->\nsome text\n```bash\ntrue\n```\n", "guide.md:1: test marker 'lonely' is not followed"),
    ("<!-- test: last -->\n", "guide.md:1: test marker 'last' is not followed"),
    ("<!-- test: Bad_Name -->\n```bash\ntrue\n```\n", "guide.md:1: test marker name 'Bad_Name'"),
    ("<!-- test: x; because: y -->\n```bash\ntrue\n```\n", "unknown part 'because: y'"),
    ("<!-- test: x; stand-ins: a -->\n```bash\ntrue\n```\n", "stand-ins only work in YAML blocks"),
    ("<!-- test: x -->\n```bash\ntrue\n```\n<!-- test: x -->\n```bash\ntrue\n```\n", "names used twice: x"),
    ("```bash\ntrue\n", "guide.md:1: code block is never closed"),
])
def test_marker_mistakes_are_named_with_the_line(doc, error):
    with pytest.raises(DocBlockError, match=re.escape(error)):
        parse(doc, "guide.md")


def test_a_block_is_a_file_only_when_its_first_line_names_one():
    def path(lang, first):
        return Block("d", 1, lang, first + "\nx: 1\n").path
    assert path("yaml", "# webhook-service.yml: ansible-playbook -i inventory/ webhook-service.yml") == "webhook-service.yml"
    assert path("ini", "# /etc/systemd/system/rum-pool.service") == "/etc/systemd/system/rum-pool.service"
    assert path("yaml", "# pools.yml") == "pools.yml"
    assert path("yaml", "# the pool's settings") is None
    assert path("bash", "# hosts.yml") is None


# -- the real guides ------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", ALL_MARKDOWN)
def test_markers_and_blocks_of_every_guide_are_well_formed(doc):
    blocks = read(ROOT, doc)  # raises DocBlockError naming the line
    for block in blocks:
        if block.lang in ("yaml", "yml"):
            try:
                yaml.safe_load(block.text)
            except yaml.YAMLError as exc:
                pytest.fail(f"{block.where}: the YAML block does not parse: {exc}")
        elif block.lang in ("bash", "sh"):
            check = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, check=False)
            assert check.returncode == 0, f"{block.where}: bash -n: {check.stderr}"
        if block.name and block.path:
            assert block.lang in ("yaml", "yml", "ini"), f"{block.where}: a marked file block must be YAML or INI"


def test_the_guide_test_runs_every_marked_block():
    from tests.integration.test_docs_guides import GUIDE_BLOCKS

    for doc, names in GUIDE_BLOCKS.items():
        assert sorted(marked(ROOT, doc)) == sorted(names), (
            f"{doc}: its marked blocks and the ones tests/integration/test_docs_guides.py runs differ")
    others = {doc for doc in ALL_MARKDOWN if marked(ROOT, doc)} - set(GUIDE_BLOCKS)
    assert not others, f"marked blocks in guides no test runs: {sorted(others)}"


def collection_names() -> set:
    names = set()
    for pattern in ("plugins/modules/*.py", "plugins/modules/*.ps1", "playbooks/*.yml", "plugins/inventory/*.py",
                    "plugins/lookup/*.py", "plugins/doc_fragments/*.py", "plugins/filter/*.yml", "plugins/test/*.yml",
                    "extensions/eda/plugins/event_source/*.py", "extensions/eda/rulebooks/*.yml"):
        names |= {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, pattern))}
    names |= {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "roles", "*")) if os.path.isdir(p)}
    runtime = yaml.safe_load(text("meta/runtime.yml"))
    names |= set(runtime.get("action_groups", {}))
    return names - {"__init__"}


@pytest.mark.parametrize("doc", GUIDES)
def test_every_rum_pool_name_in_the_guides_exists(doc):
    known = collection_names()
    used = set(re.findall(r"(?<![/\w])rum\.pool\.([a-z_][a-z0-9_]*)", text(doc)))
    assert used - known == set(), f"{doc} names what the collection does not have"


@pytest.mark.parametrize("doc", GUIDES)
def test_every_role_variable_in_the_guides_exists(doc):
    content = text(doc)
    for role in ("webhook_service", "runner_pool", "runner_slot", "libvirt_host"):
        spec = yaml.safe_load(text(f"roles/{role}/meta/argument_specs.yml"))["argument_specs"]
        options = set().union(*((ep.get("options") or {}).keys() for ep in spec.values()))
        used = set(re.findall(r"\b(%s_[a-z0-9_]*[a-z0-9])\b" % role, content))
        assert used - options == set(), f"{doc}: not variables of the {role} role"


def test_the_webhook_service_installs_the_ansible_core_the_collection_is_tested_with():
    pin = re.search(r"^(ansible-core==\S+)", text("requirements-dev.txt"), re.M).group(1)
    assert yaml.safe_load(text("roles/webhook_service/defaults/main.yml"))["webhook_service_ansible_core"] == pin
    spec = yaml.safe_load(text("roles/webhook_service/meta/argument_specs.yml"))
    assert spec["argument_specs"]["main"]["options"]["webhook_service_ansible_core"]["default"] == pin


def test_github_md_lists_every_github_option():
    from ansible_collections.rum.pool.plugins.doc_fragments.github import ModuleDocFragment

    options = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    table = text("docs/github.md").split("## Options", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in options if f"`{name}`" not in table]
    assert missing == [], f"docs/github.md's options table leaves out {missing}"


def command_lines(doc: str):
    """(block, line, argv) for every ansible / ansible-playbook command in the guide's shell blocks."""
    for block in read(ROOT, doc):
        if block.lang not in ("bash", "sh"):
            continue
        joined = block.text.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if re.match(r"^(ansible|ansible-playbook)\s", line):
                yield block, line, shlex.split(line)


@pytest.mark.parametrize("doc", ["README.md", "docs/pool.md", "docs/webhooks.md"])
def test_commands_on_the_inventory_name_it_and_the_vault_password(doc):
    for block, line, argv in command_lines(doc):
        on_inventory = "inventory/" in argv or doc == "docs/pool.md"
        if not on_inventory:
            continue
        assert "-i" in argv and argv[argv.index("-i") + 1] == "inventory/", f"{block.where}: no -i inventory/: {line}"
        vault = ("--vault-password-file" in argv or "--ask-vault-pass" in argv
                 or "ANSIBLE_VAULT_PASSWORD_FILE=" in block.text)
        assert vault, f"{block.where}: the inventory has a vault, but no vault password: {line}"
