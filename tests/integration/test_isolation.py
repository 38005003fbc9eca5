"""Untrusted jobs stay in their box: two real slot guests of a pool, isolated, then not.

The pool roles boot two slots of the test image with runner_pool_isolation on (engine nwfilter), its
allow list opening exactly the fake GitHub's address and port on the libvirt bridge. Then, from
inside the first slot's guest, over SSH from the host, a connection attempt to each of:

- the fake GitHub (allowed: it must connect; the runners came online through it too),
- a test listener on the host, at the bridge address and at the host's other address,
- the second slot's VM (its sshd),
- a private-range address served from a network namespace this test makes (a /30 no route of the
  machine overlaps, routed through the host so the guest's packets would reach it if allowed),

must fail; the guest's verdicts are read back over SSH. Nothing is sent anywhere else: the rules
for the cloud metadata address and for public addresses are read from the filter definitions.
The same probes with the filter switched off on the running guests (rum_vm, no restart) all
connect, so the test can fail; switched on again, they are refused again; with one more port in
the allow list (the filter updated in place on the running guest) exactly that one connects.

And the credential leaves no trace: once the runners are online, the seed CD-ROM is gone from each
live domain and from the host's disk, no process's command line or environment in the guest holds
the JIT config, and no file of the guest does except the runner's own settings files (runner's,
0600). Every domain and filter the collection defined passes virt-xml-validate. Teardown removes
the filters with the VMs.

The nftables engine (the pool's default on a libvirt network) faces the same probes in a test of
its own, on the batch path, with its fail-closed start.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from tests.integration.conftest import TARGETS
from tests.integration.guests import domstate, pool_inventory, wait_until
from tests.integration.test_pool_e2e import BOOT_TIMEOUT, BRIDGE_IP
from tests.integration.test_rum_vm import ROOT, VIRSH

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from fake_github import FakeGitHub  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.rum.pool.plugins.module_utils import _domain as domain  # noqa: E402
from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv  # noqa: E402
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nwfilter  # noqa: E402

POOL = "iso"
HOST = "localhost"
SLOTS = [f"{POOL}-{HOST}-1", f"{POOL}-{HOST}-2"]
REPO = "acme/boxed"
PAT = "ghp_isolation0000000000000000000000000"
LABELS = ["self-hosted", "linux", "x64", "rum-isolation"]
NETNS = "rumtest-iso"
VETH = ("rumiso-h", "rumiso-n")
# Private /30s to serve from the namespace: the first that overlaps no route or address here.
CANDIDATES = ("10.213.77.0/30", "10.199.3.252/30", "172.31.250.0/30", "192.168.251.0/30")

PROBE = r"""
import json, socket, sys
out = {}
for name, host, port in json.load(sys.stdin):
    try:
        socket.create_connection((host, port), timeout=5).close()
        out[name] = "open"
    except ConnectionRefusedError:
        out[name] = "refused"
    except socket.timeout:
        out[name] = "timeout"
    except OSError as exc:
        out[name] = "error: %s" % exc.strerror
print(json.dumps(out))
"""

# Run as root in the guest: a connection to an open target from a forged MAC address, then from the
# guest's own MAC again. stdin: [host, port, seconds]. Each side is tried until it connects or the
# seconds are up (the guest's network set-up follows its MAC: it asks DHCP again, and the filter's
# layer 2 must drop every frame of the forged MAC, that DHCP request and the ARP for the gateway
# first). The neighbour cache is flushed so that each try starts with ARP.
SPOOF = r"""
import json, socket, subprocess, sys, time
host, port, seconds = json.load(sys.stdin)
dev = next(line.split()[0] for line in open("/proc/net/route").read().splitlines()[1:]
           if line.split()[1] == "00000000")
own = open("/sys/class/net/%s/address" % dev).read().strip()
def attempt():
    deadline, verdict = time.monotonic() + seconds, "never tried"
    while time.monotonic() < deadline:
        subprocess.run(["ip", "neigh", "flush", "dev", dev], check=False)
        try:
            socket.create_connection((host, port), timeout=2).close()
            return "open"
        except ConnectionRefusedError:
            verdict = "refused"
        except socket.timeout:
            verdict = "timeout"
        except OSError as exc:
            verdict = "error: %s" % exc.strerror
        time.sleep(0.5)
    return verdict
out = {}
subprocess.run(["ip", "link", "set", "dev", dev, "address", "52:54:00:5f:00:01"], check=True)
try:
    out["forged"] = attempt()
