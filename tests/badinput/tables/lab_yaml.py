"""lab.yaml: what the boards share (test networks, broker, time server, state folder)."""

from __future__ import annotations

from tests.badinput.case import board, error, lab, refused, write

SURFACE = "lab.yaml"
CHECK = "--lab lab boards --check"
NET = "networks"


def net(**fields: object) -> dict[str, object]:
    return {NET: [{"name": "bench", "subnet": "192.168.50.0/24", "interface": "eth9", **fields}]}


def row(name: str, changes: dict[str, object], message: str) -> object:
    return refused(name, CHECK, r"lab/lab\.yaml.*" + message, lab(changes), board())


CASES = [
    row("shared-address-space-100.64/10", net(subnet="100.64.0.0/10"), r"100\.64\.0\.0/10.*not a private"),
    row("public-network", net(subnet="8.8.8.0/24"), r"8\.8\.8\.0/24.*not a private"),
    row("whole-internet", net(subnet="0.0.0.0/0"), r"0\.0\.0\.0/0.*not a private"),
    row("loopback-as-test-network", net(subnet="127.0.0.0/8"), r"127\.0\.0\.0/8.*not a private"),
    row("link-local-as-test-network", net(subnet="169.254.0.0/16"), r"169\.254\.0\.0/16.*not a private"),
    row("documentation-ipv6", net(subnet="2001:db8::/32"), r"2001:db8::/32.*not a private"),
    row("subnet-with-host-bits", net(subnet="10.1.2.3/16"), r"networks\[0\]\.subnet.*host bits.*10\.1\.0\.0/16"),
    row("subnet-not-a-network", net(subnet="banana"), r"networks\[0\]\.subnet.*network like"),
    row("subnet-a-number", net(subnet=42), r"networks\[0\]\.subnet.*network like"),
    row("networks-a-mapping", {NET: {"bench": {"subnet": "192.168.50.0/24"}}}, r"field networks: expected a list"),
    row("network-name-with-space", net(name="bench eth"), r"networks\[0\]\.name"),
    row("network-without-reach", net(interface=None), r"exactly one of 'interface' or 'bridge'"),
    row("network-unknown-key", net(subnet_mask="255.255.255.0"), r"networks\[0\]\.subnet_mask: unknown key"),
    row("broker-kind-misspelt", {"broker": {"kind": "mosquito"}}, r"broker\.kind.*'mosquito'.*mosquitto"),
    row("broker-url-not-external", {"broker": {"kind": "mosquitto", "url": "mqtt://127.0.0.1:1883"}},
        r"broker.*url.*only.*external"),
    row("broker-bind-public", {"broker": {"bind": "8.8.8.8"}}, r"broker\.bind.*8\.8\.8\.8.*loopback or .*bench"),
    row("broker-bind-not-an-address", {"broker": {"bind": "eth0"}}, r"broker\.bind.*IPv4 address"),
    row("broker-tls-not-a-flag", {"broker": {"tls": "yes please"}}, r"broker\.tls.*true or false"),
    row("broker-hub-not-a-host", {"broker": {"hub": "my hub!"}}, r"broker\.hub.*host name"),
    row("broker-a-list", {"broker": ["mosquitto"]}, r"field broker: expected a mapping"),
    row("time-server-host-unused", {"time_server": {"kind": "chrony", "host": "time.example"}},
        r"time_server.*host.*only.*external"),
    row("time-server-kind-unknown", {"time_server": {"kind": "ntp"}}, r"time_server\.kind.*'chrony'"),
    row("name-a-list", {"name": ["a"]}, r"field name: expected text"),
    row("unknown-key", {"boards": ["a.yaml"]}, r"field boards: unknown key"),
    row("state-dir-nul", {"state_dir": "st\0ate"}, r"state_dir.*NUL"),
    error("state-dir-is-a-file", CHECK, r"lab/lab\.yaml.*state_dir.*statefile.*is a file, not a folder",
          lab({"state_dir": "statefile"}), board(), write("lab/statefile", "x")),
    error("state-dir-under-a-file", CHECK, r"lab/lab\.yaml.*state_dir.*statefile.*not a folder",
          lab({"state_dir": "statefile/sub"}), board(), write("lab/statefile", "x")),
    refused("lab-yml-beside-lab-yaml", CHECK, r"lab\.yml.*lab\.yaml", lab(), board(),
            write("lab/lab.yml", "name: x\n")),
    refused("lab-yml-alone", CHECK, r"lab/lab\.yml.*rename it lab\.yaml", board(), write("lab/lab.yml", "name: x\n")),
    row("networks-null-entry", {NET: [None]}, r"networks\[0\].*expected a mapping"),
    row("broker-kind-external-without-url", {"broker.kind": "external"}, r"needs 'url"),
]
