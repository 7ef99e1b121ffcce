"""Build the reference firmware (``fixtures/firmware``) into a firmware build folder.

    folder = build_reference("mps2-an385", {"TEST_PUBLISH": 1}, preset="fast",
                             out=Path("firmware-builds/ref-fast"), flavour="lwip")
    # folder/hil-ref.elf, .bin, .hex, build.log and manifest.yaml (harness.firmware.FirmwareManifest)

``make`` runs out of tree in ``fixtures/firmware/build/<board>/<knob hash>/`` (one folder per knob set
apart from BUILD_ID, so builds with different knobs never overwrite each other; builds are serialised by a file lock,
which also covers the first fetch of lwIP). Knobs are make variables: the platform's (``VERSION``,
``BUILD_ID`` and the Makefile's ``PLATFORM_KNOBS``: ``TEST_PUBLISH``, ``MQTT_KEEPALIVE_S``,
``MQTT_STORE_BYTES``, ``ECHO_PORT``, ``IP_FRAGMENT_ENABLE``) and those the agent's ``agent.mk``
lists in ``AGENT_KNOBS``; ``make print-knobs`` reports the names and the values a build used, and
those values, not the caller's wishes, go into the manifest (all of them under ``build.knobs``; the
ones the manifest's ``behaviour`` has a field for there too).

Two flavours share the board code and the agent: ``lwip`` (``Makefile``: lwIP and our own MQTT
client) and ``azrtos`` (``azrtos/Makefile``: ThreadX, NetX Duo and the Azure IoT middleware, built
in ``build/azrtos/<board>/<knob hash>/``); the manifest's ``build.stack`` says which stack the
image runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

from harness.broker.tls import c_array
from harness.errors import InfrastructureError, UsageError
from harness.firmware import (
    Behaviour,
    BuildInfo,
    FirmwareManifest,
    IdentityExpectation,
    Intervals,
    SecurityModuleInfo,
    ServicesPromise,
    Stack,
    sha256_file,
    write_manifest,
)
from harness.provisioning import PROVISIONING_ADDRESS
from harness.provisioning import VERSIONS as PROVISIONING_VERSIONS

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "firmware"
BOARDS = ("mps2-an385", "mps2-an386")
IMAGE_STEM = "hil-ref"
BUILD_TIMEOUT = 300.0

#: Presets the agent's agent.mk defines (its PRESET knob): ``fast`` = first collection after 1 s,
#: intervals 2 s / 6 s, pending time 20 s. Explicit knobs override a preset's values.
PRESETS = ("fast",)

_KNOB_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_KNOB_VALUE = re.compile(r"[A-Za-z0-9._+:-]*")
_SIZE_LINE = re.compile(r"size: code (\d+) bytes, ram (\d+) bytes")
_NOT_KNOBS = {"BOARD", "BUILD_DIR", "LWIP_DIR", "AZRTOS_DIR", "AZRTOS_SOURCES", "STACK", "ROOT_CA_C",
              "ROOT_CA_SHA256"}

#: flavour -> (make arguments choosing its Makefile, build folder under build/, the stack it runs)
FLAVOURS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Stack]] = {
    "lwip": ((), (), "lwip"),
    "azrtos": (("-f", "azrtos/Makefile"), ("azrtos",), "netxduo"),
}


#: the upstream archives the azrtos flavour unpacks (azrtos/tools/extract-sources.sh), with SHA256SUMS
AZRTOS_FILES = ("threadx-6.4.2.tar.xz", "netxduo-6.4.2.tar.xz", "azure-sdk-for-c-1.3.2.tar.xz", "SHA256SUMS")


def azrtos_sources() -> Path:
    """Where the azrtos flavour's upstream archives are: $AZRTOS_SOURCES, else shared/third_party
    beside the repository (azrtos/Makefile's default)."""
    env = os.environ.get("AZRTOS_SOURCES")
    return Path(env) if env else FIRMWARE_DIR.parents[2] / "shared" / "third_party"


def azrtos_sources_missing() -> str | None:
    """Why the azrtos flavour cannot be built from scratch here, or None."""
    folder = azrtos_sources()
    missing = [name for name in AZRTOS_FILES if not (folder / name).is_file()]
    if not missing:
        return None
    return (f"the Azure RTOS sources folder {folder} lacks {', '.join(missing)}"
            + ("" if os.environ.get("AZRTOS_SOURCES") else " (the default: AZRTOS_SOURCES is not set)"))


def _flavour(flavour: str) -> tuple[tuple[str, ...], tuple[str, ...], Stack]:
    if flavour not in FLAVOURS:
        raise UsageError(f"unknown flavour {flavour!r} of the reference firmware",
                         expected=" or ".join(FLAVOURS), actual=flavour, fix="use --flavour lwip or --flavour azrtos")
    return FLAVOURS[flavour]


def _make(args: list[str], what: str, log_path: Path | None = None,
          timeout: float = BUILD_TIMEOUT, flavour: str = "lwip") -> str:
    argv = ["make", "--no-print-directory", "-C", str(FIRMWARE_DIR), *_flavour(flavour)[0], *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise InfrastructureError("make is not installed", fix="apt-get install make") from None
    except subprocess.TimeoutExpired as exc:
        raise InfrastructureError(f"{what} did not finish in {timeout:.0f} s",
                                  actual=str(exc.stdout or "")[-2000:], evidence=log_path) from None
    output = proc.stdout + proc.stderr
    if log_path is not None:
        log_path.write_text(f"$ {' '.join(argv)}\n{output}", encoding="utf-8")
    if proc.returncode != 0:
        raise InfrastructureError(f"{what} failed (make exit {proc.returncode})",
                                  actual=output[-3000:], evidence=log_path,
                                  fix="read the compiler output; arm-none-eabi-gcc, newlib, dpkg-dev "
                                      "and a Debian deb-src-capable apt mirror are needed (lwip); the "
                                      "upstream archives in AZRTOS_SOURCES (azrtos)")
    return proc.stdout


def _knob_str(name: str, value: object) -> str:
    text = ("1" if value else "0") if isinstance(value, bool) else str(value)
    if not _KNOB_NAME.fullmatch(name) or name in _NOT_KNOBS:
        raise UsageError(f"bad knob name {name!r}", fix="knob names are upper-case make variables, "
                         "e.g. TEST_PUBLISH=1 (BOARD is chosen with --board)")
    if not _KNOB_VALUE.fullmatch(text):
        raise UsageError(f"knob {name}: value {text!r} has characters a build cannot take",
                         expected="letters, digits and . _ + : -", actual=text)
    return text


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["TEST_PUBLISH=1", "VERSION=2.0.0"]`` (``--set NAME=VALUE``, repeatable) as a dict."""
    knobs: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set {item!r} is not NAME=VALUE", fix="write e.g. --set TEST_PUBLISH=1")
        knobs[name.strip()] = value.strip()
    return knobs


def known_knobs(board: str = BOARDS[0], flavour: str = "lwip", *, tls: bool = False) -> dict[str, str]:
    """The knob names this tree's Makefile (with the agent's agent.mk, if present) accepts, with
    their default values (with ``tls``, the lwIP TLS build's too: ``SAS_LIFETIME_S``)."""
    out = _make([f"BOARD={board}", *(["TLS=1"] if tls else []), "print-knobs"], "make print-knobs", timeout=30.0,
                flavour=flavour)
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: v for k, v in values.items() if k not in _NOT_KNOBS}


def resolve_knobs(board: str, knobs: Mapping[str, object], preset: str | None,
                  flavour: str = "lwip", *, tls: bool = False) -> dict[str, str]:
    """Preset, then explicit knobs, checked against the knobs the build knows (``tls``: the lwIP
    image's TLS build)."""
    if "TLS" in knobs:
        raise UsageError("knob TLS is chosen with --tls, not --set", actual=f"TLS={knobs['TLS']}",
                         fix="use hil firmware build-reference --tls (it compiles in the lab CA)")
    if board not in BOARDS:
        raise UsageError(f"unknown board {board!r} for the reference firmware",
                         expected=" or ".join(BOARDS), actual=board, fix="use --board mps2-an385")
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}", expected=", ".join(sorted(PRESETS)),
                         actual=preset, fix="use --preset fast, or set knobs one by one with --set")
    known = known_knobs(board, flavour, tls=tls)
    chosen: dict[str, str] = {"TLS": "1"} if tls else {}
    if preset is not None:
        if "PRESET" in known:
            chosen["PRESET"] = preset
        else:
            log.warning("preset %s ignored: no agent is linked (fixtures/firmware/agent/agent.mk "
                        "missing), so the build has no PRESET knob", preset)
    for name, value in knobs.items():
        text = _knob_str(name, value)
        if name not in known and not tls and flavour == "lwip" and name in known_knobs(board, tls=True):
            raise UsageError(f"knob {name} belongs to the TLS build", actual=name,
                             fix=f"add --tls (hil firmware build-reference --tls --set {name}=...)")
        if name not in known:
            raise UsageError(f"unknown knob {name!r}", expected=", ".join(sorted(known)), actual=name,
                             fix="check the spelling; agent knobs exist only when "
                                 "fixtures/firmware/agent/agent.mk lists them in AGENT_KNOBS")
        chosen[name] = text
    chosen.setdefault("BUILD_ID", _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    _check_knob_values(board, chosen, flavour)
    return chosen


_MAKE_ERROR = re.compile(r"^\S+:\d+: \*\*\* (?P<why>.+?)\.  Stop\.$", re.MULTILINE)


def _check_knob_values(board: str, chosen: Mapping[str, str], flavour: str = "lwip") -> None:
    """The Makefile and agent.mk refuse values they cannot take (``make print-knobs`` stops with
    ``*** NAME=VALUE must be ...``): a usage error naming the knob, before anything is built."""
    argv = ["make", "--no-print-directory", "-C", str(FIRMWARE_DIR), *_flavour(flavour)[0], f"BOARD={board}",
            "print-knobs",
            *(f"{k}={v}" for k, v in sorted(chosen.items()))]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30.0, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(f"make print-knobs could not run: {exc}", fix="apt-get install make") from None
    refused = _MAKE_ERROR.search(proc.stderr)
    if proc.returncode != 0 and refused:
        why = refused["why"]
        name = why.split("=", 1)[0] if "=" in why else ""
        raise UsageError(f"knob value refused: {why}", actual=f"{name}={chosen.get(name, '')}" if name else None,
                         fix="set the knob to a value it takes (fixtures/firmware/README.md and agent/README.md "
                             "list them)")
    if proc.returncode != 0:
        raise InfrastructureError(f"make print-knobs failed (exit {proc.returncode})", actual=proc.stderr[-2000:])


def build_reference(board: str, knobs: Mapping[str, object], preset: str | None, out: Path,
                    flavour: str = "lwip", *, trusted_ca: bytes | None = None) -> Path:
    """Build the reference firmware's ``flavour`` with ``knobs`` (over ``preset``) into ``out``;
    return ``out``.

    ``trusted_ca``: the DER of the lab CA (``hil lab ca``), the only CA the image trusts, compiled in
    as a C array like stock images keep it; its sha256 goes into the manifest
    (``identity.trusted_ca_sha256``). For ``lwip`` it makes the TLS build (mbedTLS, SAS tokens, DPS,
    twin); without it, the plain build, untouched by the TLS option. ``azrtos`` always runs TLS:
    without a CA it stays off the hub.

    ``out`` receives ``hil-ref.elf``/``.bin``/``.hex``, ``build.log`` and ``manifest.yaml``.
    Raises UsageError for a bad board, preset or knob, InfrastructureError when make fails.
    """
    _, subdir, stack = _flavour(flavour)
    if stack == "netxduo" and not (FIRMWARE_DIR / "build" / "azrtos-src" / ".extracted").is_file():
        missing = azrtos_sources_missing()
        if missing is not None:
            raise UsageError(missing, fix="set AZRTOS_SOURCES to the folder holding " + ", ".join(AZRTOS_FILES)
                             + " (unmodified upstream archives; fixtures/firmware/azrtos/README.md)")
    chosen = resolve_knobs(board, knobs, preset, flavour, tls=trusted_ca is not None and stack == "lwip")
    ca_sha256 = hashlib.sha256(trusted_ca).hexdigest() if trusted_ca is not None else None
    # one build folder per knob set (and CA), BUILD_ID aside (a new id per build would grow the
    # cache without bound; a changed id only recompiles in place, under the lock)
    digest = hashlib.sha256(repr(sorted((k, v) for k, v in chosen.items() if k != "BUILD_ID")).encode()
                            + (ca_sha256 or "").encode()).hexdigest()[:12]
    build_dir = FIRMWARE_DIR.joinpath("build", *subdir, board, digest)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    args = [f"BOARD={board}", f"BUILD_DIR={build_dir}", f"-j{max(1, os.cpu_count() or 1)}",
            *(f"{k}={v}" for k, v in sorted(chosen.items()))]
    if trusted_ca is not None:
        build_dir.mkdir(parents=True, exist_ok=True)
        ca_source = build_dir / ("root_ca.c" if stack == "netxduo" else "lab_ca.c")  # lwIP: the Makefile's TLS_CA
        text = c_array(trusted_ca)
        if not ca_source.is_file() or ca_source.read_text() != text:
            ca_source.write_text(text)
        if stack == "netxduo":
            args += [f"ROOT_CA_C={ca_source}", f"ROOT_CA_SHA256={ca_sha256}"]
    (FIRMWARE_DIR / "build").mkdir(exist_ok=True)
    with FileLock(str(FIRMWARE_DIR / "build" / ".make.lock")):
        stdout = _make(["all", *args], f"building the reference firmware ({flavour}) for {board}",
                       out / "build.log", flavour=flavour)
        effective = dict(line.split("=", 1) for line in
                         _make(["print-knobs", *args], "make print-knobs", timeout=30.0,
                               flavour=flavour).splitlines()
                         if "=" in line)
        for suffix in ("elf", "bin", "hex"):
            shutil.copyfile(build_dir / f"{IMAGE_STEM}.{suffix}", out / f"{IMAGE_STEM}.{suffix}")
    size = _SIZE_LINE.search(stdout)
    code, ram = (int(size.group(1)), int(size.group(2))) if size else (None, None)
    log.info("built %s for %s: code %s bytes, ram %s bytes", out, board, code, ram)
    manifest = reference_manifest(out, board, effective, code, ram, stack, ca_sha256=ca_sha256)
    write_manifest(out, manifest)
    return out


def _int(knobs: Mapping[str, str], name: str, default: int) -> int:
    value = knobs.get(name, "")
    return int(value) if value.isdigit() else default


def _mti(module_version: str) -> str:
    """The message type indicator a module version sends (spec table: schema 2.0 before 3.3.1)."""
    parts = tuple(int(p) for p in module_version.split(".") if p.isdigit())
    return "2.0-1-0-0" if parts < (3, 3) else "2.3-1-0-0"


def reference_manifest(out: Path, board: str, knobs: Mapping[str, str], code: int | None,
                       ram: int | None, stack: Stack = "lwip", *, ca_sha256: str | None = None) -> FirmwareManifest:
    """The manifest for a reference build, from the knob values the build reports.

    Agent knobs (listed in fixtures/firmware/agent/agent.mk) default to the module's own
    values when the build does not report them.
    """
    version = knobs.get("VERSION", "0.0.0")
    build_id = knobs.get("BUILD_ID", "dev")
    module_version = knobs.get("ASC_MODULE_VERSION") or "3.5.4"
    first = knobs.get("ASC_FIRST_COLLECTION_S", "")
    echo_port = _int(knobs, "ECHO_PORT", 7)
    # the stub agent (no agent.mk) sends no telemetry; the manifest still describes the module the
    # full build carries, and build.knobs has no ASC_* entries then
    defects = ("suspend-leak",) if knobs.get("UPSTREAM_SUSPEND_LEAK") == "1" else ()
    return FirmwareManifest(
        name=out.name,
        version=version,
        image=f"{IMAGE_STEM}.elf",
        format="elf",
        base_address=0,
        sha256=sha256_file(out / f"{IMAGE_STEM}.elf"),
        targets=(board.replace("-", "_"),),
        security_module=SecurityModuleInfo(
            version=module_version,
            id=knobs.get("ASC_MODULE_ID", "defender-iot-micro-agent"),
            mti=_mti(module_version),
        ),
        behaviour=Behaviour(
            boot_marker=rf"^HIL-REF {re.escape(version)} build {re.escape(build_id)} board {board}",
            first_collection_delay_s=int(first) if first.isdigit() else (30, 89),
            intervals_s=Intervals(high=_int(knobs, "ASC_HIGH_INTERVAL_S", 10),
                                  low=_int(knobs, "ASC_LOW_INTERVAL_S", 60)),
            flow_cap=_int(knobs, "ASC_FLOW_CAP", 64),
            pending_time_s=_int(knobs, "ASC_PENDING_TIME_S", 300),
            services=ServicesPromise(tcp_echo=echo_port, udp_echo=echo_port, icmp=True),
            known_defects=defects,
            console_echo="echo {text}",
            os_info=f"Azure RTOS {knobs.get('THREADX_VERSION', '6.3')}",
        ),
        identity=IdentityExpectation(provisioning=f"block at 0x{PROVISIONING_ADDRESS:08X}",
                                     provisioning_versions=PROVISIONING_VERSIONS,
                                     # the middleware (azrtos) and the TLS build: TLS with a SAS token
                                     # from the key, DPS or not
                                     provisioning_features=("tls", "sas", "dps")
                                     if stack == "netxduo" or knobs.get("TLS") == "1" else (),
                                     trusted_ca_sha256=ca_sha256),
        build=BuildInfo(build_id=build_id, stack=stack,
                        knobs={k: v for k, v in knobs.items() if k not in ("VERSION", "BUILD_ID", "BOARD", "STACK")},
                        code_bytes=code, ram_bytes=ram),
    )
