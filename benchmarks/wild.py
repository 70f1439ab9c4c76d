"""The trust benchmark's own evaluation sets: digits and non-digits that digitrec never trained on.

- Digits in the wild: the digits of handwriting fonts (Debian's fonts-breip, -bwht, -dkg-handwriting,
  -femkeklaver, -humor-sans, -klee, -rufscript, -sjfonts, -yusei-magic: eighteen people's hands), written as a
  person would present them: pen colours, sizes, slants, paper, phone-photo light, JPEG.  digitrec never trains
  on handwriting fonts, so these measure how it reads other people's handwriting.
- Non-digits: letters and signs in those handwriting fonts (the ones no one would read as a digit), doodles of
  families the training outliers never drew (smileys, hearts, houses, arrows, suns, flowers, clouds, envelopes,
  trees, fish), and photographed clothing from Fashion-MNIST's *test* split (training outliers come from its
  training split).
- Lines of 3-8 handwritten-font digits, with varied gaps, for `read`.

Everything is drawn from a seeded generator, so the sets are the same on every machine with the same fonts.
"""

from __future__ import annotations

import glob
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_GLOBS = ("/usr/share/fonts/truetype/breip/*.ttf", "/usr/share/fonts/opentype/bwht/*.otf",
              "/usr/share/fonts/truetype/fifthhorseman/*.ttf", "/usr/share/fonts/truetype/femkeklaver/*.ttf",
              "/usr/share/fonts/truetype/humor-sans/*.ttf", "/usr/share/fonts/truetype/klee/*.ttf",
              "/usr/share/fonts/truetype/rufscript/*.ttf", "/usr/share/fonts/truetype/sjfonts/*.ttf",
              "/usr/share/fonts/truetype/yusei-magic/*.ttf")
DEBIAN_FONTS = ("fonts-breip fonts-bwht fonts-dkg-handwriting fonts-femkeklaver fonts-humor-sans fonts-klee "
                "fonts-rufscript fonts-sjfonts fonts-yusei-magic")
NON_DIGIT_LETTERS = "ACEFHKMNRUVWXacefhkmnruvwx#%&*+=@"
DOODLES = ("smiley", "heart", "house", "arrow", "sun", "flower", "cloud", "envelope", "tree", "fish")
# Drawn after the training outliers gained their `icons` kind (outliers.py), which was made for the doodles
# above that the network read as digits (smileys, hearts, arrows, trees): these ten families were written
# after that and were never drawn by any training code, so they measure how the rejection generalises.
LATER_DOODLES = ("moon", "note", "cup", "key", "glasses", "car", "boat", "kite", "bell", "candle")
PENS = ((20, 20, 20), (25, 40, 140), (10, 10, 60), (90, 20, 20), (60, 60, 60))


def handwriting_fonts() -> list[str]:
    """The installed handwriting fonts whose ten digits are real glyphs (not the font's missing-glyph box)."""
    fonts = []
    for path in sorted(p for g in FONT_GLOBS for p in glob.glob(g)):
        font = ImageFont.truetype(path, 64)
        masks = [np.asarray(font.getmask(str(d))).tobytes() for d in range(10)]
        if len(set(masks)) == 10:
            fonts.append(path)
    return fonts


def _encode(image: Image.Image, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    if rng.random() < 0.3:
        image.convert("RGB").save(buffer, "JPEG", quality=int(rng.integers(40, 90)))
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _paper(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    tone = rng.uniform(200, 250)
    paper = np.full((h, w, 3), tone, np.float32) * rng.uniform(0.95, 1.05, 3)
    if rng.random() < 0.5:  # phone-photo light falling across the sheet
        gy, gx = np.mgrid[0:h, 0:w] / max(h, w)
        paper *= (1 - 0.25 * (gx * rng.uniform(0, 1) + gy * rng.uniform(0, 1)))[..., None]
    paper += rng.normal(0, rng.uniform(0, 6), (h, w, 1))
    return Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))


def _ink_layer(w: int, h: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    layer = Image.new("L", (w, h), 0)
    return layer, ImageDraw.Draw(layer)


def _compose(rng: np.random.Generator, layer: Image.Image) -> bytes:
    """Ink (a mask) on paper with a random pen, slightly rotated and blurred as a photo or scan would."""
    layer = layer.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR)
    if rng.random() < 0.4:
        layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    paper = _paper(rng, *layer.size)
    pen = Image.new("RGB", layer.size, PENS[rng.integers(len(PENS))])
    return _encode(Image.composite(pen, paper, layer), rng)


