"""Build the harness's mosquitto plugin (``mosquitto_auth.c`` and the files of :data:`SOURCES`, shipped
in this package with their private header ``mosquitto_auth.h``) on first use, and its companion
preloaded for TLS listeners (``mosquitto_tls_client_cert.c``: every TLS client is asked for a
certificate, any is taken, the plugin judges it).

The shared object is cached under ``<cache>/mosquitto-plugin/<key>/`` where the key hashes every
source, the headers of this package they include (``#include "..."``, found next to the source as
the compiler finds them), the mosquitto headers they were built against and the compiler flags, so a
change in any source or header, or an upgraded mosquitto-dev, builds anew and an unchanged plugin is
built once per machine. The cache is ``$HIL_CACHE``, else ``$XDG_CACHE_HOME/hil``, else
``~/.cache/hil``. Concurrent first uses (xdist workers) each build into a temporary file and rename
it into place, so nobody loads half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

from harness.errors import InfrastructureError

_HERE = Path(__file__).parent
# the plugin: callbacks and entry points, the identity table, the policy, token expiry
SOURCES = tuple(_HERE / name for name in ("mosquitto_auth.c", "mosquitto_auth_table.c", "mosquitto_auth_policy.c",
                                          "mosquitto_auth_expiry.c"))
PLUGIN_NAME = "hil_auth.so"
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-std=c11", "-D_POSIX_C_SOURCE=200809L")
HEADERS = {"mosquitto.h": "libmosquitto-dev", "mosquitto_broker.h": "mosquitto-dev",
           "mosquitto_plugin.h": "mosquitto-dev", "openssl/hmac.h": "libssl-dev"}
LIBS = ("-lcrypto",)  # OpenSSL's HMAC-SHA256 for SAS tokens, digests of client certificates
TLS_SHIM_SOURCE = _HERE / "mosquitto_tls_client_cert.c"
TLS_SHIM_NAME = "hil_tls_client_cert.so"
TLS_SHIM_LIBS = ("-lssl", "-ldl")
BUILD_TIMEOUT = 120.0
_MISSING_HEADER = re.compile(r"fatal error: (\S+?\.h): No such file")
_LOCAL_INCLUDE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.MULTILINE)
_built: dict[Path, Path] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    env = os.environ.get("HIL_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hil"


def _header_text(cc: str) -> bytes:
    """The installed headers' contents (empty where missing: the build then says which package)."""
    out = b""
    for name in HEADERS:
        for folder in (Path("/usr/include"), Path("/usr/local/include")):
            if (folder / name).is_file():
                out += (folder / name).read_bytes()
                break
    return out + cc.encode()


def _local_files(sources: tuple[Path, ...]) -> list[Path]:
    """The sources, then the headers they include with quotes that exist next to the including file
    (where the compiler looks first), and those headers' own such includes, each once."""
    files = list(sources)
    for path in files:
        for name in _LOCAL_INCLUDE.findall(path.read_bytes()):
            header = path.parent / name.decode(errors="replace")
            if header.is_file() and header not in files:
                files.append(header)
    return files


def build_key(sources: tuple[Path, ...] = SOURCES, cc: str = "gcc", libs: tuple[str, ...] = LIBS) -> str:
    h = hashlib.sha256()
    for path in _local_files(sources):
        text = path.read_bytes()
        h.update(f"{path.name}\0{len(text)}\0".encode())
        h.update(text)
    h.update(_header_text(cc))
    h.update(" ".join(CFLAGS + libs).encode())
    return h.hexdigest()[:20]


def plugin_path(*, cc: str = "gcc", sources: tuple[Path, ...] = SOURCES, cache: Path | None = None) -> Path:
    """The built plugin, building it first if these sources (and headers) were never built here."""
    return _library(sources, PLUGIN_NAME, LIBS, cc, cache)


def tls_shim_path(*, cc: str = "gcc", cache: Path | None = None) -> Path:
    """The built TLS companion library (see ``mosquitto_tls_client_cert.c``), built like the plugin."""
    return _library((TLS_SHIM_SOURCE,), TLS_SHIM_NAME, TLS_SHIM_LIBS, cc, cache)


def _library(sources: tuple[Path, ...], name: str, libs: tuple[str, ...], cc: str, cache: Path | None) -> Path:
    folder = (cache or cache_dir()) / "mosquitto-plugin" / build_key(sources, cc, libs)
    target = folder / name
    with _lock:
        if _built.get(folder) == target or target.is_file():
            _built[folder] = target
            return target
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _compile(cc, sources, tmp, libs)
            tmp.chmod(0o755)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        _built[folder] = target
        return target


def _compile(cc: str, sources: tuple[Path, ...], out: Path, libs: tuple[str, ...] = LIBS) -> None:
    try:
        done = subprocess.run([cc, *CFLAGS, "-o", str(out), *map(str, sources), *libs], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT)
    except FileNotFoundError:
        raise InfrastructureError(
            f"cannot build the harness's mosquitto plugin: the C compiler {cc!r} is not installed",
            fix="apt-get install gcc libc6-dev mosquitto-dev libmosquitto-dev (or use the embedded broker kind)",
        ) from None
    except subprocess.TimeoutExpired:
        raise InfrastructureError(f"building the harness's mosquitto plugin with {cc} took over "
                                  f"{BUILD_TIMEOUT:.0f} s", fix="is the machine overloaded?") from None
    if done.returncode == 0:
        return
    missing = _MISSING_HEADER.search(done.stderr)
    header = missing.group(1) if missing else ""
    package = HEADERS.get(header) or HEADERS.get(header.rsplit("/", 1)[-1])
    if package:
        raise InfrastructureError(
            f"cannot build the harness's mosquitto plugin: the header {header} is missing",
            fix=f"apt-get install {package} (the mosquitto kind needs mosquitto-dev, libmosquitto-dev and "
                "libssl-dev), or use the embedded broker kind",
        )
    raise InfrastructureError(
        f"building the harness's mosquitto plugin failed ({cc} exited {done.returncode})",
        actual=done.stderr.strip()[-2000:] or "no output", evidence=sources[0],
        fix="install mosquitto-dev, libmosquitto-dev and libssl-dev from Debian 12 (mosquitto 2.0)",
    )