finally:
    subprocess.run(["ip", "link", "set", "dev", dev, "address", own], check=True)
out["own"] = attempt()
print(json.dumps(out))
"""

# Run as root in the guest: where do the JIT config (the blob) and its private key ("d" of
# .credentials_rsaparams) appear? stdin: {"patterns": [...], "runner_dir": ...}. The patterns reach
# grep through a pipe, never a command line.
TRACES = r"""
import glob, json, os, pwd, subprocess, sys
given = json.load(sys.stdin)
patterns = [p.encode() for p in given["patterns"]]
FLAG = ("--jit" + "config").encode()
found = {"cmdline": [], "environ": [], "jitconfig_flag": [], "files": [], "settings": {}}
for proc in glob.glob("/proc/[0-9]*"):
    for kind in ("cmdline", "environ"):
        try:
            data = open(os.path.join(proc, kind), "rb").read()
        except OSError:
            continue
        if any(p in data for p in patterns):
            found[kind].append(proc)
        if kind == "cmdline" and FLAG in data.split(b"\0"):  # an argument --jitconfig (not this script)
            found["jitconfig_flag"].append(data.replace(b"\0", b" ").decode(errors="replace")[:200])
tops = [os.path.join("/", n) for n in sorted(os.listdir("/")) if n not in ("proc", "sys", "dev")]
grep = subprocess.run(["grep", "-rlF", "-D", "skip", "-f", "/dev/stdin"] + tops, input=b"\n".join(patterns),
                      capture_output=True)
found["files"] = sorted(grep.stdout.decode().split())
for name in (".runner", ".credentials", ".credentials_rsaparams"):
    st = os.stat(os.path.join(given["runner_dir"], name))
    found["settings"][name] = [pwd.getpwuid(st.st_uid).pw_name, oct(st.st_mode & 0o777)]
