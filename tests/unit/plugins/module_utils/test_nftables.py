# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nftables isolation engine: the policy chain, tap names, the ruleset's transactions, what a
domain's definition tells it, and the start that holds a guest before its link goes up (a fake
domain and a fake nft; the real kernel is the integration test's, test_isolation.py)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

import pytest

from ansible_collections.rum.pool.plugins.module_utils import _domain as d
from ansible_collections.rum.pool.plugins.module_utils import _nftables as nft
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nf
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm

GATEWAY = "192.168.122.1"
AROUND = nf.Surroundings(services=(ipaddress.IPv4Address(GATEWAY),),
                         local_networks=(ipaddress.IPv4Network("192.168.122.0/24"),),
                         host_addresses=(ipaddress.IPv4Address("198.51.100.7"), ipaddress.IPv4Address(GATEWAY)))
MAC = "52:54:00:12:34:56"
REAL_RUN = nft._run  # pylint: disable=protected-access  # before tests/unit/conftest.py's fake replaces it


def policy(**option):
    return nf.policy(option, resolve=lambda name: ["10.1.2.3"])


def test_the_chain_reads_like_the_filter_top_to_bottom():
    rules = nft.chain_rules(policy(allow=[{"address": "registry.lan", "ports": [5000, "8000-8100"]}],
                                   deny=[{"address": "1.2.3.4", "protocol": "any"}],
                                   public_ports=[443, 80]), AROUND)
    assert rules == [
        "ct state established,related accept",
        "udp sport 68 udp dport 67 accept",
        "ip daddr 192.168.122.1 meta l4proto { tcp, udp } th dport 53 accept",
        "ip daddr 1.2.3.4 reject",
        "ip daddr 10.1.2.3 tcp dport { 5000, 8000-8100 } accept",
        "ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, "
        "192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 198.51.100.7, 224.0.0.0/3 } reject",
        "tcp dport { 80, 443 } accept",
        "reject",
    ]


@pytest.mark.parametrize("target, words", [
    (nf.Target(ipaddress.IPv4Network("10.0.0.0/8"), "any"), "ip daddr 10.0.0.0/8 accept"),
    (nf.Target(ipaddress.IPv4Network("10.0.0.1/32"), "udp", ((53, 53),)), "ip daddr 10.0.0.1 udp dport 53 accept"),
    (nf.Target(ipaddress.IPv4Network("10.0.0.1/32"), "tcp"), "ip daddr 10.0.0.1 meta l4proto tcp accept"),
    (nf.Target(ipaddress.IPv4Network("10.0.0.1/32"), "any", ((1, 9),)),
     "ip daddr 10.0.0.1 meta l4proto { tcp, udp } th dport 1-9 accept"),
])
def test_an_entry_in_nftables_words(target, words):
    assert nft._target(target, "accept") == words  # pylint: disable=protected-access


def test_no_public_port_leaves_only_the_last_reject():
    rules = nft.chain_rules(policy(public_ports=[]), nf.Surroundings())
    assert rules[-2].startswith("ip daddr {") and rules[-1] == "reject"
    assert not any("dport 53" in rule for rule in rules)  # no network of libvirt's: no DNS of it


def test_ids_and_tap_names_follow_the_policy():
    rules = nft.chain_rules(policy(), AROUND)
    other = nft.chain_rules(policy(public_ports=[443, 22]), AROUND)
    pid, pid2 = nft.policy_id(rules), nft.policy_id(other)
    assert len(pid) == 7 and pid != pid2 and nft.policy_id(list(rules)) == pid
    assert nft.mark(pid) & nft.POLICY_BIT and not nft.mark(pid) & (nft.NEW_LOCAL | nft.NEW_ROUTED)
    tap = nft.tap_name("vm1", MAC, pid)
    assert len(tap) == 15 and d.TAP_NAME.fullmatch(tap)  # IFNAMSIZ, and what _domain reads back
    assert tap == nft.tap_name("vm1", MAC.upper(), pid)
    assert len({tap, nft.tap_name("vm2", MAC, pid), nft.tap_name("vm1", "52:54:00:12:34:57", pid),
                nft.tap_name("vm1", MAC, pid2)}) == 4


def domain_xml(target: str | None, link: str | None = "down", meta: dict | None = None) -> str:
    spec = d.DomainSpec(name="vm1", vcpus=1, memory_mib=256, disks=[], serial_log=None,
                        interfaces=[d.Interface("network", "default", MAC, target=target, link=link)],
                        metadata=meta or {"config_hash": "x"})
    return d.build_xml(spec)


def held_xml(rules=None):
    rules = rules or nft.chain_rules(policy(), AROUND)
    pid = nft.policy_id(rules)
    meta = {"config_hash": "x", nft.META_KEY: nft.metadata(pid, rules, {MAC: "virbr0"})}
    return domain_xml(nft.tap_name("vm1", MAC, pid), meta=meta), pid, rules


