# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Windows runner template (packer/windows-runner) passes the same offline checks as the Linux one.

The real ``packer validate`` (Debian's packer 1.6.6 has the hyperv-iso builder built in and
validates it on Linux) with answer files rendered the way build.ps1 renders them; the variable
rules; ``packer fmt``; the answer file as XML; cloudbase-init's configuration read with
cloudbase-init's own option definitions. Its PowerShell is parsed and its cmdlet calls checked in
test_ps_parse.py and test_ps_cmdlets.py. Nothing is downloaded, nothing is built. The offline
recipes in packer/README.md are run from the README's own code blocks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests import needs
from tests.windows import pscheck

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_DIR = ROOT / "packer" / "windows-runner"
SHA = "0123456789abcdef" * 4
PLACEHOLDERS = ("@WINDOWS_IMAGE@", "@PRODUCT_KEY@", "@BUILD_PASSWORD@")
UNATTEND = "{urn:schemas-microsoft-com:unattend}"


def render_answers(folder: Path, password: str = "Throwaway-1234Aa", image: str = "Windows Server 2022 SERVERSTANDARDCORE",
                   key_element: str = "") -> Path:
    """What build.ps1's Write-AnswerFile writes: Autounattend.xml filled in, and enable-winrm.ps1."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (TEMPLATE_DIR / "answer" / "Autounattend.xml.in").read_text(encoding="utf-8")
    text = text.replace("@WINDOWS_IMAGE@", image).replace("@PRODUCT_KEY@", key_element).replace("@BUILD_PASSWORD@", password)
    (folder / "Autounattend.xml").write_text(text, encoding="utf-8")
    shutil.copy(TEMPLATE_DIR / "answer" / "enable-winrm.ps1", folder)
    return folder


@pytest.fixture(scope="module")
def packer() -> str:
    return needs.command("packer", "packer")


def _validate(packer: str, tmp_path: Path, *extra: str, answers: Path | None = None) -> subprocess.CompletedProcess:
    iso = tmp_path / "windows.iso"
    iso.write_bytes(b"not really an ISO: validate does not open it")
    answers = answers or render_answers(tmp_path / "answer")
    args = [packer, "validate", "-var", f"answer_dir={answers}", "-var", "build_password=not-the-real-one-5f3c",
            "-var", f"iso_url={iso}", "-var", f"iso_checksum=sha256:{SHA}", "-var", "switch_name=rum",
            *extra, str(TEMPLATE_DIR)]
    return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, check=False)


def _said(result: subprocess.CompletedProcess) -> str:
    return " ".join((result.stdout + result.stderr).split())


GOOD = ("-var", "runner_version=2.330.0", "-var", f"runner_sha256={SHA}", "-var", f"cloudbase_init_sha256={SHA}")


@pytest.mark.parametrize("toolset", ["minimal", "full"])
def test_template_validates(packer: str, tmp_path: Path, toolset: str) -> None:
    result = _validate(packer, tmp_path, *GOOD, "-var", f"toolset={toolset}",
                       "-var", 'toolset_packages=["git", "7zip"]')
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_is_packer_fmt_clean(packer: str) -> None:
    result = subprocess.run([packer, "fmt", "-check", "-diff", str(TEMPLATE_DIR)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_syntax_only_needs_no_variables(packer: str) -> None:
    result = subprocess.run([packer, "validate", "-syntax-only", str(TEMPLATE_DIR)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("name", "value", "message"), [
    ("toolset", "huge", "The toolset must be minimal or full."),
    ("runner_version", "v2.330.0", "runner_version must look like"),
    ("runner_sha256", SHA.upper(), "runner_sha256 must be 64 lowercase hex"),
    ("cloudbase_init_sha256", "abc", "cloudbase_init_sha256 must be 64 lowercase hex"),
    ("iso_checksum", "md5:abc", "iso_checksum must be sha256:"),
])
def test_bad_variables_are_refused(packer: str, tmp_path: Path, name: str, value: str, message: str) -> None:
    values = {"runner_version": "2.330.0", "runner_sha256": SHA, "cloudbase_init_sha256": SHA, name: value}
    extra = [item for key, val in values.items() for item in ("-var", f"{key}={val}")]
    result = _validate(packer, tmp_path, *extra)
    assert result.returncode != 0
    assert message in _said(result)


def test_example_var_file_must_be_filled_in(packer: str, tmp_path: Path) -> None:
    result = _validate(packer, tmp_path, f"-var-file={TEMPLATE_DIR / 'example.pkrvars.hcl'}")
    output = _said(result)
    assert result.returncode != 0
    for message in ("runner_version must look like", "runner_sha256 must be 64 lowercase hex",
                    "cloudbase_init_sha256 must be 64 lowercase hex"):
        assert message in output
    assert "Undefined variable" not in output and "undeclared" not in output.lower()


def test_missing_answer_files_are_reported(packer: str, tmp_path: Path) -> None:
    result = _validate(packer, tmp_path, *GOOD, answers=tmp_path / "nowhere")
    assert result.returncode != 0
    assert "nowhere/Autounattend.xml" in _said(result)


def test_template_uses_nothing_packer_1_6_lacks() -> None:
    text = (TEMPLATE_DIR / "windows-runner.pkr.hcl").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for later in ("required_plugins", "cd_content", "http_content", "templatefile(", "regex("):
        assert later not in code, later


def test_answer_file_is_valid_and_fully_filled_in(tmp_path: Path) -> None:
    template = (TEMPLATE_DIR / "answer" / "Autounattend.xml.in").read_text(encoding="utf-8")
    assert set(re.findall(r"@[A-Z_]+@", template)) == set(PLACEHOLDERS)
    key = "<ProductKey><Key>VDYBN-27WPP-V4HQT-9VMD4-VMK7H</Key><WillShowUI>OnError</WillShowUI></ProductKey>"
    for element in ("", key):
        text = (render_answers(tmp_path / f"a{len(element)}", key_element=element) / "Autounattend.xml").read_text()
        assert not re.search(r"@[A-Z_]+@", text)
        root = ElementTree.fromstring(text.encode("utf-8"))
        passes = {settings.get("pass") for settings in root.findall(f"{UNATTEND}settings")}
        assert passes == {"windowsPE", "specialize", "oobeSystem"}
        image = root.find(f".//{UNATTEND}InstallFrom/{UNATTEND}MetaData/{UNATTEND}Value").text
        assert image == "Windows Server 2022 SERVERSTANDARDCORE"
        logon = root.find(f".//{UNATTEND}FirstLogonCommands//{UNATTEND}CommandLine").text
        assert "enable-winrm.ps1" in logon
        partitions = [p.text for p in root.findall(f".//{UNATTEND}CreatePartition/{UNATTEND}Type")]
        assert partitions == ["EFI", "MSR", "Primary"], "a generation 2 (UEFI) layout"
        assert (root.find(f".//{UNATTEND}ProductKey") is not None) == bool(element)


def test_build_script_fills_in_exactly_the_placeholders() -> None:
    """build.ps1 replaces every placeholder of the answer file (read from its parse tree)."""
    source = (TEMPLATE_DIR / "build.ps1").read_bytes()
    literals = {node.text.decode().strip("'\"") for node in _walk(pscheck.parse(source).root_node)
                if node.type == "string_literal"}
    assert set(PLACEHOLDERS) <= literals
    assert b"PKR_VAR_build_password" in source, "the password goes to Packer through the environment"
    assert b"-var \"build_password" not in source


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def test_no_credential_or_configuration_is_baked_in() -> None:
    """The runner is unpacked, never configured: no config.cmd, tokens or JIT configs in the build."""
    scripts = "\n".join(path.read_text() for path in (TEMPLATE_DIR / "scripts").glob("*.ps1"))
    code = "\n".join(line for line in scripts.splitlines() if not line.lstrip().startswith("#"))
    assert "config.cmd" not in code and "--token" not in code and "jitconfig" not in code.lower()
    template = (TEMPLATE_DIR / "windows-runner.pkr.hcl").read_text()
    assert not re.search(r'variable "[^"]*(token|jit)', template)
    assert re.search(r'variable "build_password" \{[^}]*sensitive\s*=\s*true', template, re.DOTALL)


def test_build_access_is_removed_before_sysprep() -> None:
    finish = (TEMPLATE_DIR / "scripts" / "finish.ps1").read_text()
    code = "\n".join(line for line in finish.splitlines() if not line.lstrip().startswith("#"))
    sysprep = code.index("sysprep.exe")
    for step in ("Remove-WSManInstance -ResourceURI 'winrm/config/Listener'", "Auth\\Basic' -Value $false", "Remove-NetFirewallRule",
                 "rum.pool build WinRM", "Disable-LocalUser", "C:\\Windows\\Panther\\unattend.xml"):
        assert -1 < code.index(step) < sysprep, step
    assert "/generalize /oobe /shutdown" in code
    assert "Cloudbase-Init\\conf\\Unattend.xml" in code


def _cloudbase_init_options(path: Path):
    """The configuration file read by oslo.config with cloudbase-init's own option definitions."""
    needs.module("cloudbaseinit", "cloudbase-init==1.1.9 (requirements-dev.txt)")
    from oslo_config import cfg  # pylint: disable=import-outside-toplevel
    from cloudbaseinit.conf import factory  # pylint: disable=import-outside-toplevel

    conf = cfg.ConfigOpts()
    for option_class in factory.get_options():
        option_class(conf).register()
    conf(args=["--config-file", str(path)], project="cloudbase-init", default_config_files=[])
    return conf


