"""`hil broker`: run the stand-in IoT Hub broker with the collector attached, for bench work.

The broker is the lab's (``lab.yaml`` ``broker:``: kind, hub, bind address, TLS, URL for the
external kind; options override each), its run folder is a new one in the lab's state folder, and
every board of the lab is registered as a device (its ``identity.device_id``, with the secret its
``identity.credentials`` name, else one made for the run) unless ``--no-lab-devices``; ``--device``
adds more. Without a lab folder (no ``--lab``, no ``$HIL_LAB`` and no ``./boards``) the defaults
apply.

Prints the broker URL and each device's credentials, then one line per security message as it
arrives, until SIGINT or SIGTERM stops everything (broker process included). With ``--json`` the
first line of standard output is one JSON object (``url``, ``tls_url``, ``ca_path``, ``archive``,
``endpoint``, ``lab``, ``hub``, ``devices``: id -> ``username``, ``password``, ``client_id``), and
every later line is one JSON object per message.

Exit 0 when stopped with everything intact; 3 when the collector lost its session or stopped
receiving (said at once on standard error, and again at the end: what it printed may be incomplete),
or when the broker was found dead at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import errno
import ipaddress
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.broker import BROKER_KINDS, Broker, BrokerOptions, default_kind, open_broker
from harness.broker.credentials import DEFAULT_HUB, DEFAULT_ID_SCOPE, validate_hub
from harness.broker.ports import IOT_HUB_TLS_PORT
from harness.cli import output_folder
from harness.cli._signals import StopSignals
from harness.errors import ConfigError, InfrastructureError, UsageError
from harness.hub.ca import lab_ca
from harness.hub.service import IotHubStandIn
from harness.lab import Lab, device_secret, load_lab
from harness.state import ENV_LAB, default_lab_dir, resolve_state_dir
from harness.telemetry.collector import Collector
from harness.telemetry.streams import Received, brief_event
from harness.userfiles import read_user_file


def _banner(broker: Broker, archive: Path, lab: Lab | None, as_json: bool) -> str:
    ep = broker.endpoint()
    devices = {d: {"client_id": c.client_id, "username": c.username, "password": c.password}
               for d, c in ep.devices.items()}
    where = str(lab.root.resolve()) if lab is not None else None
    if as_json:
        return json.dumps({"url": ep.url, "tls_url": ep.tls_url, "ca_path": ep.ca_path, "kind": ep.kind,
                           "archive": str(archive), "endpoint": str(broker.endpoint_path), "lab": where,
                           "hub": ep.hub, "devices": devices})
    lines = [f"{ep.kind} broker at {ep.url}" + (f" and {ep.tls_url} (CA {ep.ca_path})" if ep.tls_url else ""),
             f"archive: {archive}", f"endpoint: {broker.endpoint_path}",
             f"lab: {where or 'none (defaults)'}; hub {ep.hub}"]
    lines += [f"device {d}: client id {v['client_id']}, user name {v['username']}, "
              f"password {v['password'] or '(none: it signs in with its X.509 certificate)'}"
              for d, v in devices.items()]
    lines.append("waiting for telemetry; Ctrl-C stops")
    return "\n".join(lines)


def _line(item: Received, as_json: bool) -> str | None:
    if not item.security:
        return None
    if as_json:
        row: dict[str, object] = {"device": item.device_id, "module": item.module_id, "received": item.received,
                                  "record": item.record, "duplicate_events": item.duplicate_events}
        if item.message is not None:
            row["message"] = item.message.to_json()
        else:
            row["error"] = str(item.error)
        return json.dumps(row)
    if item.message is None:
        return item.brief()
    stamp = _dt.datetime.fromtimestamp(item.received, _dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    text = "; ".join(brief_event(e) for e in item.message.events) or "no events"
    dup = f" [{item.duplicate_events} duplicate]" if item.duplicate_events else ""
    return f"{stamp} {item.device_id} {text}{dup}"


# -- settings -------------------------------------------------------------------------------------

@dataclass
class Settings:
    """What `hil broker` runs: the lab's broker settings with the command line's overrides."""

    kind: str
    options: BrokerOptions
    lab: Lab | None


def _lab(args: argparse.Namespace) -> Lab | None:
    """The lab, or None when none was named and ./boards does not exist."""
    if args.lab is None and not os.environ.get(ENV_LAB) and not default_lab_dir().exists():
        return None
    return load_lab(args.lab)


def check_bind(address: str, where: str = "--bind") -> str:
    """An address of this host to listen on, or a UsageError that says so (never a traceback)."""
    fix = "give one of this host's addresses, e.g. 127.0.0.1 (`ip -brief address` lists them)"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"{where} {address!r} is not an IP address", fix=fix) from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError as exc:
        why = "is not an address of this host" if exc.errno == errno.EADDRNOTAVAIL else f"cannot be bound ({exc})"
        raise UsageError(f"{where} {address}: {why}", fix=fix) from None
    return address


def settings(args: argparse.Namespace) -> Settings:
    lab = _lab(args)
    lab_broker = lab.settings.broker if lab is not None else None
    where = f"{lab.root / 'lab.yaml'}: field broker.kind" if lab is not None else "--kind"
    kind = args.kind or (lab_broker.kind if lab_broker is not None else default_kind())
    if kind not in BROKER_KINDS.names():
        raise ConfigError(f"{where}: unknown broker kind {kind!r}",
                          fix=f"use one of: {', '.join(BROKER_KINDS.names())}")
    lab_file = f"{lab.root / 'lab.yaml'}: field broker" if lab is not None else ""
    lab_bind = not args.bind and lab_broker is not None and lab_broker.bind is not None
    if args.bind:
        bind = check_bind(args.bind)
    elif lab_broker is not None and lab_broker.bind is not None:
        bind = str(lab_broker.bind) if kind == "external" else check_bind(str(lab_broker.bind), f"{lab_file}.bind")
    else:
        bind = "127.0.0.1"
    hub = args.hub or (lab_broker.hub if lab_broker is not None else DEFAULT_HUB)
    try:
        validate_hub(hub)
    except UsageError as exc:
        raise ConfigError(f"{'--hub' if args.hub else lab_file + '.hub'}: {exc.message}", fix=exc.fix) from None
    tls = args.tls or bool(lab_broker and lab_broker.tls)
    options = BrokerOptions(
        bind=bind, port=args.port, tls=tls, hub=hub,
        id_scope=lab_broker.id_scope if lab_broker is not None else DEFAULT_ID_SCOPE,
        url=args.url or (lab_broker.url if lab_broker is not None else None),
        ca_path=Path(args.ca) if args.ca else None,
        tls_files=lab_ca(lab).files if tls and lab is not None and kind != "external" else None,
        # the lab's boards reach it at broker.bind: stock images there connect to 8883 only
        tls_ports={bind: IOT_HUB_TLS_PORT} if tls and lab_bind and kind != "external" else {})
    return Settings(kind, options, lab)


def _ca_file(text: str) -> str:
    """An argument type: a CA file that exists and can be read (as PEM text, at most 1 MiB)."""
    try:
        read_user_file(text, what="CA certificate", limit=1 << 20, error=UsageError)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _run_dir(args: argparse.Namespace, lab: Lab | None) -> Path:
    if not args.run_dir:
        state = lab.state if lab is not None else resolve_state_dir()
        try:
            return state.new_run_dir()
        except OSError as exc:
            raise ConfigError(f"state folder {state.root}: cannot make a run folder in it ({exc.strerror})",
                              fix="set the lab's state_dir (or $HIL_STATE) to a folder you may write to, "
                                  "or give --run-dir") from None
    run_dir = Path(args.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--run-dir {run_dir}: exists and is not a folder",
                         fix="give a folder (it is made if missing)") from None
    except OSError as exc:
        raise UsageError(f"--run-dir {run_dir}: cannot make it ({exc.strerror})",
                         fix="give a folder you may write to") from None
    return run_dir


# -- running --------------------------------------------------------------------------------------

def run_broker(args: argparse.Namespace) -> int:
    chosen = settings(args)
    run_dir = _run_dir(args, chosen.lab)
    archive = Path(args.archive) if args.archive else run_dir / "telemetry.bin"
    out_lock = threading.Lock()

    def emit(text: str | None) -> None:
        if text is not None:
            with out_lock:
                print(text, flush=True)

    with StopSignals() as stop:  # from the start: a stop sent while the broker starts is kept
        return _serve(args, chosen, run_dir, archive, emit, stop)


def _serve(args: argparse.Namespace, chosen: Settings, run_dir: Path, archive: Path,
           emit: Callable[[str | None], None], stop: StopSignals) -> int:
    broker = open_broker(chosen.kind, run_dir, chosen.options)
    if chosen.lab is not None and not args.no_lab_devices:
        for device in chosen.lab.settings.devices:  # the registry: SAS tokens from their keys, or certificates
            broker.add_device(device.id, key=device.key, thumbprint=device.thumbprint,
                              registration_id=device.dps_registration_id)
        for board in chosen.lab.boards.values():
            if chosen.lab.registered(board.identity.device_id) is None:
                broker.add_device(board.identity.device_id, password=device_secret(board))
    for device in args.device:
        broker.add_device(device)
    with broker, (IotHubStandIn(broker) if broker.kind != "external" else contextlib.nullcontext()):
        collector = Collector.from_endpoint(broker.endpoint(), archive, tls=chosen.options.tls)
        collector.on_received(lambda item: emit(_line(item, args.json)))
        with collector:
            emit(_banner(broker, archive, chosen.lab, args.json))
            stop.wait()
            health = broker.health()  # before stopping it: did it stay up?
    problems = collector.problems()
    if problems:
        print(f"hil broker: {problems}", file=sys.stderr)
    collector.require_intact()  # exit 3: what was shown may be incomplete
    if not health.ok:
        raise InfrastructureError(f"the {broker.kind} broker failed during the run: {health.detail}",
                                  evidence=broker.log_path)
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535; 0 picks a free one)")
    return port


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("broker", help="run the stand-in IoT Hub broker and collector until interrupted")
    p.add_argument("--kind", default=None, choices=BROKER_KINDS.names(),
                   help=f"broker kind (default: the lab's, else {default_kind()} here)")
    p.add_argument("--device", action="append", default=[], metavar="ID", help="register a device (repeatable)")
    p.add_argument("--no-lab-devices", action="store_true", help="do not register the lab's boards as devices")
    p.add_argument("--archive", metavar="FILE", help="raw telemetry archive (default: RUN_DIR/telemetry.bin)")
    p.add_argument("--json", action="store_true", help="JSON lines: a first line with URL and credentials")
    p.add_argument("--bind", default=None, metavar="ADDR",
                   help="address to listen on (default: the lab's broker.bind, else 127.0.0.1)")
    p.add_argument("--port", type=_port, default=0, help="port (default: a free one)")
    p.add_argument("--hub", default=None, metavar="HOST", help="IoT Hub host name in device user names "
                   "(default: the lab's broker.hub)")
    p.add_argument("--tls", action="store_true", help="add a TLS listener with a CA made for this run "
                   "(also when the lab's broker.tls is true)")
    p.add_argument("--url", help="external kind: the lab broker, mqtt[s]://[user:password@]host:port "
                   "(default: the lab's broker.url)")
    p.add_argument("--ca", metavar="FILE", type=_ca_file, help="external kind: CA certificate to trust for mqtts")
    p.add_argument("--run-dir", metavar="DIR", type=output_folder("run folder"),
                   help="run folder (default: a new one in the lab's state folder)")
    p.set_defaults(func=run_broker)
