# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""runner_pool_isolation: on by default, merged over its default, the GitHub server allowed, and
off with {enabled: false}; what the libvirt backend hands to rum_vm as network_filter."""

from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.rum.pool.plugins.module_utils import _pool_settings as settings
from ansible_collections.rum.pool.plugins.module_utils._slot import SlotError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
REQUIRED = {"name": "ci", "github": {"repository": "acme/w", "token": "ghp_x"},
            "image": {"url": "https://images.example.com/r.qcow2", "checksum": "sha256:00"}}


def isolation(api_url=None, **values):
    given = dict(REQUIRED, isolation=values) if values else dict(REQUIRED)
    if api_url:
        given["github"] = dict(REQUIRED["github"], api_url=api_url)
    return settings.pool_settings(given, "hv1")["isolation"]


def test_on_by_default_with_https_out():
    assert isolation() == {"enabled": True, "engine": "nftables", "allow": [], "deny": [], "public_ports": [443]}


@pytest.mark.parametrize("api_url, entry", [
    ("http://192.168.122.1:8765", {"address": "192.168.122.1", "ports": [8765], "protocol": "tcp"}),
    ("https://ghes.corp.example/api/v3", {"address": "ghes.corp.example", "ports": [443], "protocol": "tcp"}),
    ("http://10.1.2.3/api/v3", {"address": "10.1.2.3", "ports": [80], "protocol": "tcp"}),
])
def test_the_github_server_is_allowed(api_url, entry):
    assert isolation(api_url)["allow"] == [entry]
    mine = {"address": "10.9.9.9", "ports": [5000]}
    assert isolation(api_url, allow=[mine])["allow"] == [mine, entry]


def test_github_com_and_github_false_add_nothing():
    assert isolation("https://api.github.com")["allow"] == []
    assert isolation("http://192.168.122.1:8765", github=False)["allow"] == []


def test_turned_off_keeps_the_rest_but_opens_no_hole():
    off = isolation("http://192.168.122.1:8765", enabled=False)
    assert off == {"enabled": False, "engine": "nftables", "allow": [], "deny": [], "public_ports": [443]}
    assert isolation(enabled="no")["enabled"] is False


@pytest.mark.parametrize("values, message", [
    ({"enable": False}, "runner_pool_isolation: unknown key enable (known: allow, deny, enabled, engine, github, public_ports)"),
    ({"enabled": "maybe"}, "runner_pool_isolation.enabled must be true or false, got 'maybe'"),
    ({"allow": {"address": "10.0.0.1"}}, "runner_pool_isolation.allow must be a list"),
    ({"public_ports": "443"}, "runner_pool_isolation.public_ports must be a list"),
    ({"engine": "iptables"}, "runner_pool_isolation.engine 'iptables' is not one of auto, nwfilter, nftables"),
])
def test_bad_values_are_named(values, message):
    with pytest.raises(SlotError) as err:
        settings.pool_settings(dict(REQUIRED, isolation=values), "hv1")
    assert message in str(err.value)


@pytest.mark.parametrize("interfaces, engine", [
    (None, "nftables"), ([{"network": "default"}, {"network": "ci"}], "nftables"),
    ([{"network": "default"}, {"bridge": "br0"}], "nwfilter"),
])
def test_auto_takes_nftables_unless_a_nic_is_on_a_host_bridge(interfaces, engine):
    vm = {"interfaces": interfaces} if interfaces else {}
    assert settings.pool_settings(dict(REQUIRED, vm=vm), "hv1")["isolation"]["engine"] == engine
    chosen = settings.pool_settings(dict(REQUIRED, vm=vm, isolation={"engine": "nwfilter"}), "hv1")
    assert chosen["isolation"]["engine"] == "nwfilter"


def test_a_bad_api_url_port_is_named():
    with pytest.raises(SlotError, match="runner_pool_github.api_url 'http://x:99999' has a bad port"):
        isolation("http://x:99999")


def test_the_libvirt_backend_hands_it_to_rum_vm():
    with open(os.path.join(ROOT, "roles", "runner_slot", "tasks", "backends", "libvirt", "boot.yml"),
              encoding="utf-8") as fh:
        task = yaml.safe_load(fh)[0]["rum.pool.rum_vm"]
    assert task["network_filter"] == "{{ runner_slot_pool.isolation }}"
    assert task["seed_eject"] is True
