"""EXIF orientation, checked by where the ink lands: a camera stores the pixels as the sensor saw them and a
tag saying how to turn them for display; preprocessing must turn them the way the tag says."""

import io

import numpy as np
import pytest
from PIL import Image

from digitrec.imaging.decode import decode
from digitrec.inference.records import as_dicts

ORIENTATION = 0x0112
# The stored pixels: white paper, a dark block in the top-left corner; 40 rows x 60 columns, so a turn by a
# quarter also shows in the shape.
STORED = np.full((40, 60), 255, np.uint8)
STORED[2:10, 2:14] = 0

# EXIF orientation value -> (how the stored pixels are shown, the corner the ink is then in).
SHOWN = {
    1: (lambda a: a, "top-left"),
    2: (lambda a: a[:, ::-1], "top-right"),  # mirrored left-right
    3: (lambda a: a[::-1, ::-1], "bottom-right"),  # turned by 180 degrees
    4: (lambda a: a[::-1], "bottom-left"),  # mirrored top-bottom
    5: (lambda a: a.T, "top-left"),  # mirrored along the main diagonal
    6: (lambda a: np.rot90(a, -1), "top-right"),  # turned 90 degrees clockwise
    7: (lambda a: np.rot90(a, -1)[::-1], "bottom-right"),  # mirrored along the other diagonal
    8: (lambda a: np.rot90(a, 1), "bottom-left"),  # turned 90 degrees anticlockwise
}


def tagged(array: np.ndarray, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, exif=exif.tobytes())
    return buffer.getvalue()


def ink_corner(grey: np.ndarray) -> str:
    ys, xs = np.nonzero(grey < 0.5)
    h, w = grey.shape
    return ("top" if ys.mean() < h / 2 else "bottom") + "-" + ("left" if xs.mean() < w / 2 else "right")


@pytest.mark.parametrize("orientation", sorted(SHOWN))
def test_the_ink_lands_where_the_orientation_tag_says(orientation):
    show, corner = SHOWN[orientation]
    grey, scale = decode(tagged(STORED, orientation))
    expected = show(STORED)
    assert grey.shape == expected.shape and scale == 1.0
    assert ink_corner(grey) == corner
    assert np.array_equal(grey, expected.astype(np.float32) / 255)  # every pixel, not only the corner


def test_a_camera_jpeg_turned_a_quarter_clockwise():
    grey, _ = decode(tagged(STORED, 6, "JPEG"))
    assert grey.shape == (60, 40) and ink_corner(grey) == "top-right"
    assert grey[2:14, 30:38].mean() < 0.2 and grey[40:, :].mean() > 0.9  # ink there, paper elsewhere


@pytest.mark.mnist
def test_a_digit_stored_sideways_is_read_upright(mnist_dir):
    """MNIST test digits stored turned by a quarter, with the tag that turns them back: read as themselves."""
    from digitrec.data.datasets import load_split
    from digitrec.inference.predict import Predictor, predict_images

    test = load_split("mnist", mnist_dir, train=False)
    items, labels = [], []
    for i in range(20):
        digit = 255 - test.images[i].numpy()  # dark ink on white paper
        big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC))
        items.append((f"cw-{i}", tagged(np.rot90(big, 1).copy(), 6, "JPEG")))  # stored anticlockwise, shown clockwise
        items.append((f"ccw-{i}", tagged(np.rot90(big, -1).copy(), 8, "JPEG")))
        labels += [int(test.labels[i])] * 2
    records = as_dicts(predict_images(items, Predictor()))
    right = sum(r["digit"] == label for r, label in zip(records, labels))
    assert right >= 39, [(r["path"], r["digit"], label) for r, label in zip(records, labels) if r["digit"] != label]
