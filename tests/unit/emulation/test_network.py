"""Network attachments: MACs from identities, QEMU netdev options, records."""

from __future__ import annotations

import ipaddress
import re

import pytest

from harness.emulation.network import USER_SERVICES, NoNetwork, UserAttachment, mac_for
from harness.emulation.tap_network import TapAttachment
from harness.errors import UsageError


def test_mac_is_stable_unicast_locally_administered_and_distinct() -> None:
    mac = mac_for("qemu-an385")
    assert mac == mac_for("qemu-an385")
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert len({mac_for(f"board-{i}") for i in range(500)}) == 500


def test_user_attachment_is_restricted_and_forwards_tcp_and_services() -> None:
    att = UserAttachment.create("b1", forward_ports={"tcp": [80]}, guest_services={1883: 41883})
    netdev = att.netdev("n0")
    assert netdev.startswith("user,id=n0,restrict=on,")
    port = att.host_port("tcp", 80)
    assert f"hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:80" in netdev
    assert f"guestfwd=tcp:{USER_SERVICES}:1883-cmd:" in netdev
    assert netdev.endswith("-m harness.emulation.tcp_pipe 127.0.0.1 41883")
    record = att.record()
    assert record["mode"] == "user" and record["address"] == "10.0.2.15"
    assert record["forwards"] == [{"proto": "tcp", "guest_port": 80, "host": "127.0.0.1", "host_port": port}]
    assert att.command_prefix() == []


def test_user_mode_refuses_udp_forwards_and_unknown_ports() -> None:
    with pytest.raises(UsageError, match="udp") as info:
        UserAttachment.create("b1", forward_ports={"udp": [7]})
    assert info.value.fix and "tap" in info.value.fix
    with pytest.raises(UsageError, match="not forwarded"):
        UserAttachment.create("b1").host_port("tcp", 22)


def test_tap_attachment_runs_qemu_in_the_board_namespace() -> None:
    att = TapAttachment(board="b1", namespace="hil-abc123-1", mac=mac_for("b1"),
                        address=ipaddress.IPv4Address("10.231.1.101"),
                        harness_address=ipaddress.IPv4Address("10.231.1.1"),
                        services_address=ipaddress.IPv4Address("10.231.1.2"))
    assert att.command_prefix() == ["ip", "netns", "exec", "hil-abc123-1"]
    assert att.netdev("n0") == "tap,id=n0,ifname=tap0,script=no,downscript=no"
    assert att.record() == {"mode": "tap", "address": "10.231.1.101", "mac": mac_for("b1"),
                            "namespace": "hil-abc123-1", "harness_address": "10.231.1.1",
                            "dns": "10.231.1.2", "ntp": "10.231.1.2", "hostname": "b1.hil.test"}


def test_no_network_records_no_address() -> None:
    assert NoNetwork(mac_for("x")).record()["address"] is None
