# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Packer runner image template: it validates, its scripts parse and lint, its seed is valid.

Runs the real ``packer validate`` (Debian's packer 1.6.6 has the qemu builder built in, so no
plugin download is needed) with a seed and throw-away key made by ``build.sh --prepare``; nothing
is built and nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "packer" / "linux-runner"
SCRIPTS = sorted(TEMPLATE_DIR.glob("scripts/**/*.sh")) + [TEMPLATE_DIR / "build.sh"]
SHA = "0123456789abcdef" * 4


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is missing: apt-get install {package}")
    return path


@pytest.fixture(scope="module")
def packer() -> str:
    return _require("packer", "packer")


@pytest.fixture()
def seed(tmp_path: Path) -> Path:
    seed_dir = tmp_path / "seed"
    subprocess.run(["bash", str(TEMPLATE_DIR / "build.sh"), "--prepare", str(seed_dir)], check=True,
                   env={**os.environ, "BUILD_USER": "packer"})
    return seed_dir


def _validate(packer: str, seed: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"not really an image: validate does not open it")
    args = [packer, "validate",
            "-var", f"seed_dir={seed}",
            "-var", f"ssh_private_key_file={seed / 'key'}",
            # A local image with a literal digest: validate would otherwise fetch a SUMS file.
            "-var", f"iso_url={base}",
            "-var", f"iso_checksum=sha256:{SHA}",
            *extra, str(TEMPLATE_DIR)]
    return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, check=False)


def _said(result: subprocess.CompletedProcess) -> str:
    """Packer's output with its line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def test_template_validates(packer: str, seed: Path, tmp_path: Path) -> None:
    result = _validate(packer, seed, tmp_path, "-var", "runner_version=2.330.0", "-var", f"runner_sha256={SHA}",
                       "-var", 'extras=["docker"]', "-var", 'extra_packages=["build-essential"]')
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_is_packer_fmt_clean(packer: str) -> None:
    result = subprocess.run([packer, "fmt", "-check", "-diff", str(TEMPLATE_DIR)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("name", "value", "message"), [
    ("runner_version", "v2.330.0", "runner_version must look like"),
    ("runner_version", "latest", "runner_version must look like"),
    ("runner_sha256", SHA.upper(), "runner_sha256 must be 64 lowercase hex"),
    ("runner_sha256", SHA[:-1], "runner_sha256 must be 64 lowercase hex"),
    ("runner_arch", "arm64", 'Only runner_arch = "x64"'),
])
def test_bad_variables_are_refused(packer: str, seed: Path, tmp_path: Path, name: str, value: str,
                                   message: str) -> None:
    values = {"runner_version": "2.330.0", "runner_sha256": SHA, name: value}
    extra = [item for key, val in values.items() for item in ("-var", f"{key}={val}")]
    result = _validate(packer, seed, tmp_path, *extra)
    assert result.returncode != 0
    assert message in _said(result)


def test_example_var_file_must_be_filled_in(packer: str, seed: Path, tmp_path: Path) -> None:
    """The example's placeholders fail validation with messages that say what to put there,
    and every other setting in it is a declared variable."""
    result = _validate(packer, seed, tmp_path, f"-var-file={TEMPLATE_DIR / 'example.pkrvars.hcl'}")
    output = _said(result)
    assert result.returncode != 0
    assert "runner_version must look like" in output
    assert "runner_sha256 must be 64 lowercase hex" in output
    assert "Undefined variable" not in output and "undeclared" not in output.lower()


def test_missing_seed_is_reported(packer: str, tmp_path: Path) -> None:
    result = _validate(packer, tmp_path / "nowhere", tmp_path, "-var", "runner_version=2.330.0",
                       "-var", f"runner_sha256={SHA}")
    assert result.returncode != 0
    assert "nowhere/user-data" in _said(result)


def test_syntax_only_needs_no_variables(packer: str) -> None:
    result = subprocess.run([packer, "validate", "-syntax-only", str(TEMPLATE_DIR)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_uses_nothing_packer_1_6_lacks() -> None:
    """required_plugins (1.7+), cd_content / http_content and templatefile() break Debian's 1.6.6."""
    text = (TEMPLATE_DIR / "runner.pkr.hcl").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for later in ("required_plugins", "cd_content", "http_content", "templatefile(", "regex("):
        assert later not in code, later