def test_a_definition_tells_what_to_hold():
    xml, pid, rules = held_xml()
    holds = nft.holds(xml, vm.read_meta(xml))
    assert holds == [nft.Hold(nft.tap_name("vm1", MAC, pid), MAC, "virbr0", pid, tuple(rules))]
    nic = d.canonical(xml)["interfaces"][0]
    assert nic["target"] == holds[0].tap and nic["link"] == "down"
    assert nft.holds(domain_xml(None, link=None), {}) == []  # no tap name of ours: nothing to hold
    assert "target" not in d.canonical(domain_xml("vnet3", link=None))["interfaces"][0]  # libvirt's own name


def test_a_definition_without_its_rules_is_refused():
    xml, pid, _rules = held_xml()
    with pytest.raises(nft.NftError, match="no readable 'isolation' entry"):
        nft.holds(xml, {})
    forged = json.dumps({"engine": "nftables", "policy": pid, "rules": ["accept"], "bridges": {}})
    with pytest.raises(nft.NftError, match="does not match its policy id"):
        nft.holds(xml, {nft.META_KEY: forged})


def test_attach_and_detach_are_single_idempotent_transactions():
    xml, pid, rules = held_xml()
    holds = nft.holds(xml, vm.read_meta(xml))
    attach = nft.attach_script(holds).splitlines()
    tap = holds[0].tap
    assert f'add element bridge rum_isolation bound {{ "{tap}" . {MAC} }}' in attach
    assert f'add element bridge rum_isolation polmark {{ "{tap}" : {nft.mark(pid):#x} }}' in attach
    assert 'add element inet rum_isolation bridges { "virbr0" }' in attach
    assert f"add element inet rum_isolation policies {{ {nft.mark(pid):#x} : jump pol_{pid} }}" in attach
    chain = [line for line in attach if f" pol_{pid} " in line and line.startswith("add rule")]
    assert [line.split(f"pol_{pid} ", 1)[1] for line in chain] == rules
    # every base chain is flushed before its rules are written again: a second run adds no rule twice
    for name in ("from_guest", "across", "to_guest", "routed", "to_host", "host_out", f"pol_{pid}"):
        flush = [i for i, line in enumerate(attach) if line.startswith("flush chain") and line.endswith(f" {name}")]
        first_rule = next(i for i, line in enumerate(attach) if line.startswith("add rule") and f" {name} " in line)
        assert len(flush) == 1 and flush[0] < first_rule, name
    # a routed connection toward the guests is marked new before its sender's policy judges it, and
    # the policy is found by the mark without those bits
    routed = [line.split(" routed ", 1)[1] for line in attach if line.startswith("add rule inet rum_isolation routed")]
    assert routed == [f"oifname @bridges ct state new meta mark set meta mark | {nft.NEW_ROUTED:#x}",
                      "meta mark & 0x5fffffff vmap @policies"]
    detach = nft.detach_script(holds).splitlines()
    adds = [line for line in detach if line.startswith("add element")]
    deletes = [line for line in detach if line.startswith("delete element")]
    assert [line.replace("add", "delete", 1) for line in adds][0] == deletes[0]
    assert deletes[1] == f'delete element bridge rum_isolation polmark {{ "{tap}" }}'
    assert detach.index(adds[-1]) < detach.index(deletes[0])  # added first, so the delete always succeeds
    assert not any("bridges" in line or "policies" in line for line in adds + deletes)


class FakeNft:
    def __init__(self, rc=0, err=""):
        self.calls, self.rc, self.err = [], rc, err

    def __call__(self, argv, stdin):
        self.calls.append((argv, stdin))
        return self.rc, "", self.err


class FakeDom:
    """A domain whose NIC link the test can read: start brings the live XML (link as defined)."""

    def __init__(self, xml: str, fail_update: bool = False):
        self.inactive, self.live, self.events, self.fail_update = xml, None, [], fail_update

    def name(self):
        return "vm1"

    def XMLDesc(self, flags=0):  # noqa: N802 - libvirt's name
        return self.inactive if flags or self.live is None else self.live

    def isActive(self):  # noqa: N802
        return self.live is not None

    def updateDeviceFlags(self, nic_xml, flags):  # noqa: N802
        if self.fail_update:
            raise nft.libvirt.libvirtError("no monitor")
        self.events.append(("update", flags, "state='up'" in nic_xml or 'state="up"' in nic_xml))
        self.live = self.live.replace("<link state=\"down\" />", "<link state=\"up\" />").replace(
            "<link state='down'/>", "<link state='up'/>")

    def destroy(self):
        self.events.append(("destroy",))
        self.live = None


def started(dom):
    dom.events.append(("start",))
    dom.live = dom.inactive


def test_start_holds_then_starts_then_raises_the_link():
    xml, _pid, _rules = held_xml()
    dom, run = FakeDom(xml), FakeNft()
    assert nft.start(dom, started, vm.read_meta, run) == [nft.tap_name("vm1", MAC, _pid)]
    assert [argv for argv, _stdin in run.calls] == [["nft", "-f", "-"]]
    assert dom.events == [("start",), ("update", nft.libvirt.VIR_DOMAIN_AFFECT_LIVE, True)]
    assert nft.hold_running(dom, vm.read_meta, run) == []  # up already: nothing more
    assert len(run.calls) == 1


