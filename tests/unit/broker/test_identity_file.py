"""The identity table as the mosquitto plugin's file, and building that plugin."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness.broker import plugin_build
from harness.broker.credentials import IdentityTable
from harness.broker.identity_file import FORMAT_LINE, encode_value, render_identities, write_identities
from harness.errors import InfrastructureError

# the plugin's files: a change in any of them builds it anew
PLUGIN_FILES = ("mosquitto_auth.c", "mosquitto_auth_table.c", "mosquitto_auth_policy.c", "mosquitto_auth_expiry.c",
                "mosquitto_auth.h")
# what they share (mosquitto_auth.h): defined in the plugin, never left for the broker to provide
SHARED = {"current", "free_table", "find", "percent_decode", "b64decode", "reload", "dps_username", "same_secret",
          "device_username_ok", "allowed", "sas_refusal", "expiring_set", "expiring_clear", "on_tick", "shown"}


@pytest.mark.parametrize(("value", "encoded"), [
    ("dev-a", "dev-a"),
    ("devices/+/messages/events/#", "devices/+/messages/events/#"),
    ("a b%c", "a%20b%25c"),
    ("x\ny\r\t", "x%0Ay%0D%09"),
    ("é", "%C3%A9"),
])
def test_values_are_percent_encoded(value: str, encoded: str) -> None:
    assert encode_value(value) == encoded


def test_the_file_holds_every_identity_with_its_filters(tmp_path: Path) -> None:
    table = IdentityTable(hub="lab-hub.azure-devices.net")
    dev = table.add_device("dev-a", password="p w")
    svc = table.add_service("hil-collector", password="s3cret")
    path = write_identities(tmp_path / "identities", table)
    lines = path.read_text().splitlines()
    assert lines[:2] == [FORMAT_LINE, "hub lab-hub.azure-devices.net"]
    a = lines.index("identity dev-a")
    c = lines.index("identity hil-collector")
    assert lines[a + 1:a + 3] == ["device dev-a", "password p%20w"]
    assert [x for x in lines[a:c] if x.startswith("publish ")] == [f"publish {t}" for t in dev.publish]
    assert lines[c + 1:c + 3] == ["username hil-collector", "password s3cret"]
    assert [x for x in lines[c:] if x.startswith("subscribe ")] == [f"subscribe {t}" for t in svc.subscribe]
    assert "subscribe hil/canary/hil-collector" in lines
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert render_identities(table) == path.read_text()


def test_the_file_is_replaced_never_rewritten_in_place(tmp_path: Path) -> None:
    """A reader that opened the old file keeps reading the old table (the rename is atomic)."""
    table = IdentityTable()
    path = write_identities(tmp_path / "identities", table)
    with path.open() as old:
        table.add_device("dev-late")
        write_identities(path, table)
        assert "dev-late" not in old.read()
    assert "identity dev-late" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["identities"]


@pytest.mark.needs("gcc")
def test_the_plugin_builds_once_per_source(tmp_path: Path) -> None:
    first = plugin_build.plugin_path(cache=tmp_path)
    assert first.is_file() and first.parent.parent == tmp_path / "mosquitto-plugin"
    mtime = first.stat().st_mtime_ns
    plugin_build._built.clear()
    assert plugin_build.plugin_path(cache=tmp_path) == first and first.stat().st_mtime_ns == mtime
    changed = _plugin_copy(tmp_path / "changed")
    changed[0].write_bytes(changed[0].read_bytes() + b"\n/* changed */\n")
    again = plugin_build.plugin_path(cache=tmp_path, sources=changed)
    assert again != first and again.is_file()


def _plugin_copy(folder: Path) -> tuple[Path, ...]:
    """A copy of the plugin's sources and the headers they include, in `folder`; the copied sources."""
    folder.mkdir()
    for path in plugin_build.SOURCES + tuple(plugin_build.SOURCES[0].parent.glob("mosquitto_auth*.h")):
        shutil.copy2(path, folder / path.name)
    return tuple(folder / source.name for source in plugin_build.SOURCES)


