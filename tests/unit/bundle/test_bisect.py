"""--builds A..B: the range in version order, and a bisection that names the first build that differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.bundle.bisect import bisect, build_range
from harness.errors import UsageError
from harness.firmware import FirmwareBuild
from tests.badinput.case import build


def builds_folder(root: Path, versions: dict[str, tuple[str, str]]) -> Path:
    for name, (version, build_id) in versions.items():
        build({"version": version, "build": {"build_id": build_id}, "name": name}, folder=f"builds/{name}")(root)
    return root / "builds"


def test_the_range_is_in_version_order_not_name_order(tmp_path: Path) -> None:
    folder = builds_folder(tmp_path, {"c": ("2.10.0", "1"), "a": ("2.9.0", "1"), "b": ("2.9.0", "2"),
                                      "z": ("1.0.0", "1")})
    assert [b.folder.name for b in build_range("a..c", folder, "mimxrt1060")] == ["a", "b", "c"]
    with pytest.raises(UsageError, match=r"c comes after a"):
        build_range("c..a", folder, "mimxrt1060")
    with pytest.raises(UsageError, match=r"'nope' is not a build for mimxrt1060.*the builds there are z"):
        build_range("z..nope", folder, "mimxrt1060")
    with pytest.raises(UsageError, match=r"is not A\.\.B"):
        build_range("a", folder, "mimxrt1060")
    with pytest.raises(UsageError, match=r"not a build for stm32l475xg"):
        build_range("a..c", folder, "stm32l475xg")


def fake(names: list[str]) -> list[FirmwareBuild]:
    return [FirmwareBuild(Path(n), None) for n in names]  # type: ignore[arg-type]  (only the folder is used)


@pytest.mark.parametrize(("bad_from", "expected"), [(0, "b0"), (1, "b1"), (4, "b4"), (6, "b6"), (7, None)])
def test_bisection_names_the_first_build_that_differs(bad_from: int, expected: str | None) -> None:
    builds = fake([f"b{i}" for i in range(7)])
    tried: list[str] = []

    def run(b: FirmwareBuild) -> str:
        tried.append(b.folder.name)
        return "differs" if int(b.folder.name[1:]) >= bad_from else "reproduced"

    found = bisect(builds, run)
    assert found.first_differing == expected
    assert len(tried) <= 3 and len(set(tried)) == len(tried)  # log2(7) rounded up, none twice
    if expected is not None:
        assert found.verdicts[expected] == "differs"  # the one named was tried


def test_a_stopped_reproduction_stops_the_bisection() -> None:
    found = bisect(fake(["a", "b", "c"]), lambda b: "incomplete")
    assert found.stopped and found.first_differing is None