def test_prepared_seed_is_private_and_valid_cloud_config(seed: Path) -> None:
    assert stat.S_IMODE(seed.stat().st_mode) == 0o700
    assert stat.S_IMODE((seed / "key").stat().st_mode) == 0o600
    user_data = (seed / "user-data").read_text()
    public_key = (seed / "key.pub").read_text().strip()
    assert public_key.startswith("ssh-ed25519 ")
    assert public_key in user_data
    assert "@" not in re.sub(r"ssh-ed25519 \S+ \S+", "", user_data), "a placeholder was left"
    meta = (seed / "meta-data").read_text()
    assert re.search(r'instance-id: "rum-runner-build-[0-9a-f]{12}"', meta), meta
    cloud_init = _require("cloud-init", "cloud-init")
    result = subprocess.run([cloud_init, "schema", "--config-file", str(seed / "user-data")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_prepare_makes_a_new_key(tmp_path: Path) -> None:
    keys = []
    for name in ("a", "b"):
        subprocess.run(["bash", str(TEMPLATE_DIR / "build.sh"), "--prepare", str(tmp_path / name)], check=True)
        keys.append((tmp_path / name / "key.pub").read_text())
    assert keys[0] != keys[1]


def test_bad_build_user_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(TEMPLATE_DIR / "build.sh"), "--prepare", str(tmp_path / "s")],
                            env={**os.environ, "BUILD_USER": "x; rm -rf /"}, capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0
    assert "not a valid user name" in result.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(TEMPLATE_DIR)))
def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(TEMPLATE_DIR)))
def test_script_is_shellcheck_clean(script: Path) -> None:
    shellcheck = _require("shellcheck", "shellcheck")
    result = subprocess.run([shellcheck, "-x", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_no_github_credential_is_baked_in() -> None:
    """The runner is unpacked, never registered: config.sh, tokens and JIT configs stay out."""
    install = (TEMPLATE_DIR / "scripts" / "install-runner.sh").read_text()
    code = "\n".join(line for line in install.splitlines() if not line.lstrip().startswith("#"))
    assert "config.sh" not in code
    assert "--token" not in code and "jitconfig" not in code
    for name in ("RUNNER_VERSION", "RUNNER_SHA256", "RUNNER_URL"):
        assert name in code
    template = (TEMPLATE_DIR / "runner.pkr.hcl").read_text()
    assert not re.search(r'variable "[^"]*(token|jit|private_key")', template)


def test_extras_refuses_unknown_recipes(tmp_path: Path) -> None:
    """A name without a recipe is an error, never silently an apt package of that name."""
    recipes = tmp_path / "extras"
    recipes.mkdir()
    (recipes / "docker.sh").write_text("exit 0\n")
    result = subprocess.run(["bash", str(TEMPLATE_DIR / "scripts" / "extras.sh")],
                            env={**os.environ, "EXTRAS": "docker nosuch", "EXTRAS_DIR": str(recipes)},
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "no recipe 'nosuch'" in result.stderr and "available: docker" in result.stderr
    assert recipes.exists(), "nothing may run before the list is checked"


def test_extras_refuses_bad_package_names(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(TEMPLATE_DIR / "scripts" / "extras.sh")],
                            env={**os.environ, "EXTRA_PACKAGES": "jq -oAPT::x=1", "EXTRAS_DIR": str(tmp_path)},
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "'-oAPT::x=1' is not an apt package name" in result.stderr


def test_every_recipe_is_executable_and_strict() -> None:
    for script in SCRIPTS:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "set -euo pipefail" in text, script
        assert os.access(script, os.X_OK), script


@pytest.mark.parametrize(("version", "sha", "message"), [
    ("v2.330.0", SHA, "runner_version 'v2.330.0': expected e.g. 2.330.0"),
    ("2.330", SHA, "runner_version '2.330': expected e.g. 2.330.0"),
    ("2.330.0", SHA.upper(), "runner_sha256: expected 64 lowercase hex digits"),
])
def test_install_runner_checks_its_inputs_first(version: str, sha: str, message: str) -> None:
    """Bad inputs stop the script before it creates a user or downloads anything."""
    env = {**os.environ, "RUNNER_VERSION": version, "RUNNER_SHA256": sha, "RUNNER_URL": "http://127.0.0.1:9/x",
           "RUNNER_DIR": "/nonexistent/rum-test-runner", "RUNNER_USER": "rum-test-no-such-user"}
    result = subprocess.run(["bash", str(TEMPLATE_DIR / "scripts" / "install-runner.sh")], env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "creating user" not in result.stdout
