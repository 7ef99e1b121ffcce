"""Board files (``<lab>/<board>.yaml``): the probe, console, network, identity of one board."""

from __future__ import annotations

from tests.badinput.case import DELETE, board, error, folder, lab, mode, refused, write

SURFACE = "board-file"
CHECK = "--lab lab boards --check"
FILE = r"lab/rt1060-a\.yaml.*"


def row(name: str, changes: dict[str, object], message: str) -> object:
    return refused(name, CHECK, FILE + message, lab(), board(changes))


def second(changes: dict[str, object], message: str, name: str) -> object:
    """A second board beside the good one, in ``lab/z.yaml`` (read after it)."""
    return refused(name, CHECK, r"lab/z\.yaml.*" + message, lab(), board(),
                   board({"name": "b", "identity.device_id": "dev-02", **changes}, file="lab/z.yaml"))


CASES = [
    second({}, r"probe\.id.*cmsisdap:0229000000000000.*already.*rt1060-a", "same-probe-id"),
    second({"probe.id": "CMSISDAP:0229000000000000"}, r"probe\.id.*same probe.*rt1060-a", "same-probe-id-other-case"),
    second({"probe.id": "cmsisdap:02290000"}, r"probe\.id.*rt1060-a.*substring", "probe-id-a-substring"),
    second({"name": "rt1060-a", "probe.id": "cmsisdap:99"}, r"board name 'rt1060-a' is already used", "same-name"),
    row("pack-missing", {"probe.pack": "packs/Vendor.DFP.pack"},
        r"probe\.pack.*packs/Vendor\.DFP\.pack.*does not exist"),
    refused("pack-a-folder", CHECK, FILE + r"probe\.pack.*is a folder", lab(),
            board({"probe.pack": "packs"}), folder("lab/packs")),
    error("pack-unreadable", CHECK, FILE + r"probe\.pack.*permission denied", lab(),
          board({"probe.pack": "my.pack"}), write("lab/my.pack", b"PK"), mode("lab/my.pack", 0), unprivileged=True),
    row("pack-a-device", {"probe.pack": "/dev/null"}, r"probe\.pack.*character device"),
    row("pack-nul", {"probe.pack": "a\0.pack"}, r"probe\.pack.*NUL"),
    row("probe-id-no-prefix", {"probe.id": "0229000000000000"}, r"probe\.id.*no type prefix"),
    row("probe-id-unknown-type", {"probe.id": "usb:0229"}, r"unknown probe type 'usb'"),
    row("frequency-fraction", {"probe.frequency": 1.5}, r"probe\.frequency.*whole number"),
    row("frequency-negative", {"probe.frequency": -1}, r"probe\.frequency.*greater than 0"),
    row("frequency-text", {"probe.frequency": "4MHz"}, r"probe\.frequency.*whole number.*'4MHz'"),
    row("frequency-infinite", {"probe.frequency": float("inf")}, r"probe\.frequency.*whole number"),
    row("keep-below-quoted", {"probe.keep_below": "0x0800C000"}, r"probe\.keep_below.*whole number.*without quotes"),
    row("connect-mode-unknown", {"probe.connect_mode": "sometimes"}, r"probe\.connect_mode.*'halt'"),
    row("erase-chip-with-bootloader", {"probe.erase": "chip", "probe.keep_below": 0x0800C000}, r"bootloader"),
    row("probe-a-list", {"probe": ["cmsisdap:1"]}, r"field probe: expected a mapping"),
    row("console-url-bare-name", {"console.url": "ttyUSB0"}, r"console\.url.*neither a device path"),
    row("baudrate-text", {"console.baudrate": "fast"}, r"console\.baudrate.*whole number.*'fast'"),
    row("address-not-an-address", {"network.address": "192.168.50.300"}, r"network\.address.*IPv4 address"),
    row("address-outside-network", {"network.address": "10.9.9.9"}, r"network\.address.*outside bench"),
    row("address-unused-with-console", {"network.address_from": "console",
                                        "network.console_pattern": "IP (?P<address>\\S+)"},
        r"network.*address.*only.*static"),
    row("console-pattern-unused-with-static", {"network.console_pattern": "IP (?P<address>\\S+)"},
        r"network.*console_pattern.*only.*console"),
    row("test-network-unknown", {"network.test_network": "nowhere"}, r"'nowhere' is not a network"),
    row("tcp-echo-port-zero", {"capabilities.services.tcp_echo": 0}, r"tcp_echo.*at least 1"),
    row("tcp-echo-port-99999", {"capabilities.services.tcp_echo": 99999}, r"tcp_echo.*at most 65535"),
    row("icmp-not-a-flag", {"capabilities.icmp": "sometimes"}, r"capabilities\.icmp.*true or false"),
    row("device-id-with-space", {"identity.device_id": "dev 01"}, r"identity\.device_id"),
    row("device-id-200-chars", {"identity.device_id": "d" * 200}, r"identity\.device_id"),
    row("credentials-path-unused", {"identity.credentials": {"source": "generated", "path": "c.json"}},
        r"credentials.*path.*only.*file"),
    row("credentials-variable-unused", {"identity.credentials": {"source": "file", "path": "c.json",
                                                                 "variable": "X"}},
        r"credentials.*variable.*only.*env"),
    row("power-commands-unused", {"power": {"kind": "none", "on_command": ["on"], "off_command": ["off"]}},
        r"power.*on_command.*only.*command"),
    row("power-command-a-string", {"power": {"kind": "command", "on_command": "uhubctl on",
                                             "off_command": ["off"]}}, r"power\.on_command.*expected a list"),
    row("kind-unknown", {"kind": "jtag"}, r"unknown board kind 'jtag'"),
    row("qemu-section-on-real-board", {"qemu": {"machine": "mps2-an385"}}, r"section 'qemu:'"),
    row("name-path-like", {"name": "../etc"}, r"field name"),
    row("name-missing", {"name": DELETE}, r"field name: required"),
    row("reset-method-unknown", {"reset.method": "magic"}, r"reset\.method.*'system'"),
    row("misspelt-key", {"console.baudrat": 9600}, r"console\.baudrat.*did you mean 'baudrate'"),
    refused("qemu-machine-unknown", CHECK, r"lab/q\.yaml.*qemu\.machine.*'mps2-an385'", lab(),
            write("lab/q.yaml", {"name": "q", "kind": "qemu", "qemu": {"machine": "mps2-an500"},
                                 "probe": {"id": "emu:q", "target": "mps2_an385"},
                                 "network": {"address_from": "lease", "test_network": "emulated"},
                                 "identity": {"device_id": "q-01"}})),
]