print(json.dumps(found))
"""


def sh(*argv, check=True, **kwargs):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, **kwargs)


def free_port(host="0.0.0.0") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Listener:
    """A TCP listener on the host that accepts and closes: the host's 'other port'."""

    def __init__(self, host="0.0.0.0"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


def _overlaps(net: ipaddress.IPv4Network) -> list[str]:
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    addrs = json.loads(sh("ip", "-j", "-4", "addr", "show").stdout or "[]")
    taken = [r.get("dst") for r in routes if r.get("dst") not in (None, "default")]
    taken += [f"{a['local']}/{a['prefixlen']}" for link in addrs for a in link.get("addr_info", [])]
    return [t for t in taken if ipaddress.IPv4Network(t, strict=False).overlaps(net)]


@pytest.fixture
def private_service():
    """A listener on a private /30 in a network namespace, routed from the host over a veth pair."""
    net = next((ipaddress.IPv4Network(c) for c in CANDIDATES if not _overlaps(ipaddress.IPv4Network(c))), None)
    if net is None:
        pytest.fail(f"every candidate /30 overlaps a route of this machine: {CANDIDATES}")
    host_side, ns_side = [str(a) for a in list(net.hosts())[:2]]
    sh("ip", "netns", "delete", NETNS, check=False)
    sh("ip", "link", "delete", VETH[0], check=False)
    sh("ip", "netns", "add", NETNS)
    proc = None
    try:
        sh("ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1])
        sh("ip", "link", "set", VETH[1], "netns", NETNS)
        sh("ip", "addr", "add", f"{host_side}/30", "dev", VETH[0])
        sh("ip", "link", "set", VETH[0], "up")
        sh("ip", "-n", NETNS, "addr", "add", f"{ns_side}/30", "dev", VETH[1])
        sh("ip", "-n", NETNS, "link", "set", VETH[1], "up")
        sh("ip", "-n", NETNS, "link", "set", "lo", "up")
        sh("ip", "-n", NETNS, "route", "add", "default", "via", host_side)
        port = 8443
        proc = subprocess.Popen(["ip", "netns", "exec", NETNS, sys.executable, "-c",
                                 "import socket\ns=socket.socket(); s.bind(('%s', %d)); s.listen(8)\n"
                                 "while True:\n    c, _ = s.accept(); c.close()" % (ns_side, port)])
        # the host reaches it: the guest's packets would too, through the host, if allowed
        wait_until("the namespace's listener", lambda: _connects(ns_side, port), 20, interval=0.2)
        yield {"address": ns_side, "port": port, "network": str(net)}
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        sh("ip", "link", "delete", VETH[0], check=False)
        sh("ip", "netns", "delete", NETNS, check=False)


def _connects(host, port) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def fake_github():
    subprocess.run(["bash", os.path.join(ROOT, "tools", "ensure-host.sh")], check=True, capture_output=True)
    fake = FakeGitHub(host=BRIDGE_IP, public_url=None)
    url = fake.start()
    fake.admin("POST", "/setup", {"pats": [{"token": PAT, "scopes": ["*"]}]})
    issued: list[str] = []
    original = fake.model._jit_blob  # pylint: disable=protected-access

    def spy(*args, **kwargs):  # the test's own record of the JIT configs handed out, to look for them
        blob = original(*args, **kwargs)
        issued.append(blob)
        return blob
    fake.model._jit_blob = spy  # pylint: disable=protected-access
    yield fake, url, issued
    fake.stop()


def guest_ip(slot: str) -> str | None:
    """The slot guest's address as rum_vm finds it (its newest DHCP lease)."""
    conn = lv.connect("qemu:///system")
    try:
        dom = conn.lookupByName(slot)
        xml = dom.XMLDesc(0)
        return lv.discover_ip(dom, domain.domain_macs(xml), domain.domain_networks(xml))[0]
    finally:
        conn.close()


def disk_sources(slot: str, *flags: str) -> dict:
    """The file behind each disk and CD-ROM of a domain (None: an empty drive)."""
    out: dict = {}
    for disk in ET.fromstring(sh(*VIRSH, "dumpxml", *flags, slot).stdout).findall("devices/disk"):
        source = disk.find("source")
        out.setdefault(disk.get("device"), []).append(source.get("file") if source is not None else None)
    return out


def ssh(storage: str, slot: str, ip: str, command: str, stdin: str = "", timeout: int = 180) -> str:
    key = os.path.join(storage, slot, "id_ed25519")
    argv = ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", f"rum@{ip}", command]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"ssh {ip} {command}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def probe(storage: str, ip: str, targets: dict) -> dict:
    """The first slot guest's verdict on a connection to each target, read back over SSH."""
    given = json.dumps([[name, host, port] for name, (host, port) in targets.items()])
    return json.loads(ssh(storage, SLOTS[0], ip, "python3 -c '%s'" % PROBE.replace("'", "'\"'\"'"), given))


def spoof(storage: str, ip: str, target: tuple, seconds: int) -> dict:
    """The first slot guest's connection to ``target`` from a forged MAC, then from its own."""
    return json.loads(ssh(storage, SLOTS[0], ip, "sudo python3 -c '%s'" % SPOOF.replace("'", "'\"'\"'"),
                          json.dumps([*target, seconds])))


def host_other_address() -> str:
    """An address of this host that is not on the libvirt bridge nor loopback."""
    addrs = json.loads(sh("ip", "-j", "-4", "addr", "show").stdout)
    for link in addrs:
        if link.get("ifname") in ("lo", "virbr0") or link.get("ifname", "").startswith(("vnet", "rumiso")):
            continue
        for info in link.get("addr_info", []):
            return info["local"]
    pytest.fail("this host has no IPv4 address besides loopback and the libvirt bridge")


def validate(kind: str, xml: str, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(xml)
    proc = sh("virt-xml-validate", str(path), kind, check=False)
    assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"


def slot_pool(tmp_path, state_dir: str, folder: str, url: str, isolation: dict, **more) -> tuple[str, str]:
    """The two-slot pool's inventory and storage directory: the test image, SSH keys, the fake GitHub,
    these isolation settings."""
    from tests.tools.testimage import ensure_test_image  # pylint: disable=import-outside-toplevel
    image = ensure_test_image()
    storage = os.path.join(state_dir, folder)
    os.makedirs(storage, mode=0o755, exist_ok=True)
    return pool_inventory(
        tmp_path / "hosts.yml", pool=POOL, host=HOST, labels=LABELS, size=2, online_timeout=BOOT_TIMEOUT,
        github={"api_url": url, "repository": REPO, "token": PAT},
        image={"url": f"file://{image['path']}", "checksum": f"sha256:{image['sha256']}"},
        vm={"domain_type": "qemu", "vcpus": 1, "memory_mb": 640, "storage_dir": storage,
            "image_cache_dir": os.path.join(storage, "images"), "generate_ssh_key": True},
        isolation=isolation, **more), storage


def probe_targets(ips: dict, fake_port: int, listener: Listener, private_service: dict) -> dict:
    """What the first slot's guest tries to reach: only the fake GitHub is allowed."""
    return {
        "github": (BRIDGE_IP, fake_port),
        "host port on the bridge": (BRIDGE_IP, listener.port),
        "host port on its other address": (host_other_address(), listener.port),
        "second slot's VM": (ips[SLOTS[1]], 22),
        "private range (namespace)": (private_service["address"], private_service["port"]),
    }


def tear_down(playbook, inv: str, listener: Listener):
    """teardown.yml's run; what it left of the slots is removed by hand (and the test fails on its rc)."""
    listener.close()
    down = playbook(os.path.join(ROOT, "playbooks", "teardown.yml"), inventory=inv, expect_rc=None)
    for slot in SLOTS:
        if domstate(slot) != "absent":
            sh(*VIRSH, "destroy", slot, check=False)
            sh(*VIRSH, "undefine", "--nvram", slot, check=False)
    return down


@pytest.mark.guest
def test_slots_are_isolated_and_keep_no_credential(fake_github, private_service, state_dir, playbook, tmp_path):
    fake, url, issued = fake_github
    fake_port = int(url.rsplit(":", 1)[1])
    listener = Listener()
    inv, storage = slot_pool(
        tmp_path, state_dir, "isolation", url,
        # the documented way to open a hole: exactly the fake GitHub's address and port
        {"engine": "nwfilter", "github": False, "allow": [{"address": BRIDGE_IP, "ports": [fake_port]}]},
        # slot by slot: each slot's filter is rum-vm-<slot>, which rum_vm switches off and on below
        batch=False)
    timings = {}
    started = time.monotonic()
    try:
        playbook(os.path.join(ROOT, "playbooks", "pool.yml"), inventory=inv)
        timings["converge"] = time.monotonic() - started

        def runners():
            return {r["name"]: r for r in fake.admin("GET", f"/runners?scope=repo:{REPO}")["runners"]}
        wait_until("both runners online (they reach the allowed fake GitHub)",
                   lambda: len(runners()) == 2 and all(r["status"] == "online" for r in runners().values()),
                   BOOT_TIMEOUT, lambda: serial_tails(storage))
        timings["online"] = time.monotonic() - started

        # 1. the seed is gone from each live domain and from the host, soon after the guest read it
        for slot in SLOTS:
            seed = os.path.join(storage, slot, "seed.iso")
            wait_until(f"{slot}'s seed ejected", lambda s=slot, p=seed: not os.path.exists(p) and
                       p not in disk_sources(s), 30, lambda: _watch_log(storage))
            assert disk_sources(slot) == {"disk": [os.path.join(storage, slot, "disk.qcow2")], "cdrom": [None]}
            assert disk_sources(slot, "--inactive")["cdrom"] == [None]
        assert "ejected the seed and deleted" in _watch_log(storage)
        for slot in SLOTS:  # the guest's side: it opened the tray once cloud-init had read the seed
            with open(os.path.join(storage, slot, "serial.log"), errors="replace") as fh:
                assert "rum-seed-read: seed read, opened the tray of /dev/sr0" in fh.read()
        timings["ejected"] = time.monotonic() - started

        ips = {slot: wait_until(f"{slot}'s address", lambda s=slot: guest_ip(s), 60) for slot in SLOTS}
        targets = probe_targets(ips, fake_port, listener, private_service)

        # 2. from inside the first slot's guest, isolation on
        boxed = probe(storage, ips[SLOTS[0]], targets)
        print("isolation on:", json.dumps(boxed, indent=1))
        assert boxed.pop("github") == "open"
        assert set(boxed.values()) == {"refused"}, boxed
        assert listener.accepted == 0
        # the layer-2 rules: a forged source MAC gets nowhere, not even an ARP answer
        forged = spoof(storage, ips[SLOTS[0]], targets["github"], 10)
        print("forged MAC, isolation on:", forged)
        assert forged["forged"] != "open" and forged["own"] == "open", forged

        # the rules never probed: read from the filter definitions libvirt holds
        for slot in SLOTS:
            rules = sh(*VIRSH, "nwfilter-dumpxml", nwfilter.filter_name(slot)).stdout
            validate("nwfilter", rules, tmp_path, f"filter-{slot}")
            assert nwfilter.verdict(rules, nwfilter.METADATA_ADDRESS, 80)[0] == "reject"
            assert nwfilter.verdict(rules, nwfilter.METADATA_ADDRESS, 443)[0] == "reject"
            assert nwfilter.verdict(rules, "140.82.112.3", 443)[0] == "accept"  # a public address, HTTPS
            assert nwfilter.verdict(rules, "140.82.112.3", 22)[0] == "reject"
            assert nwfilter.verdict(rules, "140.82.112.3", 443, "udp")[0] == "reject"
            for which in ("", "--inactive"):
                validate("domain", sh(*VIRSH, "dumpxml", *([which] if which else []), slot).stdout, tmp_path,
                         f"domain-{slot}{which}")

        # 3. the JIT config: on no command line, in no environment, in no file but the runner's own
        blobs = {json.loads(base64.b64decode(json.loads(base64.b64decode(b))[".runner"]))["AgentName"]: b
                 for b in issued}
        for slot in SLOTS:
            name = next(n for n in blobs if n.startswith(slot + "-"))
            files = json.loads(base64.b64decode(blobs[name]))
            key = json.loads(base64.b64decode(files[".credentials_rsaparams"]))["d"]
            traces = json.loads(ssh(storage, slot, ips[slot], "sudo python3 -c '%s'" % TRACES.replace("'", "'\"'\"'"),
                                    json.dumps({"patterns": [blobs[name], key],
                                                "runner_dir": "/opt/actions-runner"}), timeout=600))
            print(f"{slot}: {json.dumps(traces)}")
            assert traces["cmdline"] == [] and traces["environ"] == [] and traces["jitconfig_flag"] == []
            assert traces["files"] == ["/opt/actions-runner/.credentials_rsaparams"], traces["files"]
            assert traces["settings"] == {n: ["runner", "0o600"] for n in (".runner", ".credentials",
                                                                           ".credentials_rsaparams")}
        timings["traces"] = time.monotonic() - started

        # 4. the filter off on the running guests: every probe connects, so the probes can fail
        switch = os.path.join(TARGETS, "isolation", "switch.yml")
        playbook(switch, {"slots": SLOTS, "storage_dir": storage, "network_filter": {"enabled": False}})
        assert [domstate(s) for s in SLOTS] == ["running", "running"]
        assert nwfilter.filter_name(SLOTS[0]) not in sh(*VIRSH, "nwfilter-list").stdout
        open_ = probe(storage, ips[SLOTS[0]], targets)
        print("isolation off:", json.dumps(open_, indent=1))
        assert set(open_.values()) == {"open"}, open_
        assert listener.accepted == 2
        # the same forged MAC with the filter off connects (so the check above can fail)
        assert spoof(storage, ips[SLOTS[0]], targets["github"], 30) == {"forged": "open", "own": "open"}

        # 5. and on again, live: refused again
        playbook(switch, {"slots": SLOTS[:1], "storage_dir": storage,
                          "network_filter": {"allow": [{"address": BRIDGE_IP, "ports": [fake_port]}]}})
        again = probe(storage, ips[SLOTS[0]], targets)
        assert again.pop("github") == "open" and set(again.values()) == {"refused"}, again

        # 6. a hole opened on the running guest: the filter is updated in place, exactly that port opens
        playbook(switch, {"slots": SLOTS[:1], "storage_dir": storage, "network_filter": {"allow": [
            {"address": BRIDGE_IP, "ports": [fake_port, listener.port]}]}})
        holed = probe(storage, ips[SLOTS[0]], targets)
        assert holed.pop("host port on the bridge") == "open" and holed.pop("github") == "open"
        assert set(holed.values()) == {"refused"}, holed
        timings["switches"] = time.monotonic() - started
    except BaseException:
        print(serial_tails(storage))
        raise
    finally:
        down = tear_down(playbook, inv, listener)
        print("timings (s since start):", {k: round(v) for k, v in timings.items()})
    assert down.rc == 0, str(down)
    left = sh(*VIRSH, "nwfilter-list").stdout
    assert not [s for s in SLOTS if nwfilter.filter_name(s) in left], "the filters go with their VMs"
    assert not os.listdir(os.path.join(storage, ".seed-eject")) or \
        set(os.listdir(os.path.join(storage, ".seed-eject"))) <= {".watcher.lock", "watcher.log"}


def nft_elements(kind: str, name: str) -> str:
    """A set or map of the nftables engine's bridge table, as nft lists it ('' when it is not there)."""
    return sh("nft", "list", kind, "bridge", "rum_isolation", name, check=False).stdout


def nic_of(slot: str, inactive: bool = False) -> ET.Element:
    return ET.fromstring(sh(*VIRSH, "dumpxml", *(["--inactive"] if inactive else []), slot).stdout).find(
        "devices/interface")


@pytest.mark.guest
def test_nftables_engine_holds_the_same_line(fake_github, private_service, state_dir, playbook, tmp_path):
    """The same probes with ``engine: nftables`` on the batch path (the pool's default path): what is
    refused is refused, the forged MAC gets nowhere, GitHub is reached; the NICs are defined with
    their link down and a guest started behind rum.pool's back has none until rum_vm holds it;
    teardown leaves no element of the slots in the ruleset."""
    fake, url, _issued = fake_github
    hole = {"address": BRIDGE_IP, "ports": [int(url.rsplit(":", 1)[1])]}
    listener = Listener()
    inv, storage = slot_pool(tmp_path, state_dir, "isolation-nft", url,
                             {"engine": "nftables", "github": False, "allow": [hole]}, wait_online=True)
    hold = tmp_path / "hold.yml"
    hold.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                 "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                 "tasks": [{"rum.pool.rum_vm": {
                                     "name": SLOTS[1], "storage_dir": storage, "state": "running",
                                     "network_filter": {"engine": "nftables", "allow": [hole]}},
                                     "register": "held"},
                                     {"ansible.builtin.assert": {"that": ["held.changed"]}}]}]))
    try:
        playbook(os.path.join(ROOT, "playbooks", "pool.yml"), inventory=inv)  # waits for both runners online
        assert all(r["status"] == "online" for r in fake.admin("GET", f"/runners?scope=repo:{REPO}")["runners"])
        taps = {}
        for slot in SLOTS:
            defined, live = nic_of(slot, inactive=True), nic_of(slot)
            taps[slot] = defined.find("target").get("dev")
            assert domain.TAP_NAME.fullmatch(taps[slot]) and live.find("target").get("dev") == taps[slot]
            assert defined.find("link").get("state") == "down" and live.find("link").get("state") == "up"
            assert defined.find("filterref") is None
            assert taps[slot] in nft_elements("set", "bound")
        assert not [s for s in SLOTS if nwfilter.filter_name(s) in sh(*VIRSH, "nwfilter-list").stdout]

        ips = {slot: wait_until(f"{slot}'s address", lambda s=slot: guest_ip(s), 60) for slot in SLOTS}
        targets = probe_targets(ips, hole["ports"][0], listener, private_service)
        boxed = probe(storage, ips[SLOTS[0]], targets)
        print("nftables engine:", json.dumps(boxed, indent=1))
        assert boxed.pop("github") == "open"
        # frames between guests are dropped on the bridge (the bridge family cannot reject): no answer
        assert boxed.pop("second slot's VM") == "timeout", boxed
        assert set(boxed.values()) == {"refused"}, boxed
        assert listener.accepted == 0
        forged = spoof(storage, ips[SLOTS[0]], targets["github"], 10)
        print("forged MAC, nftables engine:", forged)
        assert forged["forged"] != "open" and forged["own"] == "open", forged

        # fail closed: started by hand, the guest has no link; rum_vm holds it and raises the link
        sh(*VIRSH, "destroy", SLOTS[1])
        sh(*VIRSH, "start", SLOTS[1])
        assert nic_of(SLOTS[1]).find("link").get("state") == "down"
        playbook(str(hold))
        assert nic_of(SLOTS[1]).find("link").get("state") == "up"
    except BaseException:
        print(serial_tails(storage))
        raise
    finally:
        down = tear_down(playbook, inv, listener)
    assert down.rc == 0, str(down)
    left = nft_elements("set", "bound") + nft_elements("map", "polmark")
    assert not [tap for tap in taps.values() if tap in left], left


def _watch_log(storage: str) -> str:
    try:
        with open(os.path.join(storage, ".seed-eject", "watcher.log"), encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        return f"(no watcher log: {exc.strerror})"


def serial_tails(storage: str) -> str:
    out = []
    for slot in SLOTS:
        path = os.path.join(storage, slot, "serial.log")
        try:
            with open(path, errors="replace") as fh:
                out.append(f"--- serial log of {slot} ---\n" + "".join(fh.readlines()[-40:]))
        except OSError as exc:
            out.append(f"({path}: {exc.strerror})")
    return "\n".join(out)
