"""The real node's pure parts: when it may run, and the configuration it writes."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from tests.testbed import node
from tests.testbed.procs import TestbedError

pytestmark = pytest.mark.unit


def test_a_machine_that_cannot_run_containers_is_told_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.delenv("KUBESWARM_REQUIRE_REAL_NODE", raising=False)
    reason = node.unavailable_reason()
    assert reason is not None and "root" in reason
    monkeypatch.setenv("KUBESWARM_REQUIRE_REAL_NODE", "1")
    with pytest.raises(TestbedError, match="KUBESWARM_REQUIRE_REAL_NODE is set"):
        node.unavailable_reason()


def test_containerd_configuration_is_valid_toml() -> None:
    config = {"version": 3, "plugins": {"io.containerd.cri.v1.runtime": {"cni": {"bin_dirs": ["/a b"], "max_conf_num": 1}, "flag": True}}}
    assert tomllib.loads(node.toml_dump(config)) == config


def test_pod_addresses_stay_on_the_bridge_network() -> None:
    network = ipaddress.ip_network(node.POD_CIDR)
    bridge = node.cni_config()["plugins"][0]  # type: ignore[index]
    assert bridge["ipMasq"] is False and bridge["bridge"] == node.BRIDGE
    ranges = bridge["ipam"]["ranges"][0][0]
    assert ipaddress.ip_address(ranges["gateway"]) == ipaddress.ip_address(node.NODE_IP) and ranges["subnet"] == node.POD_CIDR
    assert ipaddress.ip_address(ranges["rangeStart"]) in network
    # podman's and buildah's default bridge network, present on machines that build images
    assert not network.overlaps(ipaddress.ip_network("10.88.0.0/16"))


def test_image_refs_are_found_by_name() -> None:
    archives = {"docker.io/kubeswarm/runtime:0.1.0": Path("r"), "registry.k8s.io/pause:3.10.2": Path("p")}
    assert node.image_ref(archives, "pause") == "registry.k8s.io/pause:3.10.2"
    assert node.image_ref(archives, "runtime") == "docker.io/kubeswarm/runtime:0.1.0"