@pytest.mark.parametrize("name", ["cloudbase-init.conf", "cloudbase-init-unattend.conf"])
def test_cloudbase_init_reads_the_nocloud_seed_from_the_dvd(name: str) -> None:
    conf = _cloudbase_init_options(TEMPLATE_DIR / "cloudbase-init" / name)
    assert conf.metadata_services == ["cloudbaseinit.metadata.services.nocloudservice.NoCloudConfigDriveService"]
    assert conf.config_drive.types == ["iso"] and conf.config_drive.locations == ["cdrom"]
    assert conf.netbios_host_name_compatibility is True
    assert conf.first_logon_behaviour == "no"
    package = Path(needs.module("cloudbaseinit", "cloudbase-init==1.1.9").__file__).parent
    for plugin in conf.plugins:
        module, cls = plugin.rsplit(".", 1)
        source = package.parent / (module.replace(".", "/") + ".py")
        assert source.is_file(), plugin
        assert f"class {cls}(" in source.read_text(), plugin
    plugins = [plugin.rsplit(".", 1)[-1] for plugin in conf.plugins]
    assert "SetHostNamePlugin" in plugins
    assert "CreateUserPlugin" not in plugins and "SetUserPasswordPlugin" not in plugins
    if name == "cloudbase-init.conf":
        assert plugins[-1] == "UserDataPlugin", "the bootstrap runs last, when the name and network are set"
        assert conf.allow_reboot is True
    else:
        assert "UserDataPlugin" not in plugins, "the user-data runs from the service, not during sysprep"


