"""rum_vm's options are declared once: DOCUMENTATION, the argument spec and VMParams agree."""

from __future__ import annotations

import dataclasses
import importlib
import typing as t

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
from ansible_collections.rum.pool.plugins.module_utils import _vm_options as opts
from ansible_collections.rum.pool.plugins.modules import rum_vm

# Spec keys the documentation states too (no_log is code only).
COMPARED = ("type", "required", "default", "choices", "elements")


def _fragment_options(name: str) -> dict:
    """The options of a rum.pool doc fragment such as ``rum.pool.libvirt`` or ``rum.pool.attributes.x``."""
    parts = name.split(".")
    module = importlib.import_module(f"ansible_collections.rum.pool.plugins.doc_fragments.{parts[2]}")
    attr = parts[3].upper() if len(parts) > 3 else "DOCUMENTATION"
    return yaml.safe_load(getattr(module.ModuleDocFragment, attr)).get("options") or {}


def documented_options(module) -> dict:
    doc = yaml.safe_load(module.DOCUMENTATION)
    options: dict = {}
    for fragment in doc.get("extends_documentation_fragment") or []:
        options.update(_fragment_options(fragment))
    options.update(doc["options"])
    return options


def _normalise(entry: dict) -> dict:
    """A doc or spec entry reduced to what both state, with Ansible's implicit defaults filled in."""
    out = {key: entry.get(key) for key in COMPARED}
    out["required"] = bool(out["required"])
    out["type"] = out["type"] or "str"
    if out["choices"] is not None:
        out["choices"] = list(out["choices"])
    sub = entry.get("suboptions", entry.get("options"))
    out["suboptions"] = {name: _normalise(value) for name, value in sub.items()} if sub else None
    return out


def test_documentation_agrees_with_the_argument_spec():
    doc = {name: _normalise(entry) for name, entry in documented_options(rum_vm).items()}
    spec = {name: _normalise(entry) for name, entry in opts.argument_spec().items()}
    assert sorted(doc) == sorted(spec), "options documented but not in the spec, or the other way round"
    for name in spec:
        assert doc[name] == spec[name], f"option {name}: DOCUMENTATION says {doc[name]}, the spec {spec[name]}"


def test_the_module_uses_the_table():
    assert rum_vm.argument_spec() == opts.argument_spec()
    assert opts.argument_spec()["uri"] == lv.connection_argument_spec()["uri"]


def test_the_parameter_object_agrees_with_the_argument_spec():
    spec = opts.argument_spec()
    fields = {f.name: f for f in dataclasses.fields(vm.VMParams)}
    assert list(fields) == list(spec)
    for name, entry in spec.items():
        field = fields[name]
        if entry.get("required"):
            assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, name
            continue
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        assert default == entry.get("default"), f"VMParams.{name} defaults to {default!r}, the spec to {entry.get('default')!r}"
        python_type = opts.PYTHON_TYPES[entry["type"]]
        expected = python_type if entry.get("default") is not None else t.Optional[python_type]
        assert field.type == expected, name


def test_params_from_module_values_are_the_spec_defaults():
    """What AnsibleModule hands over (every option, None where unset) gives VMParams' defaults."""
    values = {name: entry.get("default") for name, entry in opts.argument_spec().items()}
    values["name"] = "x"
    assert vm.VMParams.from_dict(values) == vm.VMParams(name="x")


def test_mutable_defaults_are_not_shared():
    a, b = vm.VMParams(name="a"), vm.VMParams(name="b")
    a.labels["k"] = "v"
    a.mounts.append({})
    assert b.labels == {} and b.mounts == []
    assert opts.argument_spec()["labels"]["default"] == {}


@pytest.mark.parametrize("name", ["state", "reset", "apply_changes", "wait_for", "wait_timeout", "shutdown_timeout"])
def test_run_only_options_do_not_change_the_config_hash(name):
    option = next(o for o in opts.OPTIONS if o.name == name)
    assert name in opts.RUN_ONLY
    other = {"str": option.choices[-1] if option.choices else "x", "int": 7, "bool": True}[option.type]
    assert vm.config_hash(vm.VMParams(name="x")) == vm.config_hash(vm.VMParams(name="x", **{name: other}))


def test_every_other_option_changes_the_config_hash():
    shaping = [o for o in opts.OPTIONS if o.shapes_vm and o.name != "name"]
    base = vm.config_hash(vm.VMParams(name="x"))
    samples = {"str": "other", "path": "/other", "int": 3, "bool": True, "list": [{"x": 1}], "dict": {"x": 1},
               "raw": {"x": 1}}
    for option in shaping:
        value = samples[option.type]
        if option.type == "bool" and option.default is True:
            value = False
        assert vm.config_hash(vm.VMParams(name="x", **{option.name: value})) != base, option.name
