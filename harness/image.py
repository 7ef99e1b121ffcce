"""Firmware image files as a probe programs them: format, the (address, data) pieces, and what
lands in flash.

The same reading serves the pre-flight checks in the parent (a file that is not an image, a raw
binary without its base address, an image that reaches below a bootloader the board must keep)
and the worker that programs and reads back, so both agree on what the image is.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.errors import UsageError

FORMATS = ("elf", "hex", "bin")


def image_format(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = {"axf": "elf", "ihex": "hex", "bin": "bin"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise UsageError(f"cannot tell the format of {path}", expected=f"one of {FORMATS}", actual=fmt or "none",
                         fix="pass fmt='elf'|'hex'|'bin'")
    return fmt


def image_chunks(path: Path, fmt: str, base: int | None) -> list[tuple[int, bytes]]:
    """The (address, data) pieces pyOCD's FileProgrammer would load from the file; a file that is
    not of its format is a UsageError naming it."""
    if fmt == "bin":
        if base is None:
            raise UsageError(f"{path} is a raw binary: its base address is needed", fix="pass base=0x08000000")
        return [(base, _read(path))]
    if fmt == "hex":
        from intelhex import HexReaderError, IntelHex

        try:
            hexfile = IntelHex(str(path))
        except (HexReaderError, ValueError) as exc:
            raise UsageError(f"{path} is not an Intel HEX file ({exc})",
                             fix="give the build's .hex, or its format (elf, bin)") from None
        return [(start, bytes(hexfile.tobinarray(start=start, size=end - start)))
                for start, end in hexfile.segments()]
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            return [(seg["p_paddr"], bytes(seg.data())) for seg in elf.iter_segments()
                    if seg.header.p_type == "PT_LOAD" and seg.header.p_filesz]
    except (ELFError, ValueError, EOFError) as exc:
        raise UsageError(f"{path} is not an ELF file ({exc})",
                         fix="give the build's .elf, or its format (hex, bin with a base address)") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read image {path}: {exc.strerror}", fix="check the path") from None


def flash_pieces(regions: Iterable[tuple[int, int]], chunks: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Clip the image to flash regions given as (start, end exclusive): what a probe programs."""
    out = []
    for start, end in regions:
        for addr, data in chunks:
            lo, hi = max(addr, start), min(addr + len(data), end)
            if lo < hi:
                out.append((lo, data[lo - addr: hi - addr]))
    return sorted(out)


def reaches_below(chunks: list[tuple[int, bytes]], keep_below: int) -> tuple[int, int] | None:
    """The lowest (address, length) of image data below ``keep_below``, or None."""
    low = sorted((addr, min(len(data), keep_below - addr)) for addr, data in chunks if data and addr < keep_below)
    return low[0] if low else None