def test_a_refused_ruleset_starts_nothing_and_a_stuck_link_stops_the_guest():
    xml, _pid, _rules = held_xml()
    dom = FakeDom(xml)
    with pytest.raises(nft.NftError, match="nft refused the ruleset to hold vm1: Error: no such table"):
        nft.start(dom, started, vm.read_meta, FakeNft(rc=1, err="Error: no such table\n"))
    assert dom.events == []
    dom = FakeDom(xml, fail_update=True)
    with pytest.raises(nft.NftError, match="raise the link of NIC 52:54:00:12:34:56 of vm1: no monitor"):
        nft.start(dom, started, vm.read_meta, FakeNft())
    assert dom.events == [("start",), ("destroy",)]


def test_a_guest_without_taps_of_ours_just_starts():
    dom, run = FakeDom(domain_xml(None, link=None)), FakeNft()
    assert nft.start(dom, started, vm.read_meta, run) == []
    assert run.calls == [] and dom.events == [("start",)]
    assert nft.release(dom.inactive, vm.read_meta(dom.inactive), "vm1", run) == [] and run.calls == []


def test_a_guest_started_behind_our_back_is_held_before_its_link_goes_up():
    xml, _pid, _rules = held_xml()
    dom, run = FakeDom(xml), FakeNft()
    assert nft.hold_running(dom, vm.read_meta, run) == []  # shut off: nothing to do
    started(dom)  # virsh start: the link stays down
    assert nft.hold_running(dom, vm.read_meta, run) == [MAC]
    assert len(run.calls) == 1 and "add element bridge rum_isolation bound" in run.calls[0][1]


def test_missing_nft_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(nft, "NFT", "/nonexistent/nft")
    assert "apt-get install nftables" in nft.available(REAL_RUN)


def test_nft_parses_the_scripts():
    """nft's own parser (``-c``: check only) accepts both transactions as written."""
    assert shutil.which("nft"), "the nft command is missing: apt-get install nftables (make setup does)"
    xml, _pid, _rules = held_xml(nft.chain_rules(policy(allow=[{"address": "10.9.9.9", "ports": ["1-9"],
                                                               "protocol": "any"}]), AROUND))
    holds = nft.holds(xml, vm.read_meta(xml))
    for script in (nft.attach_script(holds), nft.detach_script(holds)):
        proc = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


def listing(kind: str, elems: list) -> str:
    return json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}},
                                    {kind: {"family": "bridge", "table": nft.TABLE, "elem": elems}}]})


class ListingNft(FakeNft):
    """nft with two taps held: one of a domain that still exists, one of a domain deleted by hand."""

    def __init__(self, bound, marks):
        super().__init__()
        self.bound, self.marks = bound, marks

    def __call__(self, argv, stdin):
        self.calls.append((argv, stdin))
        if argv[1:4] == ["-j", "list", "set"]:
            return 0, listing("set", [{"concat": list(pair)} for pair in self.bound]), ""
        if argv[1:4] == ["-j", "list", "map"]:
            return 0, listing("map", [list(pair) for pair in self.marks]), ""
        return 0, "", ""


def test_prune_leaves_out_the_taps_no_domain_names(monkeypatch):
    xml, _pid, _rules = held_xml()
    kept = nft.holds(xml, vm.read_meta(xml))[0].tap
    gone = "rum0123456789ab"
    run = ListingNft([(kept, MAC), (gone, "52:54:00:00:00:09")], [(kept, 0x40000001), (gone, 0x40000002)])
    monkeypatch.setattr(nft.lv, "definitions", lambda conn: iter([("vm1", [xml, xml])]))
    assert nft.stray(object(), run) == [gone]
    assert nft.prune(object(), run, check_mode=True) == [gone] and not any(argv[1] == "-f" for argv, _stdin in run.calls)
    assert nft.prune(object(), run) == [gone]
    script = [stdin for argv, stdin in run.calls if argv[1] == "-f"][-1]
    assert f'delete element bridge rum_isolation bound {{ "{gone}" . 52:54:00:00:00:09 }}' in script
    assert f'delete element bridge rum_isolation polmark {{ "{gone}" }}' in script
    assert kept not in "".join(line for line in script.splitlines() if " element " in line)  # its VM is there


def test_prune_without_the_tables_or_elements_reads_no_domain(monkeypatch):
    def no_domains(conn):
        raise AssertionError("the domains are read only when the ruleset holds taps")
    monkeypatch.setattr(nft.lv, "definitions", no_domains)
    assert nft.prune(object(), lambda argv, stdin: (1, "", "Error: No such file or directory\n")) == []
    # a host without nft holds nothing of ours (an nwfilter or unisolated pool's sweep goes on)
    assert nft.prune(object(), lambda argv, stdin: REAL_RUN(["/nonexistent/nft"] + argv[1:], stdin)) == []
    assert nft.prune(object(), ListingNft([], [])) == []
    with pytest.raises(nft.NftError, match="nft cannot list set bound of table bridge rum_isolation: Operation not permitted"):
        nft.prune(object(), lambda argv, stdin: (1, "", "Operation not permitted"))
