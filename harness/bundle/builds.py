"""The lab build a bundle runs on: the one of its firmware version and build id for its board type.

Field images carry production credentials, so their sha256 rarely matches a lab build's: builds
are matched on version and build id (and must run on the board type); among several, the one
whose image has the bundle's sha256 is preferred, then the first by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.bundle.manifest import BundleManifest
from harness.errors import ConfigError, UsageError
from harness.firmware import MANIFEST_FILE, FirmwareBuild, load_build


@dataclass(frozen=True)
class Choice:
    build: FirmwareBuild
    why: str


def lab_builds(folder: Path) -> tuple[list[FirmwareBuild], list[str]]:
    """The builds under ``folder`` (one folder each), and a line for each folder that is none."""
    builds, unusable = [], []
    if not folder.is_dir():
        return [], []
    for entry in sorted(folder.iterdir()):
        if not (entry / MANIFEST_FILE).is_file():
            continue
        try:
            builds.append(load_build(entry))
        except ConfigError as exc:
            unusable.append(f"{entry.name}: {exc.message.splitlines()[0][:200]}")
    return builds, unusable


def describe(build: FirmwareBuild) -> str:
    m = build.manifest
    return (f"{build.folder.name} (version {m.version}, build id {m.build.build_id or '-'}, "
            f"targets {', '.join(m.targets)})")


def pick_build(bundle: BundleManifest, folder: Path, target: str, *, where: str = "bundle.yaml") -> Choice:
    """The build of ``folder`` for the bundle, or a UsageError listing the builds there are."""
    fw = bundle.firmware
    builds, unusable = lab_builds(folder)
    fitting = [b for b in builds if b.manifest.version == fw.version and b.manifest.build.build_id == fw.build_id
               and b.compatible_with(target)]
    if not fitting:
        there = "; ".join(describe(b) for b in builds) or "none"
        broken = f" (not builds: {'; '.join(unusable)})" if unusable else ""
        raise UsageError(f"{where}: fields firmware.version {fw.version!r} and firmware.build_id {fw.build_id!r}: "
                         f"no lab build of them for {target} in {folder}: the builds there are {there}{broken}",
                         fix=f"build or copy that version into {folder}/, or name a build with --firmware BUILD")
    same_image = [b for b in fitting if fw.sha256 and b.manifest.sha256 == fw.sha256]
    chosen = (same_image or fitting)[0]
    why = ("the build of the bundle's version and build id, with the field image's sha256" if same_image else
           "the build of the bundle's version and build id (its image differs from the field's: production "
           "credentials)" if fw.sha256 else "the build of the bundle's version and build id")
    return Choice(chosen, why + (f"; {len(fitting)} fit, the first by name taken" if len(fitting) > 1 else ""))