def _text_layer(rng: np.random.Generator, text: str, font_path: str, size: int,
                spacing: list[int] | None = None) -> Image.Image:
    font = ImageFont.truetype(font_path, size)
    pad = size // 2
    widths = [font.getbbox(ch)[2] - font.getbbox(ch)[0] for ch in text]
    gaps = spacing or [0] * (len(text) - 1)
    w = sum(widths) + sum(gaps) + 2 * pad
    layer, draw = _ink_layer(max(w, size + 2 * pad), int(size * 1.6) + 2 * pad)
    x = pad
    stroke = int(rng.integers(0, max(1, size // 28) + 1))
    for i, ch in enumerate(text):
        jitter = int(rng.integers(-size // 12, size // 12 + 1)) if len(text) > 1 else 0
        draw.text((x - font.getbbox(ch)[0], pad + size // 4 + jitter), ch, fill=255, font=font,
                  stroke_width=stroke, stroke_fill=255)
        x += widths[i] + (gaps[i] if i < len(gaps) else 0)
    shear = rng.uniform(-0.2, 0.2)
    return layer.transform(layer.size, Image.Transform.AFFINE,
                           (1, shear, -shear * layer.height / 2, 0, 1, 0), resample=Image.Resampling.BILINEAR)


def wild_digits(rng: np.random.Generator, per_font_digit: int = 6) -> list[tuple[int, str, bytes]]:
    """[(label, font name, image bytes)]: each handwriting font's digits, per_font_digit ways each."""
    out = []
    for font in handwriting_fonts():
        for digit in range(10):
            for _ in range(per_font_digit):
                size = int(rng.integers(28, 160))
                out.append((digit, font.rsplit("/", 1)[1], _compose(rng, _text_layer(rng, str(digit), font, size))))
    return out


def wild_lines(rng: np.random.Generator, count: int = 100, touching: bool = False) -> list[tuple[str, str, bytes]]:
    """[(text, font name, image bytes)]: lines of 3-8 digits in one handwriting font, gaps of varied width
    (touching: no gaps, the digits' boxes meeting or overlapping by up to an eighth of the font size)."""
    fonts, out = handwriting_fonts(), []
    for _ in range(count):
        font = fonts[rng.integers(len(fonts))]
        text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(3, 9))))
        size = int(rng.integers(40, 110))
        low, high = (-size // 8, 1) if touching else (size // 10, size // 2)
        gaps = [int(g) for g in rng.integers(low, high, len(text) - 1)]
        out.append((text, font.rsplit("/", 1)[1], _compose(rng, _text_layer(rng, text, font, size, gaps))))
    return out


def _doodle(rng: np.random.Generator, kind: str) -> Image.Image:
    side = int(rng.integers(64, 200))
    layer, d = _ink_layer(side, side)
    w = max(2, int(side * rng.uniform(0.03, 0.07)))
    c, r = side / 2, side * 0.35
    if kind == "smiley":
        d.ellipse([c - r, c - r, c + r, c + r], outline=255, width=w)
        for ex in (-1, 1):
            d.ellipse([c + ex * r / 2.5 - w, c - r / 3 - w, c + ex * r / 2.5 + w, c - r / 3 + w], fill=255)
        d.arc([c - r / 2, c - r / 3, c + r / 2, c + r / 1.6], 20, 160, fill=255, width=w)
    elif kind == "heart":
        t = np.linspace(0, 2 * math.pi, 100)
        x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        d.line(list(zip(c + x * r / 17, c - y * r / 17)), fill=255, width=w, joint="curve")
    elif kind == "house":
        d.rectangle([c - r * 0.7, c - r * 0.1, c + r * 0.7, c + r], outline=255, width=w)
        d.line([(c - r * 0.85, c - r * 0.05), (c, c - r), (c + r * 0.85, c - r * 0.05)], fill=255, width=w)
        d.rectangle([c - r * 0.2, c + r * 0.4, c + r * 0.2, c + r], outline=255, width=w)
    elif kind == "arrow":
        a = rng.uniform(0, 2 * math.pi)
        tip = (c + r * math.cos(a), c + r * math.sin(a))
        d.line([(c - r * math.cos(a), c - r * math.sin(a)), tip], fill=255, width=w)
        for da in (2.6, -2.6):
            d.line([tip, (tip[0] + r * 0.45 * math.cos(a + da), tip[1] + r * 0.45 * math.sin(a + da))], fill=255,
                   width=w)
    elif kind == "sun":
        d.ellipse([c - r / 2, c - r / 2, c + r / 2, c + r / 2], outline=255, width=w)
        for a in np.linspace(0, 2 * math.pi, int(rng.integers(6, 12)), endpoint=False):
            d.line([(c + r * 0.65 * math.cos(a), c + r * 0.65 * math.sin(a)),
                    (c + r * math.cos(a), c + r * math.sin(a))], fill=255, width=w)
    elif kind == "flower":
        for a in np.linspace(0, 2 * math.pi, int(rng.integers(5, 8)), endpoint=False):
            px, py = c + r * 0.55 * math.cos(a), c - r * 0.3 + r * 0.55 * math.sin(a) * 0.6
            d.ellipse([px - r / 4, py - r / 4, px + r / 4, py + r / 4], outline=255, width=w)
        d.line([(c, c), (c, c + r)], fill=255, width=w)
        d.line([(c, c + r * 0.6), (c + r * 0.4, c + r * 0.35)], fill=255, width=w)
    elif kind == "cloud":
        for dx, dy, rr in ((-0.45, 0.1, 0.35), (0, -0.15, 0.45), (0.45, 0.1, 0.35), (0, 0.25, 0.3)):
            d.arc([c + dx * r - rr * r, c + dy * r - rr * r, c + dx * r + rr * r, c + dy * r + rr * r], 150, 390,
                  fill=255, width=w)
    elif kind == "envelope":
        d.rectangle([c - r, c - r * 0.6, c + r, c + r * 0.6], outline=255, width=w)
        d.line([(c - r, c - r * 0.6), (c, c + r * 0.1), (c + r, c - r * 0.6)], fill=255, width=w)
    elif kind == "tree":
        d.line([(c, c + r), (c, c)], fill=255, width=w)
        d.polygon([(c - r * 0.7, c + r * 0.1), (c, c - r), (c + r * 0.7, c + r * 0.1)], outline=255, width=w)
    elif kind == "fish":
        d.ellipse([c - r, c - r * 0.45, c + r * 0.5, c + r * 0.45], outline=255, width=w)
        d.line([(c + r * 0.45, c), (c + r, c - r * 0.45), (c + r, c + r * 0.45), (c + r * 0.45, c)], fill=255,
               width=w)
        d.ellipse([c - r * 0.6 - w, c - r * 0.1 - w, c - r * 0.6 + w, c - r * 0.1 + w], fill=255)
    elif kind == "moon":  # a crescent: two arcs meeting at the horns
        t = np.linspace(-math.pi / 2, math.pi / 2, 60)
        outer = list(zip(c + r * np.cos(t), c + r * np.sin(t)))
        inner = list(zip(c + r * 0.35 * np.cos(t[::-1]), c + r * np.sin(t[::-1])))
        d.line(outer + inner + outer[:1], fill=255, width=w, joint="curve")
    elif kind == "note":  # a quaver: a filled head, a stem and a flag
        d.ellipse([c - r * 0.6, c + r * 0.45, c, c + r * 0.85], fill=255)
        d.line([(c, c + r * 0.65), (c, c - r)], fill=255, width=w)
        d.line([(c, c - r), (c + r * 0.45, c - r * 0.55), (c + r * 0.35, c - r * 0.15)], fill=255, width=w,
               joint="curve")
    elif kind == "cup":  # a mug with a handle and steam
        d.rectangle([c - r * 0.6, c - r * 0.2, c + r * 0.4, c + r], outline=255, width=w)
        d.arc([c + r * 0.2, c, c + r * 0.9, c + r * 0.6], 270, 90, fill=255, width=w)
        for dx in (-0.3, 0.1):
            d.arc([c + dx * r - r * 0.1, c - r, c + dx * r + r * 0.1, c - r * 0.4], 90, 270, fill=255, width=w)
    elif kind == "key":  # a ring, a shaft and two teeth
        d.ellipse([c - r, c - r * 0.35, c - r * 0.3, c + r * 0.35], outline=255, width=w)
        d.line([(c - r * 0.3, c), (c + r, c)], fill=255, width=w)
        for x in (0.6, 0.85):
            d.line([(c + r * x, c), (c + r * x, c + r * 0.3)], fill=255, width=w)
    elif kind == "glasses":  # two rims joined by a bridge, with arms
        for ex in (-1, 1):
            d.ellipse([c + ex * r * 0.55 - r * 0.4, c - r * 0.3, c + ex * r * 0.55 + r * 0.4, c + r * 0.3],
                      outline=255, width=w)
        d.arc([c - r * 0.2, c - r * 0.2, c + r * 0.2, c + r * 0.1], 200, 340, fill=255, width=w)
        d.line([(c - r * 0.95, c - r * 0.1), (c - r, c - r * 0.5)], fill=255, width=w)
        d.line([(c + r * 0.95, c - r * 0.1), (c + r, c - r * 0.5)], fill=255, width=w)
    elif kind == "car":  # a body, a cabin and two wheels
        d.rectangle([c - r, c - r * 0.1, c + r, c + r * 0.4], outline=255, width=w)
        d.line([(c - r * 0.5, c - r * 0.1), (c - r * 0.3, c - r * 0.5), (c + r * 0.4, c - r * 0.5),
                (c + r * 0.6, c - r * 0.1)], fill=255, width=w)
        for x in (-0.55, 0.55):
            d.ellipse([c + r * x - r * 0.22, c + r * 0.3, c + r * x + r * 0.22, c + r * 0.74], outline=255, width=w)
    elif kind == "boat":  # a hull and a sail on a mast
        d.polygon([(c - r, c + r * 0.4), (c + r, c + r * 0.4), (c + r * 0.6, c + r * 0.8), (c - r * 0.6, c + r * 0.8)],
                  outline=255, width=w)
        d.line([(c, c + r * 0.4), (c, c - r)], fill=255, width=w)
        d.polygon([(c + w, c - r * 0.9), (c + w, c + r * 0.25), (c + r * 0.7, c + r * 0.25)], outline=255, width=w)
    elif kind == "kite":  # a diamond with its cross and a tail with bows
        d.polygon([(c, c - r), (c + r * 0.5, c - r * 0.3), (c, c + r * 0.4), (c - r * 0.5, c - r * 0.3)], outline=255,
                  width=w)
        d.line([(c, c - r), (c, c + r * 0.4)], fill=255, width=max(2, w // 2))
        d.line([(c - r * 0.5, c - r * 0.3), (c + r * 0.5, c - r * 0.3)], fill=255, width=max(2, w // 2))
        tail = [(c + r * 0.25 * math.sin(k), c + r * 0.4 + k * r * 0.12) for k in range(6)]
        d.line(tail, fill=255, width=max(2, w // 2), joint="curve")
        for x, y in tail[2::2]:
            d.line([(x - r * 0.1, y - r * 0.06), (x + r * 0.1, y + r * 0.06)], fill=255, width=w)
    elif kind == "bell":  # a dome flaring to a rim, and a clapper
        d.line([(c - r * 0.8, c + r * 0.5), (c - r * 0.5, c + r * 0.2), (c - r * 0.45, c - r * 0.5), (c, c - r * 0.8),
                (c + r * 0.45, c - r * 0.5), (c + r * 0.5, c + r * 0.2), (c + r * 0.8, c + r * 0.5),
                (c - r * 0.8, c + r * 0.5)], fill=255, width=w, joint="curve")
        d.ellipse([c - r * 0.15, c + r * 0.55, c + r * 0.15, c + r * 0.85], fill=255)
    elif kind == "candle":  # a stick, a wick and a flame
        d.rectangle([c - r * 0.25, c - r * 0.2, c + r * 0.25, c + r], outline=255, width=w)
        d.line([(c, c - r * 0.2), (c, c - r * 0.4)], fill=255, width=max(2, w // 2))
        d.polygon([(c, c - r), (c + r * 0.18, c - r * 0.6), (c, c - r * 0.42), (c - r * 0.18, c - r * 0.6)],
                  outline=255, width=max(2, w // 2))
    else:
        raise ValueError(f"unknown doodle {kind!r}")
    return layer


def wild_non_digits(rng: np.random.Generator, letters_per_font: int = 8, doodles_per_kind: int = 20,
                    clothing: int = 200, fashion_test_images: np.ndarray | None = None) -> list[tuple[str, bytes]]:
    """[(kind, image bytes)]: handwritten letters and signs, doodles, photographed clothing."""
    out = []
    for font in handwriting_fonts():
        for ch in rng.choice(list(NON_DIGIT_LETTERS), letters_per_font, replace=False):
            out.append(("letter", _compose(rng, _text_layer(rng, str(ch), font, int(rng.integers(40, 160))))))
    for kind in DOODLES:
        for _ in range(doodles_per_kind):
            out.append((kind, _compose(rng, _doodle(rng, kind))))
    if fashion_test_images is not None:
        for i in rng.choice(len(fashion_test_images), clothing, replace=False):
            item = Image.fromarray(fashion_test_images[i]).resize((int(rng.integers(60, 200)),) * 2,
                                                                  Image.Resampling.BICUBIC)
            out.append(("clothing", _compose(rng, item)))
    return out


def later_doodles(rng: np.random.Generator, per_kind: int = 20) -> list[tuple[str, bytes]]:
    """[(kind, image bytes)]: doodles of the LATER_DOODLES families (see there)."""
    return [(kind, _compose(rng, _doodle(rng, kind))) for kind in LATER_DOODLES for _ in range(per_kind)]
