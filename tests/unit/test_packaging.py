# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Galaxy tarball ships the collection and nothing of the workplace around it.

The tarball is built from a copy of the checkout (the files git would commit) in which the
workplace directories are planted with a file each, so ``build_ignore`` in galaxy.yml is tested
whether or not those directories happen to exist here. The tarball is then installed into an empty
collections path and ``ansible-doc`` must read every module's documentation from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests import needs
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Directories that live in the checkout but must never ship (tools/bench are repo-only helpers).
WORKPLACE_DIRS = (".venv", ".collections", ".sanity", ".cache", ".ansible", "tools", "bench", "node_modules",
                  "tests/output", ".pytest_cache", ".ci")
REQUIRED_FILES = ("meta/runtime.yml", "README.md", "MANIFEST.json", "FILES.json")


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed with rc={proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _checkout_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode()
    return [f for f in out.split("\0") if f and os.path.lexists(ROOT / f) and not f.startswith(".ansible/")]


def _clean_env(tmp: Path) -> dict[str, str]:
    """An environment in which only the installed tarball can provide rum.pool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "PYTHONPATH"}
    cfg = tmp / "ansible.cfg"
    cfg.write_text("[defaults]\n", encoding="utf-8")
    env.update(ANSIBLE_CONFIG=str(cfg), ANSIBLE_HOME=str(tmp / "home"), ANSIBLE_NOCOLOR="1")
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(source copy, tarball path, member names, environment)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    files = _checkout_files()
    for rel in files:
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest, follow_symlinks=False)
    for d in WORKPLACE_DIRS:
        (src / d).mkdir(parents=True, exist_ok=True)
        (src / d / "planted-by-test_packaging.txt").write_text("must not ship\n", encoding="utf-8")
    env = _clean_env(tmp)
    out = tmp / "dist"
    _run([_tool("ansible-galaxy"), "collection", "build", "--output-path", str(out), str(src)], tmp, env)
    tarballs = sorted(out.glob("rum-pool-*.tar.gz"))
    assert len(tarballs) == 1, f"expected one rum-pool tarball in {out}, got {tarballs}"
    with tarfile.open(tarballs[0]) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
    return src, tarballs[0], members, env


def test_tarball_name_matches_galaxy_yml(built):
    _src, tarball, members, _env = built
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    assert tarball.name == f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert "MANIFEST.json" in members


def test_workplace_is_not_shipped(built):
    _src, _tarball, members, _env = built
    leaked = sorted(n for n in members for d in WORKPLACE_DIRS if n == d or n.startswith(d + "/"))
    assert not leaked, f"workplace paths in the tarball (add them to build_ignore in galaxy.yml): {leaked}"
    junk = sorted(n for n in members if "__pycache__" in n.split("/") or n.endswith((".pyc", ".tar.gz")))
    assert not junk, f"build junk in the tarball: {junk}"


def test_required_files_are_shipped(built):
    _src, _tarball, members, _env = built
    missing = [f for f in REQUIRED_FILES if f not in members]
    assert not missing, f"missing from the tarball: {missing} (galaxy.yml names README.md as the readme)"


def test_every_plugin_and_role_file_is_shipped(built):
    src, _tarball, members, _env = built
    assert "plugins" in members
    wanted = sorted(str(p.relative_to(src)) for top in ("plugins", "roles") if (src / top).is_dir()
                    for p in (src / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert any(w.startswith("plugins/") for w in wanted), "the checkout has no plugin files to ship"
    missing = [w for w in wanted if w not in members]
    assert not missing, f"plugin/role files left out of the tarball: {missing}"
    if (src / "roles").is_dir() and any((src / "roles").iterdir()):
        assert "roles" in members


def test_installed_tarball_documents_every_module(built, tmp_path):
    _src, tarball, members, env = built
    modules = sorted(Path(n).stem for n in members
                     if n.startswith("plugins/modules/") and n.endswith(".py") and not Path(n).name.startswith("_"))
    assert "rum_vm" in modules and "gh_runner_token" in modules, modules
    dest = tmp_path / "collections"
    _run([_tool("ansible-galaxy"), "collection", "install", "--offline", "-p", str(dest), str(tarball)], tmp_path, env)
    installed = dest / "ansible_collections" / "rum" / "pool"
    assert (installed / "MANIFEST.json").is_file()

    env = dict(env, ANSIBLE_COLLECTIONS_PATH=str(dest))
    names = [f"rum.pool.{m}" for m in modules]
    proc = _run([_tool("ansible-doc"), "-t", "module", "--json", *names], tmp_path, env)
    docs = json.loads(proc.stdout)
    assert sorted(docs) == names
    for name in names:
        doc = docs[name]["doc"]
        assert doc["module"] == name.rsplit(".", 1)[1]
        assert doc["collection"] == "rum.pool"
        assert Path(doc["filename"]).resolve().is_relative_to(installed.resolve()), (
            f"{name} documented from {doc['filename']}, not from the installed tarball at {installed}")
        assert doc.get("short_description"), f"{name} has no short_description"


def test_execution_environment_metadata(built, tmp_path):
    """ansible-builder accepts meta/execution-environment.yml and finds every dependency through it."""
    ee_schema = needs.module("ansible_builder.ee_schema", "pip install ansible-builder")
    depends = needs.module("bindep.depends", "pip install bindep")
    _src, tarball, _members, env = built
    meta = yaml.safe_load((ROOT / "meta/execution-environment.yml").read_text(encoding="utf-8"))
    ee_schema.validate_schema(meta)  # raises DefinitionError on a bad document

    # bindep.txt must parse (Depends raises on a syntax error) and name at least one package.
    bindep_text = (ROOT / meta["dependencies"]["system"]).read_text(encoding="utf-8")
    assert depends.Depends(bindep_text).profiles(), "bindep.txt declares no profiles"

    dest = tmp_path / "collections"
    _run([_tool("ansible-galaxy"), "collection", "install", "--offline", "-p", str(dest), str(tarball)], tmp_path, env)
    proc = _run([_tool("ansible-builder"), "introspect", str(dest)], tmp_path, env)
    found = yaml.safe_load(proc.stdout.split("---", 1)[1])
    got_python = {line.split("#")[0].strip() for line in found.get("python") or []}
    got_system = {line.split("#")[0].strip() for line in found.get("system") or []}

    def wanted(rel: str) -> set[str]:
        lines = (ROOT / rel).read_text(encoding="utf-8").splitlines()
        return {ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()}

    assert wanted(meta["dependencies"]["python"]) == got_python
    assert wanted(meta["dependencies"]["system"]) == got_system
