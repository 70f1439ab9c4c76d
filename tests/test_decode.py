"""Decoding people's files: any bytes give a grey image or a DigitrecError (never another exception), only
the formats people send digits in are decoded, and 16-bit / float images are scaled, not clipped."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmarks.abuse import digit_image, eps, ico_with_big_png, lab_tiff, scan_bomb, tiff_rational_strips
from digitrec.errors import DigitrecError
from digitrec.imaging.decode import decode
from digitrec.imaging.ink import find_ink


def _drawn_seven() -> Image.Image:
    image = Image.new("RGB", (90, 70), (240, 235, 225))
    image.paste((20, 20, 60), (25, 10, 65, 16))
    for y in range(16, 62):
        x = 62 - (y - 16) * 0.6
        image.paste((20, 20, 60), (int(x) - 3, y, int(x) + 3, y + 1))
    return image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


SEVEN = _drawn_seven()
REAL = {
    "png": _encode(SEVEN, "PNG"), "png-palette": _encode(SEVEN.convert("P"), "PNG", transparency=0),
    "jpeg": _encode(SEVEN, "JPEG", quality=80), "jpeg-progressive": _encode(SEVEN, "JPEG", progressive=True),
    "gif": _encode(SEVEN, "GIF"), "bmp": _encode(SEVEN, "BMP"), "tiff": _encode(SEVEN, "TIFF"),
    "tiff-lzw": _encode(SEVEN, "TIFF", compression="tiff_lzw"), "webp": _encode(SEVEN, "WEBP", quality=80),
    "png-rgba": _encode(SEVEN.convert("RGBA"), "PNG"), "png-16bit": digit_image("16-bit"),
}


@pytest.mark.parametrize("kind", sorted(REAL))
def test_every_accepted_format_decodes_to_ink(kind):
    grey, scale = decode(REAL[kind])
    assert grey.dtype == np.float32 and 0 <= grey.min() and grey.max() <= 1 and scale >= 1
    assert not find_ink(grey).empty


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(sorted(REAL)), edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255),
                                                                      st.sampled_from(["set", "insert", "delete", "cut"])),
                                                            min_size=1, max_size=8))
def test_mutated_real_images_give_an_image_or_a_digitrec_error(kind, edits):
    data = bytearray(REAL[kind])
    for where, value, how in edits:
        if not data:
            break
        i = int(where * (len(data) - 1))
        if how == "set":
            data[i] = value
        elif how == "insert":
            data[i:i] = bytes([value]) * (1 + value % 16)
        elif how == "delete":
            del data[i:i + 1 + value % 16]
        else:
            del data[i:]
    try:
        grey, scale = decode(bytes(data))
    except DigitrecError as e:
        assert e.code in ("invalid_image", "unsupported_format", "too_large", "too_costly")
        return
    assert grey.ndim == 2 and grey.dtype == np.float32 and np.isfinite(grey).all() and scale > 0
    find_ink(grey)  # the analysis copes with whatever decoded


@pytest.mark.parametrize("data, code", [(eps(), "unsupported_format"), (ico_with_big_png(), "unsupported_format"),
                                        (scan_bomb(side=512, scans=500), "too_costly"),
                                        (tiff_rational_strips(), "invalid_image")])
def test_refused_before_decoding(data, code):
    with pytest.raises(DigitrecError) as e:
        decode(data)
    assert e.value.code == code


@pytest.mark.parametrize("data", [digit_image("16-bit"), digit_image("float"), lab_tiff()])
def test_16_bit_float_and_lab_images_are_scaled_not_clipped(data):
    grey, _ = decode(data)
    assert grey.max() - grey.min() > 0.5  # paper near 1, ink near 0
    assert not find_ink(grey).empty


@pytest.mark.parametrize("size", [3, 4, 9, 18, 33])
def test_the_background_opening_is_scipys_for_odd_and_even_windows(size):
    from scipy import ndimage

    from digitrec.imaging.ink import grey_opening

    values = np.random.default_rng(size).random((40, 57)).astype(np.float32)
    assert np.array_equal(grey_opening(values, size), ndimage.grey_opening(values, size=size))


def test_a_lone_pixel_is_no_ink_not_an_error():
    image = np.full((20, 20), 255, np.uint8)
    image[9, 9] = 0
    assert find_ink(decode(_encode(Image.fromarray(image), "PNG"))[0]).empty
