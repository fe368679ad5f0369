"""Reading image files with their size checked first: the header's width and height are held against the
frame-size limit before anything is decoded, so a small file that claims a huge image costs nothing.

Every format the OpenCV wheel decodes is recognized by its signature, as OpenCV itself recognizes
it (the suffix does not count): PNG, JPEG, BMP, WebP, TIFF (and BigTIFF), JPEG 2000, AVIF, GIF,
Radiance HDR, Sun raster, the portable any-maps (PBM, PGM, PPM, PAM) and PFM.
"""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable

from .errors import InputError
from .settings import MAX_FRAME_ENV
from .sizes import max_frame_size

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ImageError", "IMAGE_SUFFIXES", "image_size", "read_image"]

#: Suffixes of the image files commands pick out of folders (segment inputs, calibration frames, datasets).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: The most bytes a pixel takes in any format decoded here (4 channels of float32), for the file-size bound.
_MAX_BYTES_PER_PIXEL = 16
#: Room for headers, metadata and embedded thumbnails beyond the pixels.
_SLACK_BYTES = 1 << 20
#: How far into a file a header is looked for (JPEG markers and ISO boxes are walked, not read whole).
_TEXT_HEADER = 4096
#: JPEG marker segments walked at most looking for the frame header.
_MAX_SEGMENTS = 10000


class ImageError(InputError):
    """An image file that cannot be read: unreadable, an unknown format, a corrupt header, or too large."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: not a readable image ({reason})")
        self.path, self.reason = path, reason


def _u16(data: bytes, at: int, order: str = ">") -> int:
    return int(struct.unpack_from(f"{order}H", data, at)[0])


def _u32(data: bytes, at: int, order: str = ">") -> int:
    return int(struct.unpack_from(f"{order}I", data, at)[0])


def _png(f: IO[bytes], head: bytes) -> tuple[int, int]:
    if head[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk first")
    return _u32(head, 16), _u32(head, 20)


#: JPEG start-of-frame markers (all coding processes), which carry the frame size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(f: IO[bytes], head: bytes) -> tuple[int, int]:
    f.seek(2)
    for _ in range(_MAX_SEGMENTS):
        byte = f.read(1)
        if byte != b"\xff":
            raise ValueError("marker segments out of step" if byte else "no frame header before the end of the file")
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            raise ValueError("no frame header before the end of the file")
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        length = f.read(2)
        if len(length) < 2:
            raise ValueError("truncated marker")
        if marker in _JPEG_SOF:
            frame = f.read(5)
            if len(frame) < 5:
                raise ValueError("truncated frame header")
            return _u16(frame, 3), _u16(frame, 1)
        f.seek(_u16(length, 0) - 2, os.SEEK_CUR)
    raise ValueError(f"no frame header in the first {_MAX_SEGMENTS} marker segments")


def _bmp(f: IO[bytes], head: bytes) -> tuple[int, int]:
    if _u32(head, 14, "<") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _u16(head, 18, "<"), _u16(head, 20, "<")
    w, h = struct.unpack_from("<ii", head, 18)
    return abs(int(w)), abs(int(h))


def _webp(f: IO[bytes], head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 ":
        return _u16(head, 26, "<") & 0x3FFF, _u16(head, 28, "<") & 0x3FFF
    if chunk == b"VP8L":
        bits = _u32(head, 21, "<")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(head[24:27], "little") + 1), (int.from_bytes(head[27:30], "little") + 1)
    raise ValueError(f"unknown WebP chunk {chunk!r}")


def _tiff(f: IO[bytes], head: bytes) -> tuple[int, int]:
    order = "<" if head[:2] == b"II" else ">"
    big = _u16(head, 2, order) == 43
    if big:
        f.seek(int(struct.unpack_from(f"{order}Q", head, 8)[0]))
        count = int(struct.unpack(f"{order}Q", f.read(8))[0])
        entry, value_at = 20, 12
    else:
        f.seek(_u32(head, 4, order))
        count = _u16(f.read(2), 0, order)
        entry, value_at = 12, 8
    table = f.read(min(count, 4096) * entry)
    sizes: dict[int, int] = {}
    for at in range(0, len(table) - entry + 1, entry):
        tag, kind = struct.unpack_from(f"{order}HH", table, at)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3), LONG (4) or LONG8 (16)
            code = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if code is None:
                raise ValueError(f"tag {tag} has type {kind}")
            sizes[tag] = int(struct.unpack_from(f"{order}{code}", table, at + value_at)[0])
    if 256 not in sizes or 257 not in sizes:
        raise ValueError("no image width and length in the first directory")
    return sizes[256], sizes[257]


def _boxes(f: IO[bytes], end: int) -> "list[tuple[bytes, int, int]]":
    """ISO/JPEG 2000 boxes from the current position to `end`: (type, payload start, payload end)."""
    found: list[tuple[bytes, int, int]] = []
    while f.tell() + 8 <= end and len(found) < 1024:
        start = f.tell()
        size, kind = struct.unpack(">I4s", f.read(8))
        if size == 1:
            size = int(struct.unpack(">Q", f.read(8))[0])
        elif size == 0:
            size = end - start
        if size < f.tell() - start or start + size > end:
            raise ValueError(f"box {kind!r} runs past its container")
        found.append((kind, f.tell(), start + size))
        f.seek(start + size)
    return found


def _file_end(f: IO[bytes]) -> int:
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(here)
    return end


def _jp2(f: IO[bytes], head: bytes) -> tuple[int, int]:
    if head[:4] == b"\xff\x4f\xff\x51":  # a bare codestream: the SIZ segment follows the start marker
        xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", head, 8)
        return xsiz - xosiz, ysiz - yosiz
    f.seek(0)
    for kind, start, end in _boxes(f, _file_end(f)):
        if kind == b"jp2h":
            f.seek(start)
            for inner, at, _ in _boxes(f, end):
                if inner == b"ihdr":
                    f.seek(at)
                    h, w = struct.unpack(">II", f.read(8))
                    return int(w), int(h)
    raise ValueError("no image header box")


def _avif(f: IO[bytes], head: bytes) -> tuple[int, int]:
    """The largest 'ispe' (image spatial extent) property among the file's items: tiles, grids and alpha alike."""
    f.seek(0)
    found: list[tuple[int, int]] = []

    def walk(end: int, depth: int) -> None:
        for kind, start, stop in _boxes(f, end):
            if kind == b"ispe":
                f.seek(start + 4)  # version and flags
                w, h = struct.unpack(">II", f.read(8))
                found.append((int(w), int(h)))
            elif kind in (b"meta", b"iprp", b"ipco") and depth < 4:
                f.seek(start + (4 if kind == b"meta" else 0))  # 'meta' is a full box
                walk(stop, depth + 1)
            f.seek(stop)

    walk(_file_end(f), 0)
    if not found:
        raise ValueError("no image size property")
    return max(found, key=lambda s: s[0] * s[1])


