"""Reading and writing the owner's photo files, losslessly, in whatever mode they come.

8-bit RGB, RGBA (the alpha channel is carried through untouched), grayscale (with or without
alpha), 16-bit grayscale and 16-bit colour, any size; EXIF orientation is applied on reading
(16-bit files are read with OpenCV, which does not). PNG output carries a ``privbench`` text
chunk, JPEG output a comment, with the defense, its parameters and the image id (never a key),
so recovery works after renaming as long as the metadata survives.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from harness.core.errors import DataError
from harness.core.files import atomic_write_bytes
from harness.core.limits import PHOTO_PIXELS

# The file suffixes read as photos, in folders of photos and in folder data sets.
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)

METADATA_KEY = "privbench"
PNG_COMPRESSION = 1  # zlib level of written PNGs (as OpenCV writes them; Pillow uses 6)


@dataclass
class Photo:
    """``pixels``: uint8 or uint16 [H, W, C], C = 1 (gray) or 3 (RGB); ``alpha``: [H, W] of the
    same dtype or None; ``metadata``: the privbench text chunk, if any; ``notes``: warnings the
    decoder gave about the file (it was still read)."""

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the decoder warned about

    @property
    def max_value(self) -> int:
        return int(np.iinfo(self.pixels.dtype).max)


def _split_alpha(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if arr.ndim == 2:
        return arr[..., None], None
    if arr.shape[2] in (2, 4):
        return arr[..., :-1], arr[..., -1]
    return arr, None


# Pillow refuses to decode more than this (twice its warning limit): a decompression bomb.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    """DataError for a photo of more pixels than :data:`PHOTO_PIXELS`, from its header, before
    any of it is decoded (protecting one peaks at about 100 bytes per pixel)."""
    limit = PHOTO_PIXELS.value()
    if size[0] * size[1] > limit:
        raise DataError(
            f"{path}: {size[0]}×{size[1]} is {size[0] * size[1]:,} pixels, more than the "
            f"{limit:,} privbench processes (${PHOTO_PIXELS.env} raises the limit); not read"
        )


def read_photo(path: Path) -> Photo:
    """Read ``path``; DataError naming the file and what is wrong if it is not a readable image
    (missing, unreadable, empty, not an image, truncated, or too many pixels)."""
    data = _file_bytes(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(io.BytesIO(data)) as im:
                _check_pixels(path, im.size)
                frames = _frames(im)
                if _sixteen_bit_colour(im, data):
                    photo = _read_with_opencv(path, data, _image_metadata(im.info))
                else:
                    photo = _photo_from_pillow(im)
        photo.notes = [
            str(w.message)
            for w in caught
            if not issubclass(w.category, Image.DecompressionBombWarning)
        ]
        if frames != 1:  # said, not silent: the output is a still of the first
            count = f"{frames} frames" if frames else "several frames"
            photo.notes.append(f"it holds {count} (an animation); only the first is read")
        return photo
    except Image.DecompressionBombError as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise DataError(
            f"{path}: the image declares {size}, more than the {MAX_PIXELS:,} that privbench "
            "decodes (a decompression bomb, or a photo too large to process); not read"
        ) from None
    except DataError:
        raise
    except Exception as exc:  # any failure to decode (the decoders raise many types) = not readable
        raise DataError(f"{path}: cannot read as an image ({_describe(exc)})") from None


def _frames(im: Image.Image) -> int:
    """How many frames ``im`` holds (GIF, APNG, WebP, multi-page TIFF), 0 for several that
    cannot be counted (a damaged later frame must not stop the first from being read)."""
    try:
        return int(getattr(im, "n_frames", 1)) if getattr(im, "is_animated", False) else 1
    except Exception:  # the decoders raise many types on a damaged frame
        return 0


def _file_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    return data


def _describe(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow recognises"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _photo_from_pillow(im: Image.Image) -> Photo:
    metadata = _image_metadata(im.info)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.int64).clip(0, 65535).astype(np.uint16)
        return Photo(arr[..., None], None, metadata)
    if im.mode == "F":  # 32-bit float: values are taken on the 0-255 scale, as Pillow's L does
        return Photo(np.asarray(im.convert("L"))[..., None], None, metadata)
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = "A" in im.mode or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    pixels, alpha = _split_alpha(np.asarray(im))
    return Photo(np.ascontiguousarray(pixels), alpha, metadata)


def _sixteen_bit_colour(im: Image.Image, data: bytes) -> bool:
    """PNG and TIFF colour (or gray + alpha) at 16 bits per sample: Pillow would decode them to
    8 bits, OpenCV keeps all 16."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) > 25:
        return data[24] == 16 and data[25] in (2, 4, 6)  # bit depth, colour type
    if im.format == "TIFF":
        bits = im.tag_v2.get(258)
        return isinstance(bits, tuple) and len(bits) >= 2 and bits[0] == 16
    return False


