"""Checks that a file is a PNG a viewer can open: the signature, the size in its IHDR
chunk, and, where pillow is installed (it comes with matplotlib), a full decode."""
from __future__ import annotations

import pathlib
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: pathlib.Path) -> tuple[int, int]:
    """(width, height) in pixels; AssertionError naming the file when it is not a PNG."""
    head = pathlib.Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", \
        f"{path}: expected a PNG (signature {PNG_SIGNATURE!r}, then IHDR), found {head!r}"
    width, height = struct.unpack(">II", head[16:24])
    try:
        from PIL import Image
    except ImportError:
        return width, height
    with Image.open(path) as image:
        image.load()  # decodes every row: a truncated file fails here
        assert image.size == (width, height), f"{path}: IHDR says {width}x{height}, pillow {image.size}"
    return width, height
