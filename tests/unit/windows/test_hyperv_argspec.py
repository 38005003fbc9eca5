# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Windows modules' PowerShell agrees with their documentation, and with what the pool expects.

* The ``$spec`` of each .ps1 module, read from the tree-sitter parse (not with regular
  expressions), matches the sibling .py's DOCUMENTATION: option names, types, defaults, choices,
  required, no_log, elements; and ``supports_check_mode`` matches the check_mode attribute.
* The ``#AnsibleRequires`` lines resolve the way ansible-core resolves them when it sends the
  module to a Windows host (its own PSModuleDepFinder), so the module util is found.
* ``hyperv_vm_info`` returns entries with every key ``rum_vm_info`` returns, and the facts the
  PowerShell builds have exactly the documented keys.
* Every Hyper-V VM state maps to a state word the pool's planner understands.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _pool
from tests.windows import pscheck

ROOT = Path(__file__).resolve().parents[3]
MODULES = ROOT / "plugins" / "modules"
PSM1 = ROOT / "plugins" / "module_utils" / "_HyperV.psm1"
WINDOWS_MODULES = ("hyperv_vm", "hyperv_vm_info")
SPEC_KEYS = {"type", "default", "choices", "required", "no_log", "elements", "aliases"}


def _doc(module: str, part: str = "DOCUMENTATION") -> dict:
    spec = importlib.util.spec_from_file_location(f"_doc_{module}", MODULES / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return yaml.safe_load(getattr(loaded, part))


def _ps_spec(source: bytes) -> dict:
    values = pscheck.assignments(source)
    assert "$spec" in values, "the module assigns no $spec"
    return pscheck.literal(values["$spec"])


def spec_differences(spec: dict, documentation: dict) -> list[str]:
    """What differs between an Ansible.Basic spec and a DOCUMENTATION block ([] when they agree)."""
    out = []
    options = spec.get("options", {})
    documented = documentation.get("options", {})
    for name in sorted(set(options) - set(documented)):
        out.append(f"{name}: in the spec, not documented")
    for name in sorted(set(documented) - set(options)):
        out.append(f"{name}: documented, not in the spec")
    for name in sorted(set(options) & set(documented)):
        have, want = options[name], documented[name]
        unknown = set(have) - SPEC_KEYS
        if unknown:
            out.append(f"{name}: spec keys {sorted(unknown)} are not checked here")
        for key, default in (("type", "str"), ("default", None), ("choices", None), ("required", False),
                             ("no_log", False), ("elements", None), ("aliases", None)):
            if have.get(key, default) != want.get(key, default):
                out.append(f"{name}.{key}: spec {have.get(key, default)!r}, documentation {want.get(key, default)!r}")
    check_mode = documentation.get("attributes", {}).get("check_mode", {}).get("support")
    if spec.get("supports_check_mode", False) != (check_mode in ("full", "partial")):
        out.append(f"supports_check_mode {spec.get('supports_check_mode')!r} but the check_mode attribute says {check_mode!r}")
    return out


def _full_documentation(module: str) -> dict:
    """DOCUMENTATION with its fragments merged, as ansible-doc shows it."""
    result = subprocess.run([sys.executable, "-m", "ansible.cli.doc", "--json", f"rum.pool.{module}"],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[f"rum.pool.{module}"]["doc"]


@pytest.mark.parametrize("module", WINDOWS_MODULES)
def test_spec_agrees_with_documentation(module: str) -> None:
    spec = _ps_spec((MODULES / f"{module}.ps1").read_bytes())
    assert spec_differences(spec, _full_documentation(module)) == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: s["options"]["vcpus"].update(default=4), "vcpus.default: spec 4, documentation 2"),
    (lambda s: s["options"]["state"]["choices"].remove("restarted"), "state.choices"),
    (lambda s: s["options"]["name"].pop("required"), "name.required: spec False, documentation True"),
    (lambda s: s["options"]["kvp_items"].update(no_log=True), "kvp_items.no_log: spec True"),
    (lambda s: s["options"]["path"].update(type="str"), "path.type: spec 'str', documentation 'path'"),
    (lambda s: s["options"].pop("seed_iso"), "seed_iso: documented, not in the spec"),
    (lambda s: s["options"].update(extra={"type": "str"}), "extra: in the spec, not documented"),
    (lambda s: s.update(supports_check_mode=False), "supports_check_mode False"),
])
def test_a_spec_that_disagrees_is_caught(change: t.Callable[[dict], None], expected: str) -> None:
    spec = _ps_spec((MODULES / "hyperv_vm.ps1").read_bytes())
    change(spec)
    differences = spec_differences(spec, _full_documentation("hyperv_vm"))
    assert any(expected in line for line in differences), differences


