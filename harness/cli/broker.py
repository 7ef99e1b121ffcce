"""`hil broker`: run the stand-in IoT Hub broker with the collector attached, for bench work.

Prints the broker URL and each device's credentials, then one line per security message as it
arrives, until SIGINT or SIGTERM stops everything (broker process included). With ``--json`` the
first line of standard output is one JSON object (``url``, ``tls_url``, ``ca_path``, ``archive``,
``endpoint``, ``devices``: id -> ``username``, ``password``, ``client_id``), and every later line is
one JSON object per message.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from harness.broker import BROKER_KINDS, Broker, BrokerOptions, default_kind, open_broker
from harness.state import resolve_state_dir
from harness.telemetry.collector import Collector
from harness.telemetry.streams import Received, brief_event


def _banner(broker: Broker, archive: Path, as_json: bool) -> str:
    ep = broker.endpoint()
    devices = {d: {"client_id": c.client_id, "username": c.username, "password": c.password}
               for d, c in ep.devices.items()}
    if as_json:
        return json.dumps({"url": ep.url, "tls_url": ep.tls_url, "ca_path": ep.ca_path, "kind": ep.kind,
                           "archive": str(archive), "endpoint": str(broker.endpoint_path), "devices": devices})
    lines = [f"{ep.kind} broker at {ep.url}" + (f" and {ep.tls_url} (CA {ep.ca_path})" if ep.tls_url else ""),
             f"archive: {archive}", f"endpoint: {broker.endpoint_path}"]
    lines += [f"device {d}: client id {v['client_id']}, user name {v['username']}, password {v['password']}"
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


def run_broker(args: argparse.Namespace) -> int:
    if args.run_dir:
        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = resolve_state_dir(lab_dir=Path(args.lab) if args.lab else None).new_run_dir()
    archive = Path(args.archive) if args.archive else run_dir / "telemetry.bin"
    options = BrokerOptions(bind=args.bind, port=args.port, tls=args.tls, url=args.url,
                            ca_path=Path(args.ca) if args.ca else None)
    stop = threading.Event()
    out_lock = threading.Lock()

    def emit(text: str | None) -> None:
        if text is not None:
            with out_lock:
                print(text, flush=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker = open_broker(args.kind, run_dir, options)
        for device in args.device:
            broker.add_device(device)
        with broker:
            collector = Collector.from_endpoint(broker.endpoint(), archive, tls=args.tls)
            collector.on_received(lambda item: emit(_line(item, args.json)))
            with collector:
                emit(_banner(broker, archive, args.json))
                stop.wait()
            problems = collector.problems()
        if problems:
            print(f"hil broker: {problems}", file=sys.stderr)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("broker", help="run the stand-in IoT Hub broker and collector until interrupted")
    p.add_argument("--kind", default=None, choices=BROKER_KINDS.names(),
                   help=f"broker kind (default here: {default_kind()})")
    p.add_argument("--device", action="append", default=[], metavar="ID", help="register a device (repeatable)")
    p.add_argument("--archive", metavar="FILE", help="raw telemetry archive (default: RUN_DIR/telemetry.bin)")
    p.add_argument("--json", action="store_true", help="JSON lines: a first line with URL and credentials")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--tls", action="store_true", help="add a TLS listener with a CA made for this run")
    p.add_argument("--url", help="external kind: the lab broker, mqtt[s]://[user:password@]host:port")
    p.add_argument("--ca", metavar="FILE", help="external kind: CA certificate to trust for mqtts")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default: a new one in the lab state folder)")
    p.set_defaults(func=run_broker)
