"""Preloaded by the preparing workers' forkserver (sandbox.py): Pillow's plugins and the preparation code (NumPy,
OpenCV) are imported, and one drawn digit prepared, as a single digit and as a line, once, so that every forked
worker starts warm (first images in milliseconds, not 50 ms)."""

import io

import cv2
from PIL import Image, ImageDraw

from digitrec.imaging.prepare import prepare

# No OpenCV thread pool in the workers: its threads would leave glibc arenas in every forked worker, address
# space reserved before the worker's memory budget is measured, which the budget then fails to bound.
cv2.setNumThreads(0)
Image.init()
_image = Image.new("L", (64, 48), 255)
ImageDraw.Draw(_image).line([(20, 8), (40, 8), (28, 40)], fill=0, width=4)  # a 7
_buffer = io.BytesIO()
_image.save(_buffer, "PNG")
prepare(_buffer.getvalue())
prepare(_buffer.getvalue(), line=True)