def test_the_spec_is_read_from_the_parse_tree() -> None:
    """Quoting, line breaks and @() arrays do not matter: the values come from the parsed literal."""
    source = b"""
$spec = @{
    options = @{
        'a' = @{
            type = "list"; elements = 'str'
            default = @('x',
                'y')
        }
        b = @{ type = 'int'; default = -3; choices = 1, 2, -3 }
        c = @{ type = 'str'; no_log = $true; required = $true }
    }
    supports_check_mode = $false
}
"""
    assert _ps_spec(source) == {"options": {"a": {"type": "list", "elements": "str", "default": ["x", "y"]},
                                            "b": {"type": "int", "default": -3, "choices": [1, 2, -3]},
                                            "c": {"type": "str", "no_log": True, "required": True}},
                                "supports_check_mode": False}
    with pytest.raises(pscheck.NotLiteral):
        _ps_spec(b"$spec = @{ options = @{ a = @{ default = $env:X } } }")


@pytest.mark.parametrize("module", WINDOWS_MODULES)
def test_module_util_resolves_like_ansible_resolves_it(module: str) -> None:
    """ansible-core's own dependency finder for Windows modules finds the collection's _HyperV.psm1."""
    script = (
        "import sys\n"
        "from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder\n"
        "_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()\n"
        "from ansible.executor.powershell.module_manifest import PSModuleDepFinder\n"
        "finder = PSModuleDepFinder()\n"
        "deps = finder.scan_module(open(sys.argv[2], 'rb').read(),"
        " fqn='ansible_collections.rum.pool.plugins.modules.' + sys.argv[3], powershell=True)\n"
        "print('\\n'.join(sorted(deps)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(ROOT / ".collections"),
                             str(MODULES / f"{module}.ps1"), module], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    deps = result.stdout.split()
    assert "ansible_collections.rum.pool.plugins.module_utils._HyperV.psm1" in deps
    assert "Ansible.Basic.cs" in deps


def _return_keys(module: str, key: str) -> set[str]:
    return set(_doc(module, "RETURN")[key]["contains"])


def test_info_entries_have_the_shape_of_rum_vm_info() -> None:
    # script_logs comes only with rum_vm_info's option of that name (libvirt guests' cloud-init script logs)
    libvirt = _return_keys("rum_vm_info", "vms") - {"script_logs"}
    hyperv = _return_keys("hyperv_vm_info", "vms")
    assert libvirt <= hyperv, f"missing {sorted(libvirt - hyperv)}"
    assert set(_doc("hyperv_vm", "RETURN")["vm"]["sample"]) == hyperv, "hyperv_vm's sample VM has the same keys"


def _function_body(source: bytes, name: str) -> bytes:
    start = source.index(f"function {name} {{".encode())
    end = source.index(b"\n}\n", start)
    return source[start:end + 3]


def test_the_facts_the_powershell_builds_are_the_documented_keys() -> None:
    body = _function_body(PSM1.read_bytes(), "Get-RumVmFacts")
    returned = [node for node in _walk(pscheck.parse(body).root_node)
                if node.type == "flow_control_statement" and node.text.decode().startswith("return @{")]
    assert len(returned) == 1, "Get-RumVmFacts should end in one 'return @{ ... }'"
    table = next(node for node in _walk(returned[0]) if node.type == "hash_literal_expression")
    keys = {entry.named_children[0].text.decode() for entry in _walk(table)
            if entry.type == "hash_entry" and entry.parent.parent == table}
    assert keys == _return_keys("hyperv_vm_info", "vms")


def _walk(node: t.Any) -> t.Iterator[t.Any]:
    yield node
    for child in node.children:
        yield from _walk(child)


def test_every_hyperv_state_maps_to_a_state_the_planner_knows() -> None:
    state_map = pscheck.literal(pscheck.assignments(PSM1.read_bytes())["$script:statemap"])
    table = json.loads((ROOT / "tests" / "data" / "hyperv_vm_states.json").read_text(encoding="utf-8"))
    assert set(state_map) == set(table["names"]), "the map and the recorded VMState names differ"
    understood = set(_pool.RUNNING_STATES) | set(_pool.DEAD_STATES) | {"shutdown", "nostate"}
    assert set(state_map.values()) <= understood
    assert state_map["Running"] in _pool.RUNNING_STATES
    assert state_map["Off"] == "shutoff" and state_map["Off"] in _pool.DEAD_STATES
    assert state_map["Paused"] in _pool.DEAD_STATES and state_map["Saved"] in _pool.DEAD_STATES
    assert all(value == "crashed" for key, value in state_map.items() if key.endswith("Critical"))
