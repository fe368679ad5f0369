"""Image headers read without decoding: every format the OpenCV wheel decodes gives the size OpenCV decodes, and
sizes beyond the frame-size limit are refused before decoding."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_rt.images import ImageError, image_size, read_image

H, W = 37, 53
_IMAGE = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
#: suffix -> the image OpenCV encodes into that format (float formats take floats; bitmaps one channel).
_ENCODED = {
    ".png": _IMAGE, ".jpg": _IMAGE, ".bmp": _IMAGE, ".webp": _IMAGE, ".tif": _IMAGE, ".jp2": _IMAGE, ".ppm": _IMAGE,
    ".pam": _IMAGE, ".pgm": _IMAGE[..., 0], ".pbm": _IMAGE[..., 0], ".ras": _IMAGE, ".avif": _IMAGE, ".gif": _IMAGE,
    ".pfm": _IMAGE.astype(np.float32) / 255, ".hdr": _IMAGE.astype(np.float32) / 255,
}


@pytest.mark.parametrize("suffix", sorted(_ENCODED))
def test_header_size_is_the_decoded_size(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    assert cv2.imwrite(str(path), _ENCODED[suffix]), f"this OpenCV cannot write {suffix}"
    kind, w, h = image_size(path)
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert (h, w) == decoded.shape[:2] == (H, W), kind
    assert read_image(path).shape == (H, W, 3)


@pytest.mark.parametrize("params", [[cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_WEBP_QUALITY, 50]])
def test_other_encodings_of_a_format(tmp_path, params):
    path = tmp_path / ("x.jpg" if params[0] == cv2.IMWRITE_JPEG_PROGRESSIVE else "x.webp")
    assert cv2.imwrite(str(path), _IMAGE, params)
    assert image_size(path)[1:] == (W, H)


def _handmade(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_headers_opencv_does_not_write_here(tmp_path):
    """Layouts OpenCV reads but does not write: WebP VP8X, BigTIFF, a bare JPEG 2000 codestream, EXIF in JPEG."""
    vp8x = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\x10\x00\x00\x00" + \
        (W - 1).to_bytes(3, "little") + (H - 1).to_bytes(3, "little")
    assert image_size(_handmade(tmp_path, "a.webp", vp8x)) == ("WebP", W, H)
    entries = [struct.pack("<HHQQ", 256, 4, 1, W), struct.pack("<HHQQ", 257, 4, 1, H)]
    bigtiff = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", len(entries)) + b"".join(entries)
    assert image_size(_handmade(tmp_path, "a.tif", bigtiff)) == ("TIFF", W, H)
    codestream = b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 41, 0, W + 5, H + 7, 5, 7)
    assert image_size(_handmade(tmp_path, "a.j2k", codestream)) == ("JPEG 2000", W, H)
    ok, jpeg = cv2.imencode(".jpg", _IMAGE)
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 60000) + b"Exif\x00\x00" + b"\x00" * 59994  # a large APP1 first
    assert image_size(_handmade(tmp_path, "exif.jpg", jpeg.tobytes()[:2] + exif + jpeg.tobytes()[2:])) == ("JPEG", W, H)


@pytest.mark.parametrize("data, match", [
    (b"", "no signature of a format OpenCV reads"),
    (b"hello, I am text\n", "no signature of a format OpenCV reads"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt PNG header"),
    (b"\xff\xd8\xff\xd9", "no frame header before the image data"),
    (b"II*\x00" + struct.pack("<I", 1 << 30), "corrupt TIFF header"),
    (b"P6\n# only a comment\n", "corrupt PNM header"),
])
def test_unreadable_headers_say_why(tmp_path, data, match):
    with pytest.raises(ImageError, match=match):
        read_image(_handmade(tmp_path, "bad.png", data))


def test_sizes_beyond_the_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    from bisenet_rt.settings import MAX_FRAME_ENV

    path = tmp_path / "x.png"
    cv2.imwrite(str(path), _IMAGE)
    monkeypatch.setenv(MAX_FRAME_ENV, f"{H}x{W}")  # fits only rotated, as EXIF orientation may turn it: accepted
    assert read_image(path).shape == (H, W, 3)
    monkeypatch.setenv(MAX_FRAME_ENV, f"{W - 1}x{W - 1}")
    with pytest.raises(ImageError, match=f"its PNG header says {W}x{H}, larger than the frame-size limit"):
        read_image(path)
    monkeypatch.delenv(MAX_FRAME_ENV)
    path.write_bytes(path.read_bytes() + b"\x00" * (2 << 20))  # far more bytes than 53 x 37 pixels
    with pytest.raises(ImageError, match="far more than a 53x37 PNG image holds"):
        read_image(path)