def _gif(f: IO[bytes], head: bytes) -> tuple[int, int]:
    return _u16(head, 6, "<"), _u16(head, 8, "<")


def _sun_raster(f: IO[bytes], head: bytes) -> tuple[int, int]:
    return _u32(head, 4), _u32(head, 8)


def _tokens(head: bytes, start: int, count: int) -> list[int]:
    """`count` whitespace-separated numbers after `start`, skipping '#' comments (the any-map headers)."""
    text = re.sub(rb"#[^\n\r]*", b" ", head[start:])
    numbers = text.split()[:count]
    if len(numbers) < count or not all(n.isdigit() for n in numbers):
        raise ValueError("no width and height in the header")
    return [int(n) for n in numbers]


def _pnm(f: IO[bytes], head: bytes) -> tuple[int, int]:
    if head[1:2] == b"7":  # PAM: WIDTH and HEIGHT lines
        fields = dict(re.findall(rb"^(WIDTH|HEIGHT)[ \t]+(\d+)", head, re.MULTILINE))
        if b"WIDTH" not in fields or b"HEIGHT" not in fields:
            raise ValueError("no WIDTH and HEIGHT in the header")
        return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
    w, h = _tokens(head, 2, 2)
    return w, h


def _pfm(f: IO[bytes], head: bytes) -> tuple[int, int]:
    w, h = _tokens(head, 2, 2)
    return w, h


