"""Script logs read back from a guest: the SSH command's output parsed, rum log's selections, per VM.

The guest-side wrapper itself is run in test_cloudinit.py (Guest); the booted guest in
tests/integration/test_rum_toml_guest.py reads real logs through rum_vm_info.
"""

from __future__ import annotations

import base64
import io
import subprocess
import tarfile

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _script_logs as sl


def _archive(files: dict[str, str]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(raw.getvalue()).decode()


LOGS = {
    "20260101T120000.000000001Z_provision_ok.log": f"installing\n{sl.STATUS_PREFIX}0\n",
    "20260101T120001.000000001Z_boot_failed.log": f"no network\n{sl.STATUS_PREFIX}2\n",
    "20260101T130000.000000001Z_boot_ok.log": f"{sl.STATUS_PREFIX}0\n",
    "20260101T130500.000000001Z_boot_failed.log": "half a line",  # cut short: no status line
    "notes.txt": "not a log",
}


def test_parse_and_select():
    logs = sl.parse_archive(_archive(LOGS))
    starts = ["20260101T130500.0", "20260101T130000.0", "20260101T120001.0", "20260101T120000.0"]
    assert [log["file"][:17] for log in logs] == starts
    assert logs[0] == {"file": "20260101T130500.000000001Z_boot_failed.log", "script": "boot", "status": "failed",
                       "exit_status": None, "output": "half a line", "time": "2026-01-01T13:05:00.000000001Z"}
    assert logs[3]["output"] == "installing\n" and logs[3]["exit_status"] == 0
    assert logs[1]["output"] == "" and logs[1]["exit_status"] == 0
    assert [log["file"] for log in sl.select(logs, "latest")] == [logs[0]["file"], logs[3]["file"]]
    assert [(log["script"], log["exit_status"]) for log in sl.select(logs, "failed")] == [("boot", None)]
    assert all("output" not in log for log in sl.select(logs, "list")) and len(sl.select(logs, "list")) == 4
    assert sl.select(logs, "all") == logs
    with pytest.raises(ValueError, match="script_logs must be one of list, latest, failed, all"):
        sl.select(logs, "none")


def test_no_logs_and_garbage():
    assert sl.parse_archive("") == []
    with pytest.raises(sl.ScriptLogError, match="came back unreadable"):
        sl.parse_archive("bm90IGEgdGFy")


def test_the_fetch_command_on_a_folder(tmp_path):
    """FETCH_COMMAND itself (without sudo), on an empty folder, a missing one and one with logs."""
    def run(folder):
        command = sl.FETCH_COMMAND.replace("sudo -n ", "").replace(sl.LOG_DIR, str(folder))
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout

    assert run(tmp_path / "missing") == ""
    (tmp_path / "logs").mkdir()
    assert run(tmp_path / "logs") == ""
    for name, text in LOGS.items():
        (tmp_path / "logs" / name).write_text(text)
    assert len(sl.parse_archive(run(tmp_path / "logs"))) == 4


def test_attach_reads_running_vms_and_names_the_ones_it_cannot():
    calls = []

    def remote(host, port, user, identity, command, timeout):
        calls.append((host, port, user, identity, command == sl.FETCH_COMMAND, timeout))
        if host == "10.0.0.9":
            return 255, "", "Connection refused"
        return 0, _archive(LOGS), ""

    vms = [
        {"name": "a", "state": "running", "ssh": {"host": "10.0.0.5", "port": 22, "user": "rum", "identity_file": "/k"}},
        {"name": "b", "state": "shutoff", "ssh": {"host": None, "port": 22, "user": "rum", "identity_file": None}},
        {"name": "c", "state": "running", "ssh": {"host": "10.0.0.9", "port": 22, "user": "rum", "identity_file": None}},
        {"name": "d", "state": "running", "ssh": {"host": None, "port": 22, "user": "rum", "identity_file": None}},
    ]
    problems = sl.attach(vms, "failed", remote=remote)
    assert calls == [("10.0.0.5", 22, "rum", "/k", True, 60), ("10.0.0.9", 22, "rum", None, True, 60)]
    assert [log["script"] for log in vms[0]["script_logs"]] == ["boot"]
    assert vms[1]["script_logs"] is None and vms[2]["script_logs"] is None
    assert problems == [
        "c: reading /var/log/rum/scripts over SSH (rum@10.0.0.9:22) failed with exit status 255: Connection refused",
        "d: no address to read its script logs from yet"]