@pytest.mark.parametrize("name", PLUGIN_FILES)
def test_a_change_in_any_plugin_file_changes_the_build_key(tmp_path: Path, name: str) -> None:
    copy = _plugin_copy(tmp_path / "copy")
    assert plugin_build.build_key(copy) == plugin_build.build_key()  # where the files are does not count
    changed = tmp_path / "copy" / name
    changed.write_bytes(changed.read_bytes() + b"\n/* changed */\n")
    assert plugin_build.build_key(copy) != plugin_build.build_key()


@pytest.mark.needs("gcc")
@pytest.mark.parametrize(("sources", "libs"), [(plugin_build.SOURCES, plugin_build.LIBS),
                                               ((plugin_build.TLS_SHIM_SOURCE,), plugin_build.TLS_SHIM_LIBS)])
def test_the_plugin_source_compiles_without_warnings(tmp_path: Path, sources: tuple[Path, ...],
                                                     libs: tuple[str, ...]) -> None:
    out = tmp_path / "p.so"
    done = subprocess.run(["gcc", *plugin_build.CFLAGS, "-Werror", "-o", str(out), *map(str, sources), *libs],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.needs("gcc")
def test_the_plugin_exports_only_its_entry_points(tmp_path: Path) -> None:
    """What the plugin's files share stays inside it: a broker symbol of the same name cannot stand in."""
    plugin = plugin_build.plugin_path(cache=tmp_path)
    done = subprocess.run(["nm", "-D", "--defined-only", str(plugin)], capture_output=True, text=True, check=True)
    exported = sorted(line.split()[-1] for line in done.stdout.splitlines() if line.split()[1:2] == ["T"])
    assert exported == ["mosquitto_plugin_cleanup", "mosquitto_plugin_init", "mosquitto_plugin_version"]
    done = subprocess.run(["nm", "-D", "--undefined-only", str(plugin)], capture_output=True, text=True, check=True)
    undefined = {line.split()[-1].split("@")[0] for line in done.stdout.splitlines()}
    assert "mosquitto_log_printf" in undefined and not undefined & SHARED, sorted(undefined & SHARED)


@pytest.mark.needs("gcc")
def test_the_tls_library_is_built_and_cached_apart_from_the_plugin(tmp_path: Path) -> None:
    shim = plugin_build.tls_shim_path(cache=tmp_path)
    assert shim.name == plugin_build.TLS_SHIM_NAME and shim.is_file()
    assert shim.parent != plugin_build.plugin_path(cache=tmp_path).parent


def _fake_cc(tmp_path: Path, stderr: str) -> str:
    cc = tmp_path / "fake-cc"
    cc.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit 1\n")
    cc.chmod(0o755)
    return str(cc)


@pytest.mark.parametrize(("header", "package"), [("mosquitto_broker.h", "mosquitto-dev"),
                                                 ("mosquitto_plugin.h", "mosquitto-dev"),
                                                 ("mosquitto.h", "libmosquitto-dev")])
def test_missing_headers_name_the_package(tmp_path: Path, header: str, package: str) -> None:
    cc = _fake_cc(tmp_path, f"mosquitto_auth.c:40:10: fatal error: {header}: No such file or directory")
    with pytest.raises(InfrastructureError, match=f"header {header} is missing") as info:
        plugin_build.plugin_path(cc=cc, cache=tmp_path / "cache")
    assert f"apt-get install {package}" in str(info.value)
    assert not any(p.suffix == ".so" for p in (tmp_path / "cache").rglob("*"))  # nothing half-built left


def test_a_missing_compiler_and_other_failures_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="C compiler '/nonexistent/cc' is not installed"):
        plugin_build.plugin_path(cc="/nonexistent/cc", cache=tmp_path)
    cc = _fake_cc(tmp_path, "something else broke")
    with pytest.raises(InfrastructureError, match="exited 1") as info:
        plugin_build.plugin_path(cc=cc, cache=tmp_path)
    assert "something else broke" in str(info.value)


def test_the_cache_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HIL_CACHE", str(tmp_path / "a"))
    assert plugin_build.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("HIL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert plugin_build.cache_dir() == tmp_path / "x" / "hil"
    assert os.environ.get("HIL_CACHE") is None