def _read_with_opencv(path: Path, data: bytes, metadata: dict[str, Any]) -> Photo:
    """16-bit colour through OpenCV, whose codec messages are caught and reported with the error
    instead of being printed (OpenCV does not apply EXIF orientation here)."""
    with _captured_stderr() as messages:
        try:
            raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raw = None
            messages.append(str(exc).strip().splitlines()[-1])
    if raw is None or raw.dtype != np.uint16:
        said = "; ".join(m for m in messages if m)
        raise DataError(f"{path}: cannot read as a 16-bit image" + (f" ({said})" if said else ""))
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA if raw.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    pixels, alpha = _split_alpha(raw)
    return Photo(np.ascontiguousarray(pixels), alpha, metadata)


STDERR_BYTES = 64 * 1024  # what of a decoder's stderr is kept as notes; the rest is dropped


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (libpng, libjpeg, OpenCV) instead of
    letting it reach the terminal; the lines are in the yielded list afterwards."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor: nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(STDERR_BYTES).decode("utf-8", "replace")  # a decoder's notes
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def _metadata_comment(metadata: dict[str, Any]) -> bytes:
    """The JPEG comment (COM segment) that carries the metadata: ``privbench `` + JSON."""
    if not metadata:
        return b""
    return f"{METADATA_KEY} {json.dumps(metadata, sort_keys=True)}".encode()


def _image_metadata(info: dict[str, Any]) -> dict[str, Any]:
    """privbench metadata from a PNG text chunk or a JPEG comment."""
    comment = info.get("comment")
    if isinstance(comment, bytes) and comment.startswith(f"{METADATA_KEY} ".encode()):
        return _parse_metadata(comment[len(METADATA_KEY) + 1 :].decode("utf-8", "replace"))
    return _parse_metadata(info.get(METADATA_KEY))


def _parse_metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def encode_photo(
    photo: Photo, jpeg_quality: int | None = None, png_compression: int = PNG_COMPRESSION
) -> bytes:
    """PNG (lossless, with metadata; zlib level ``png_compression``, 0-9) or, when
    ``jpeg_quality`` is given, baseline JPEG."""
    pixels = photo.pixels
    arr = pixels if photo.alpha is None else np.dstack([pixels, photo.alpha])
    if jpeg_quality is not None:
        if pixels.dtype == np.uint16:
            raise DataError("16-bit images cannot be written as JPEG; write PNG instead")
        if photo.alpha is not None:
            raise DataError("JPEG has no alpha channel; write PNG to keep transparency")
        img = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))
        buf = io.BytesIO()
        comment = _metadata_comment(photo.metadata)
        img.save(buf, format="JPEG", quality=int(jpeg_quality), comment=comment)
        return buf.getvalue()
    if arr.shape[2] == 2 and arr.dtype == np.uint8:  # OpenCV writes no gray + alpha PNG
        la = Image.fromarray(np.ascontiguousarray(arr), mode="LA")
        return _pil_png(la, photo.metadata, png_compression)
    return _opencv_png(arr, photo.metadata, png_compression)


def _opencv_png(arr: np.ndarray, metadata: dict[str, Any], compression: int) -> bytes:
    """PNG of a gray, RGB or RGBA array, 8 or 16 bits, with OpenCV: about a fifth faster than
    Pillow's encoder at the same zlib level (19 against 24 ms for a 512² photo at level 1, the
    owner commands' largest cost), and the only one of the two that writes 16-bit colour."""
    code = {1: None, 2: None, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}[arr.shape[2]]
    ok, buf = cv2.imencode(
        ".png",
        cv2.cvtColor(arr, code) if code is not None else arr,
        [cv2.IMWRITE_PNG_COMPRESSION, compression],
    )
    if not ok:
        raise DataError(f"OpenCV could not encode a {arr.dtype} PNG of {arr.shape[2]} channels")
    return _with_text_chunk(buf.tobytes(), metadata)


def _with_text_chunk(png: bytes, metadata: dict[str, Any]) -> bytes:
    """Insert a tEXt chunk after IHDR (PNG spec §11.3.4.3). Written by hand because OpenCV
    writes no text chunks."""
    if not metadata:
        return png
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, length, type, IHDR data, CRC
    body = (
        b"tEXt"
        + METADATA_KEY.encode("latin-1")
        + b"\x00"
        + json.dumps(metadata, sort_keys=True).encode("latin-1", errors="replace")
    )
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def _pil_png(img: Image.Image, metadata: dict[str, Any], compression: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text(METADATA_KEY, json.dumps(metadata, sort_keys=True))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=compression)
    return buf.getvalue()


def write_photo(
    path: Path,
    photo: Photo,
    jpeg_quality: int | None = None,
    png_compression: int = PNG_COMPRESSION,
) -> None:
    """Encode and write atomically."""
    atomic_write_bytes(path, encode_photo(photo, jpeg_quality, png_compression))


def read_image_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3], EXIF orientation applied; DataError if unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read as an image ({exc})") from exc


def center_square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """The centre square of uint8 [H, W, C] ``img`` resized to ``size``² (Pillow bicubic)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top : top + s, left : left + s])
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))
