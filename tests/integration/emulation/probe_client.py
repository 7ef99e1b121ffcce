"""A board stand-in run inside a board's namespace (``ip netns exec NS python probe_client.py``).

Takes a DHCP lease for ``--mac`` on ``--iface`` (scapy: DISCOVER, OFFER, REQUEST, ACK), puts the
address on the interface, then asks the offered DNS server for ``broker.hil.test`` and
``time.hil.test`` and the offered NTP server for the time. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
import subprocess
from typing import Any

from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, srp1  # type: ignore[attr-defined]

from harness.emulation.services import dns_query, sntp_query


def _options(packet: Any) -> dict[str, Any]:
    return {opt[0]: opt[1] for opt in packet[DHCP].options if isinstance(opt, tuple)}


def dhcp(iface: str, mac: str, timeout: float) -> tuple[str, dict[str, Any]]:
    conf.checkIPaddr = False  # replies come from the server's address, not the broadcast one
    xid = secrets.randbits(32)
    chaddr = bytes.fromhex(mac.replace(":", ""))
    base = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67) / BOOTP(chaddr=chaddr, xid=xid, flags=0x8000))
    offer = srp1(base / DHCP(options=[("message-type", "discover"), "end"]), iface=iface,
                 timeout=timeout, verbose=False)
    if offer is None:
        raise SystemExit("no DHCP OFFER")
    opts = _options(offer)
    request = base / DHCP(options=[("message-type", "request"), ("requested_addr", offer[BOOTP].yiaddr),
                                   ("server_id", opts["server_id"]), "end"])
    ack = srp1(request, iface=iface, timeout=timeout, verbose=False)
    if ack is None or _options(ack).get("message-type") != 5:
        raise SystemExit(f"no DHCP ACK: {ack!r}")
    return str(ack[BOOTP].yiaddr), _options(ack)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", default="br0")
    parser.add_argument("--mac", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    address, opts = dhcp(args.iface, args.mac, args.timeout)
    mask = opts.get("subnet_mask", "255.255.255.0")
    prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    subprocess.run(["ip", "addr", "add", f"{address}/{prefix}", "dev", args.iface], check=True)
    dns = ipaddress.IPv4Address(opts["name_server"])
    ntp = ipaddress.IPv4Address(opts["NTP_server"])
    answer = sntp_query(ntp, timeout=args.timeout)
    print(json.dumps({
        "address": address,
        "router": opts.get("router"),
        "dns_server": str(dns),
        "ntp_server": str(ntp),
        "domain": opts.get("domain", b"").decode() if isinstance(opts.get("domain"), bytes) else None,
        "broker": str(dns_query("broker.hil.test", dns, timeout=args.timeout)),
        "time_host": str(dns_query("time.hil.test", dns, timeout=args.timeout)),
        "ntp_stratum": answer.stratum,
        "ntp_time": answer.time.isoformat(),
    }))


if __name__ == "__main__":
    main()