def _hdr(f: IO[bytes], head: bytes) -> tuple[int, int]:
    end = head.find(b"\n\n")
    found = re.match(rb"\s*([-+])([XY])\s+(\d+)\s+([-+])([XY])\s+(\d+)", head[end + 2:]) if end >= 0 else None
    if found is None:
        raise ValueError("no resolution line after the header")
    sizes = {found.group(2): int(found.group(3)), found.group(5): int(found.group(6))}
    if set(sizes) != {b"X", b"Y"}:
        raise ValueError("the resolution line does not name X and Y")
    return sizes[b"X"], sizes[b"Y"]


#: (signature test on the first bytes, reader of (width, height)), in the order OpenCV tries its decoders.
_FORMATS: list[tuple[str, Callable[[bytes], bool], Callable[[IO[bytes], bytes], tuple[int, int]]]] = [
    ("BMP", lambda h: h[:2] == b"BM", _bmp),
    ("JPEG", lambda h: h[:3] == b"\xff\xd8\xff", _jpeg),
    ("PNG", lambda h: h[:8] == b"\x89PNG\r\n\x1a\n", _png),
    ("WebP", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP", _webp),
    ("TIFF", lambda h: h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff),
    ("JPEG 2000", lambda h: h[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or h[:4] == b"\xff\x4f\xff\x51", _jp2),
    ("AVIF", lambda h: h[4:8] == b"ftyp" and (b"avif" in h[8:64] or b"avis" in h[8:64]), _avif),
    ("GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a"), _gif),
    ("HDR", lambda h: h[:6] == b"#?RGBE" or h[:10] == b"#?RADIANCE", _hdr),
    ("Sun raster", lambda h: h[:4] == b"\x59\xa6\x6a\x95", _sun_raster),
    ("PFM", lambda h: h[:2] in (b"PF", b"Pf"), _pfm),
    ("PNM", lambda h: h[:1] == b"P" and h[1:2] in b"1234567" and len(h) > 2 and h[2:3].isspace(), _pnm),
]


def image_size(path: str | os.PathLike) -> tuple[str, int, int]:
    """(format, width, height) from an image file's header, decoding nothing; ImageError when unknown or corrupt."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_TEXT_HEADER)
            for name, matches, reader in _FORMATS:
                if matches(head):
                    try:
                        w, h = reader(f, head)
                    except (ValueError, struct.error, OverflowError) as exc:
                        raise ImageError(path, f"corrupt {name} header: {exc}") from None
                    if w <= 0 or h <= 0:
                        raise ImageError(path, f"its {name} header gives no size ({w}x{h})")
                    return name, w, h
    except OSError as exc:
        raise ImageError(path, exc.strerror or str(exc)) from None
    raise ImageError(path, "no signature of a format OpenCV reads: PNG, JPEG, BMP, WebP, TIFF, JPEG 2000, AVIF, GIF, "
                           "HDR, Sun raster, PNM or PFM")


def read_image(path: str | os.PathLike, flags: int | None = None) -> "np.ndarray":
    """Decode an image file (default: BGR uint8, grey, 16-bit and alpha images converted; EXIF orientation applied).

    The header is read first: an image larger than the frame-size limit (either way round, as EXIF may
    rotate it) or a file far larger than its pixels is refused before any memory is spent on it.
    Raises ImageError saying what is wrong.
    """
    import cv2
    import numpy as np

    path = Path(path)
    kind, w, h = image_size(path)
    limit_w, limit_h = max_frame_size()
    if not ((w <= limit_w and h <= limit_h) or (h <= limit_w and w <= limit_h)):
        raise ImageError(path, f"its {kind} header says {w}x{h}, larger than the frame-size limit {limit_w}x{limit_h}: "
                               f"downscale it, or raise the limit with {MAX_FRAME_ENV}=WxH")
    size = path.stat().st_size
    if size > w * h * _MAX_BYTES_PER_PIXEL + _SLACK_BYTES:
        raise ImageError(path, f"{size} bytes is far more than a {w}x{h} {kind} image holds")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(path, exc.strerror or str(exc)) from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR if flags is None else flags)
    if image is None:
        raise ImageError(path, f"its {kind} data is truncated or corrupt")
    return image
