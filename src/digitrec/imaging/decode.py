"""Image bytes -> a grey image to analyse, within limits of size, memory and time.

Alpha on white, EXIF orientation undone, palettes and modes to grey, shrunk to about WORK_PIXELS.  Every
failure inside decoding is one DigitrecError (invalid_image, unsupported_format, too_large or too_costly).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from digitrec.errors import DigitrecError

MAX_BYTES = 20 * 1024 * 1024  # an image file larger than this is refused before decoding
MAX_PIXELS = 40_000_000  # declared width x height above this is refused before decoding (decompression bombs)
# Memory the decoded image may take in Pillow's own storage (1, 2 or 4 bytes a pixel by mode), checked after
# JPEG draft reduction and mode expansion are known and before the pixels are allocated.
MAX_DECODED_BYTES = 96 * 1024 * 1024
MAX_JPEG_SCANS = 100  # a progressive JPEG has ~10 scans; thousands of empty ones are a CPU bomb
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # what people send digits in; nothing else is decoded
WORK_PIXELS = 256 * 256  # images are shrunk to about this many pixels before analysis: cost stays bounded
# ... and images read as sheets of numbers (`read`) to about this many: a sheet's digits are small against it.
SHEET_PIXELS = 512 * 512
WORK_SIDE = 2048  # ... and to at most this side (a 1 x 40,000,000 strip is no line of digits)
MAX_DIGITS = 1024  # 28x28 inputs one image may give (a sheet with more candidate digits is refused: too costly)
MAX_STRIPS = 256  # runs of digits that may touch one sheet may send to the sequence reader (past it: too costly)
TOO_LARGE = "image too large"  # how every size refusal begins (for people; programs read the error code)
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the transpose that undoes it


def decode(data: bytes, work_pixels: int = WORK_PIXELS) -> tuple[np.ndarray, float]:
    """Image bytes (PNG, JPEG, GIF, BMP, TIFF or WebP) -> (grey float32 [H, W] in [0, 1] with dark = 0, scale),
    shrunk to about `work_pixels`, where scale = original width / analysed width.

    Any bytes give a result or a DigitrecError, never another exception: Pillow's decoders raise whatever
    their parsers meet (struct.error, TypeError, ValueError ...) on crafted files, so every failure inside
    decoding is an invalid image, and running out of memory (the server's workers run under a memory limit)
    is a refusal, not a crash."""
    if len(data) > MAX_BYTES:
        raise DigitrecError(f"{TOO_LARGE} ({len(data)} bytes; the limit is {MAX_BYTES})", code="too_large")
    if not data:
        raise DigitrecError("empty file: not an image", code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            grey, width = _decode_grey(data, work_pixels)
    except DigitrecError:
        raise
    except MemoryError:
        raise DigitrecError("image too costly to decode (over its memory budget)", code="too_costly") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DigitrecError(f"{TOO_LARGE} (over {MAX_PIXELS:,} pixels)", code="too_large") from None
    except Image.UnidentifiedImageError:
        raise DigitrecError("not an image digitrec reads (PNG, JPEG, GIF, BMP, TIFF, WebP)",
                            code="unsupported_format") from None
    except Exception as e:  # noqa: BLE001  (truncated, corrupt or crafted data: see the docstring)
        raise DigitrecError(f"cannot decode image: {type(e).__name__}: {str(e)[:200]}", code="invalid_image") from None
    return np.asarray(grey, dtype=np.float32) / 255.0, width / grey.width


def _bytes_per_pixel(mode: str) -> int:
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _work_size(width: int, height: int, work_pixels: int = WORK_PIXELS) -> tuple[int, int]:
    shrink = min(1.0, (work_pixels / max(1, width * height)) ** 0.5, WORK_SIDE / max(width, height))
    return max(1, round(width * shrink)), max(1, round(height * shrink))


def _decode_grey(data: bytes, work_pixels: int) -> tuple[Image.Image, int]:
    """(mode L image at working size, oriented, alpha on white; the oriented width before shrinking)."""
    image = Image.open(io.BytesIO(data), formats=FORMATS)
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DigitrecError(f"{TOO_LARGE} ({width}x{height} pixels; the limit is {MAX_PIXELS:,} pixels)",
                            code="too_large")
    if image.format == "JPEG":
        if data.count(b"\xff\xda") > MAX_JPEG_SCANS:  # start-of-scan markers (0xFF is escaped inside scans)
            raise DigitrecError(f"image too costly to decode (a JPEG of over {MAX_JPEG_SCANS} scans)",
                                code="too_costly")
        image.draft("L", _work_size(width, height, work_pixels))  # decode at 1/2, 1/4 or 1/8 size when that is enough
    mode = "RGBA" if image.mode == "PA" else "I" if image.mode.startswith("I;16") else image.mode
    decoded = image.size[0] * image.size[1] * _bytes_per_pixel(mode)
    if decoded > MAX_DECODED_BYTES:
        raise DigitrecError(f"{TOO_LARGE} ({image.size[0]}x{image.size[1]} {image.mode} pixels take "
                            f"{decoded >> 20} MB; the limit is {MAX_DECODED_BYTES >> 20} MB)", code="too_large")
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001  (a broken EXIF block: the pixels are still good)
        orientation = None
    image.seek(0)  # the first frame of an animation
    image.load()
    small = _work_size(*image.size, work_pixels)
    if image.mode == "P":  # palette: grey (and alpha on white) per palette entry, then one lookup per pixel
        image = _palette_to_grey(image)
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    if image.size != small:
        image = image.resize(small, Image.Resampling.BOX, reducing_gap=2.0)
    image = _to_grey(image)
    if orientation in ORIENTATIONS:
        image = image.transpose(ORIENTATIONS[orientation])
    return image, width if orientation not in (5, 6, 7, 8) else height


def _palette_to_grey(image: Image.Image) -> Image.Image:
    """P -> L without an RGBA copy: the palette itself is turned into composited grey levels."""
    rgba = image.convert("RGBA") if image.width * image.height <= 1 << 16 else None
    if rgba is not None:  # small: the plain way
        return _to_grey(rgba)
    palette = np.asarray(image.getpalette("RGB") or [], np.float32).reshape(-1, 3)
    palette = np.vstack([palette, np.zeros((256 - len(palette), 3), np.float32)])[:256]
    alpha = np.ones(256, np.float32)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and 0 <= transparency < 256:
        alpha[transparency] = 0
    elif isinstance(transparency, bytes):
        alpha[:len(transparency)] = np.frombuffer(transparency[:256], np.uint8) / 255.0
    grey = palette @ np.array([0.299, 0.587, 0.114], np.float32)
    levels = np.clip(np.round(255 - alpha * (255 - grey)), 0, 255).astype(np.uint8)
    image = image.copy()
    image.info.pop("transparency", None)
    image.putpalette(np.repeat(levels, 3).tobytes(), "RGB")
    return image.convert("L")


def _to_grey(image: Image.Image) -> Image.Image:
    """Any mode -> L: alpha composited on white paper (canvas drawings are strokes on transparency),
    16-bit and float images scaled (not clipped) into 0-255."""
    if image.mode in ("RGBA", "LA"):
        # Canvas drawings are often strokes on a transparent background: composite on white paper.
        alpha = np.asarray(image.getchannel("A"), np.float32) / 255.0
        grey = np.asarray(image.convert("RGB").convert("L") if image.mode == "RGBA" else image.getchannel("L"),
                          np.float32)
        return Image.fromarray(np.round(255 - alpha * (255 - grey)).astype(np.uint8))
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        values = np.where(np.isfinite(values), values, 0)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if image.mode.startswith("I;16") or (image.mode == "I" and 0 <= lo and 255 < hi <= 65535):
            values = values / 65535  # the full 16-bit range
        elif image.mode == "I" and 0 <= lo and hi <= 255:
            values = values / 255
        elif not (image.mode == "F" and 0 <= lo and hi <= 1):
            values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)  # unknown range: stretch
        return Image.fromarray(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8))
    if image.mode in ("LAB", "YCbCr"):
        return image.getchannel(0)  # lightness / luma
    if image.mode == "L":
        return image
    return image.convert("RGB").convert("L") if image.mode not in ("RGB", "1", "P") else image.convert("L")
