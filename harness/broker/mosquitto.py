"""The ``mosquitto`` broker kind: a mosquitto 2.0 process owned by the harness.

Everything lives in ``<run dir>/mosquitto/``: ``mosquitto.conf``, ``identities`` (the identity
table, read by the harness's own authentication plugin, see below), the persistence database,
``mosquitto.log`` (its standard error, copied line by line by a reader thread that also lets us
wait on log lines without polling) and, with TLS, the run's CA and server certificate. Queues are
unlimited (``max_queued_messages 0``, ``max_inflight_messages 0``): the defaults drop messages in a
burst. ``max_packet_size`` refuses (by closing the connection, before any PUBACK) a packet whose
message the archive could not hold (:data:`harness.broker.base.MAX_PACKET`).

Identities are enforced by ``mosquitto_auth.c``, a plugin built on first use
(:mod:`harness.broker.plugin_build`): the same rules as the embedded kind, from the same
:class:`~harness.broker.credentials.IdentityTable`. A client id is bound to its identity (a login
under another client id is refused before mosquitto looks for that client's session), device user
names are parsed (any api-version and query parameters), and the plugin reads ``identities`` again
at every CONNECT, so an identity added is in force when ``add_device`` returns: no SIGHUP, no reload
to race with. (mosquitto's own password and ACL files compare user names as strings and do not
bind client ids; its dynamic-security plugin binds client ids on 2.0.11 but compares user names as
strings too, and cannot grow the SAS-token sign-in a later issue needs.)

With TLS, mosquitto runs with ``mosquitto_tls_client_cert.c`` preloaded (``LD_PRELOAD``): its TLS
listeners then ask every client for a certificate and take any, as IoT Hub's port 8883 does, and
the plugin matches X.509 devices' certificates by thumbprint (mosquitto 2.0 by itself either
requires a certificate chaining to its CA from every client, or asks none). This was chosen over a
TLS front (a process terminating TLS and handing plain MQTT to mosquitto): no extra hop, so a
broker outage (stopped, killed, frozen) looks to a device exactly as before, the link capture sees
one connection, and the outage clauses need nothing new; the cost is a small C library that
replaces one OpenSSL call in mosquitto's process, checked at every start (mosquitto does not start
without its announcement line, so X.509 sign-in never fails silently).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.broker.base import (
    BROKER_KINDS,
    MAX_PACKET,
    BrokerOptions,
    Connect,
    LocalBroker,
    all_binds,
    free_port,
    port_accepts,
)
from harness.broker.identity_file import write_identities
from harness.broker.plugin_build import plugin_path, tls_shim_path
from harness.broker.tls import make_run_pki
from harness.errors import InfrastructureError, UsageError

log = logging.getLogger(__name__)
_CONNECTED = re.compile(r"^(?P<time>\S+): New client connected from (?P<address>\S+) as (?P<id>\S+) "
                        r"\(p\d+, c(?P<clean>[01]), k(?P<keepalive>\d+)(?:, u'(?P<user>[^']*)')?\)", re.M)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_RUNNING = re.compile(r"mosquitto version \S+ running")
_CLIENT_CERTS_ASKED = re.compile(r"^hil-tls-client-cert: TLS clients are asked for a certificate")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM mosquitto if the harness dies without stopping it (e.g. SIGKILL).

    The signal follows the *thread* that started the process, so start brokers from a thread that
    outlives them (the main thread, a fixture)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _LogPump:
    """Copies the process's output to the log file; waiters block on a Condition, not a sleep."""

    def __init__(self, proc: subprocess.Popen[bytes], path: Path) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._proc = proc
        self._file = path.open("a", buffering=1)
        self._thread = threading.Thread(target=self._run, name=f"mosquitto-log-{proc.pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._proc.stdout is not None
        try:
            for raw in self._proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self._file.write(line + "\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            self._file.close()
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: re.Pattern[str], since: int, timeout: float) -> str | None:
        """The first line from index ``since`` matching ``pattern``; None at EOF or deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[since:]:
                    if pattern.search(line):
                        return line
                since = len(self.lines)
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self._cond.wait(left)

    def tail(self, n: int = 15) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


@BROKER_KINDS.register("mosquitto")
class MosquittoBroker(LocalBroker):
    kind = "mosquitto"
    binary = "mosquitto"

    def __init__(self, run_dir: Path, options: BrokerOptions) -> None:
        super().__init__(run_dir, options)
        self.folder = run_dir / "mosquitto"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: _LogPump | None = None
        self._plugin: Path | None = None
        self._tls_shim: Path | None = None

    # -- paths and urls ------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- files ---------------------------------------------------------------------------------
    def _render_config(self) -> Path:
        f = self.folder
        lines = [
            "# written by the harness for one run",
            "per_listener_settings false",
            "allow_anonymous false",
            f"plugin {self._plugin}",
            f"plugin_opt_identities {self.identities_path}",
            "auth_plugin_deny_special_chars false",  # the plugin substitutes nothing into its filters
            f"max_packet_size {MAX_PACKET}",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence true",
            f"persistence_location {f}/",
            "persistence_file mosquitto.db",
            "autosave_interval 0",
            "autosave_on_changes false",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            "log_dest stderr",
            *(f"log_type {t}" for t in ("error", "warning", "notice", "information", "subscribe")),
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            *(f"listener {self._port} {address}" for address in all_binds(self.options)),
        ]
        if self._tls is not None:
            for address in all_binds(self.options):  # a listener's TLS settings follow its line
                lines += [
                    f"listener {self.tls_port_at(address)} {address}",
                    f"cafile {self._tls.ca_cert}",
                    f"certfile {self._tls.server_cert}",
                    f"keyfile {self._tls.server_key}",
                    "tls_version tlsv1.2",
                    "require_certificate false",
                ]
        conf = f / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    @property
    def identities_path(self) -> Path:
        return self.folder / "identities"

    # -- process -------------------------------------------------------------------------------
    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._plugin = plugin_path()
        if self.options.tls:
            self._tls_shim = tls_shim_path()
        if self.options.tls and self._tls is None:
            self._tls = self.options.tls_files or make_run_pki(
                self.folder / "tls", [*all_binds(self.options), "localhost", self.options.hub])
        write_identities(self.identities_path, self.identities)
        self.check_fixed_ports()
        auto = not self.options.port
        for attempt in range(3):
            if auto and (attempt or not self._port):
                self._port = free_port(self.options.bind)
            if self.options.tls and (not self._tls_port or (attempt and not self.options.tls_port)):
                self._tls_port = free_port(self.options.bind)
            why = self._spawn()
            if why is None:
                return
            if not (auto and "in use" in why):
                break
            log.info("mosquitto lost the port race (%s); trying another port", why)
        raise InfrastructureError(
            f"mosquitto did not start on {self.options.bind}:{self._port}",
            expected=f"a log line matching {_RUNNING.pattern!r} within {START_TIMEOUT:.0f} s",
            actual=why, evidence=self.log_path,
            fix="check the log; is the bind address configured on this host?",
        )

    def _spawn(self) -> str | None:
        conf = self._render_config()
        with self.log_path.open("a") as f:
            f.write(f"--- harness: starting mosquitto -c {conf}\n")
        env = dict(os.environ)
        if self._tls_shim is not None:
            env["LD_PRELOAD"] = " ".join(filter(None, [str(self._tls_shim), env.get("LD_PRELOAD")]))
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except FileNotFoundError:
            raise InfrastructureError(f"{self.binary!r} is not installed on this machine",
                                      fix="apt-get install mosquitto, or use the embedded broker kind") from None
        self._pump = _LogPump(self._proc, self.log_path)
        if self._pump.wait_for(_RUNNING, 0, START_TIMEOUT) is not None and self._proc.poll() is None:
            if self._tls_shim is not None and self._pump.wait_for(_CLIENT_CERTS_ASKED, 0, 0) is None:
                self._kill_process(graceful=False)
                raise InfrastructureError(
                    "mosquitto started without asking TLS clients for certificates: the harness's library "
                    f"{self._tls_shim} (LD_PRELOAD) did not take effect, so no X.509 device could sign in",
                    evidence=self.log_path,
                    fix="is this mosquitto linked dynamically against OpenSSL's libssl (Debian's is)?")
            closed = [f"{a}:{p}" for a in all_binds(self.options)
                      for p in [self._port] + ([self.tls_port_at(a)] if self._tls is not None else [])
                      if not port_accepts(a, p)]
            if not closed:
                return None
            self._kill_process(graceful=False)
            return f"mosquitto runs but nothing accepts connections on port(s) {closed}"
        tail = self._pump.tail()
        self._kill_process(graceful=False)
        return tail or "no output"

    def _kill_process(self, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(STOP_TIMEOUT if graceful else 5.0)
            except subprocess.TimeoutExpired:
                log.warning("mosquitto pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, STOP_TIMEOUT)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5.0)
        if self._pump is not None:
            self._pump.join()
        if proc.stdout is not None:
            proc.stdout.close()

    def _stop(self, graceful: bool) -> None:
        self._kill_process(graceful)

    def _alive(self, grace: float = 0.0) -> str | None:
        if self._proc is None:
            return "no process"
        try:
            rc = self._proc.wait(grace) if grace > 0 else self._proc.poll()
        except subprocess.TimeoutExpired:
            rc = None
        return None if rc is None else f"mosquitto exited with {rc}; see {self.log_path}"

    def _identities_changed(self) -> None:
        """Replace the identities file: the plugin reads it at the next CONNECT."""
        write_identities(self.identities_path, self.identities)

    def freeze(self) -> None:
        """Stop the broker process (SIGSTOP): its host's TCP still acknowledges, nothing is processed."""
        if self._proc is None:
            raise UsageError("freeze() on a mosquitto broker that is not running")
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def connections(self) -> list[Connect]:
        """From mosquitto's log: ``New client connected from A:P as ID (p2, c0, k240, u'USER').``"""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [Connect(m["time"], m["address"], m["id"], m["user"] or "", m["clean"] == "1", int(m["keepalive"]))
                for m in _CONNECTED.finditer(text)]

    def wait_log(self, pattern: str, timeout: float, since: int = 0) -> str | None:
        """Wait for a mosquitto log line (regex) — for tests and diagnostics."""
        return self._pump.wait_for(re.compile(pattern), since, timeout) if self._pump else None