def _readme_block(heading: str, index: int) -> str:
    text = (ROOT / "packer" / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.DOTALL)[index]


def _fill_example(template_dir: Path, values: dict[str, str]) -> None:
    text = (template_dir / "example.pkrvars.hcl").read_text()
    for name, value in values.items():
        text = re.sub(rf'^{name}\s*=.*$', f'{name} = "{value}"', text, flags=re.MULTILINE)
    (template_dir / "my.pkrvars.hcl").write_text(text)


@pytest.mark.parametrize(("template", "index", "values"), [
    ("linux-runner", 0, {"runner_version": "2.330.0", "runner_sha256": SHA}),
    ("windows-runner", 1, {"runner_version": "2.330.0", "runner_sha256": SHA, "cloudbase_init_sha256": SHA,
                           "iso_checksum": f"sha256:{SHA}"}),
])
def test_the_readme_offline_recipe_works(packer: str, tmp_path: Path, template: str, index: int, values: dict) -> None:
    """packer/README.md's 'Checking a template offline' blocks, run as written on a filled-in var file."""
    needs.command("ssh-keygen", "openssh-client")
    work = tmp_path / template
    shutil.copytree(ROOT / "packer" / template, work, ignore=shutil.ignore_patterns("output", "packer_cache", "my.*"))
    _fill_example(work, values)
    block = _readme_block("## Checking a template offline", index)
    block = block.replace("/tmp/", f"{tmp_path}/").replace(f"cd packer/{template}\n", "")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, block + "\n" + result.stdout + result.stderr
    assert "valid" in result.stdout.lower() or "looks okay" in result.stdout.lower() or result.stdout == "", result.stdout
