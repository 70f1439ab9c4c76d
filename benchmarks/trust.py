"""How far to trust a model (`make bench-trust`): calibration on MNIST's test set, verdicts on digits and
non-digits it never trained on (benchmarks/wild.py), lines of handwritten digits, the project's
people's-images set (tests/synth.py, MNIST test digits as photos, scans and canvases), and the shifted sets
(benchmarks/shifted.py: validation digits and non-digits made by processes training never imitated).

    python -m benchmarks.trust [--model M] [--data-dir data] [--json out.json] [--picture out.png] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine
from benchmarks.shifted import (
    DIGIT_SETS,
    DOODLE_KINDS,
    SEEDS,
    doodles_other_procedure,
    signs_and_letters_handwritten,
    validation_digits,
)
from benchmarks.wild import DEBIAN_FONTS, handwriting_fonts, later_doodles, wild_digits, wild_lines, wild_non_digits
from digitrec.data.datasets import load_split, to_float
from digitrec.analysis.evaluate import selective_report
from digitrec.errors import DigitrecError
from digitrec.inference.backends import evaluate_split, predictive_model
from digitrec.inference.predict import Predictor, default_model_path, predict_images, read_images
from digitrec.inference.records import as_dicts
from digitrec.inference.reliability import ECE_BINS, calibration_report
from digitrec.modelfile import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # for synth (imported in main)


def share(records: list[dict], verdicts: set[str]) -> float:
    return sum(r["verdict"] in verdicts for r in records) / max(1, len(records))


def non_digit_figures(kinds: list[str], records: list[dict]) -> dict:
    """How non-digits were answered: overall and per kind (kinds[i] is records[i]'s)."""
    by_kind = collections.defaultdict(list)
    for kind, r in zip(kinds, records):
        by_kind[kind].append(r)
    return {"n": len(records), "not_a_digit": share(records, {"not_a_digit"}),
            "not_a_digit_or_uncertain": share(records, {"not_a_digit", "uncertain", "no_ink"}),
            "confident_digit": share(records, {"digit"}),
            "per_kind": {k: {"n": len(v), "confident_digit": share(v, {"digit"}),
                             "not_a_digit": share(v, {"not_a_digit"})} for k, v in sorted(by_kind.items())}}


GALLERY_TITLE = "Digits in handwriting fonts (top) and things that are not digits (bottom), as digitrec answers"
# What the trust issue allows (printed beside the shifted sets' rows): on real digits, top answer right, not
# answered as a digit (uncertain, not a digit, no ink, error), answered as a digit and wrong, called not a digit;
# on non-digits, answered as a confident digit.
SHIFT_TARGETS = {"right": (">=", 0.985), "not_answered": ("<=", 0.03), "answered_wrong": ("<=", 0.003),
                 "not_a_digit": ("<=", 0.005), "confident_digit": ("<=", 0.03)}
DIGIT_TARGETS = ("right", "not_answered", "answered_wrong", "not_a_digit")
SET_COVERAGE = 0.99  # the prediction sets reported on every digit set (`--sets`' default)


def draw_gallery(items: list[tuple[bytes, dict]], path: str, title: str = GALLERY_TITLE) -> None:
    """Images as given, each titled with what digitrec answered (green digit, orange uncertain, red not a digit)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    colours = {"digit": "green", "uncertain": "darkorange", "not_a_digit": "red", "no_ink": "grey", "error": "grey"}
    cols = 12
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (data, r) in zip(axes.flat, items):
        ax.imshow(Image.open(io.BytesIO(data)).convert("RGB"))
        said = {"digit": f"{r['digit']}", "uncertain": f"{r['digit']}?", "not_a_digit": "not a digit"}.get(
            r["verdict"], r["verdict"])
        ax.set_title(f"{said} {r['confidence']:.2f}", fontsize=8, color=colours[r["verdict"]])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def ece_of(confidences: list[float], correct: list[bool], bins: int = ECE_BINS) -> float:
    """Expected calibration error from each answer's confidence and whether it was right: the equal-width bins
    of reliability.expected_calibration_error (the same figure as from the probabilities, whose top one is the
    confidence and whose argmax is the answer)."""
    c, ok = np.asarray(confidences, float), np.asarray(correct, float)
    index = np.minimum((c * bins).astype(int), bins - 1)
    return float(sum((index == b).sum() * abs(ok[index == b].mean() - c[index == b].mean())
                     for b in range(bins) if (index == b).any()) / max(1, len(c)))


def digit_set_figures(records: list[dict], labels: list[int]) -> dict:
    """One shifted digit set's row: top answer right; not answered as a digit (uncertain, not a digit, no ink,
    error); answered as a digit and wrong; called not a digit; ECE over the images that got probabilities."""
    top = [r["topk"][0][0] if r["topk"] else None for r in records]
    right = [t == y for t, y in zip(top, labels)]
    had = [i for i, r in enumerate(records) if r["topk"]]
    row = {"n": len(records), "right": float(np.mean(right)),
           "not_answered": share(records, {"uncertain", "not_a_digit", "no_ink", "error"}),
           "answered_wrong": float(np.mean([r["verdict"] == "digit" and r["digit"] != y
                                            for r, y in zip(records, labels)])),
           "not_a_digit": share(records, {"not_a_digit"}),
           "ece": ece_of([records[i]["confidence"] for i in had], [right[i] for i in had])}
    if any("set" in r for r in records):  # prediction sets at SET_COVERAGE: how often they hold the digit
        row["set_coverage"] = float(np.mean([y in r.get("set", []) for r, y in zip(records, labels)]))
        row["set_size"] = float(np.mean([len(r.get("set", [])) for r in records]))
    return row


def _target(key: str) -> str:
    sign, value = SHIFT_TARGETS[key]
    return f"{sign}{value:.1%}"


def _misses(row: dict, keys: tuple[str, ...]) -> str:
    """Which of the targets `keys` the row misses."""
    missed = [k for k in keys if (row[k] < SHIFT_TARGETS[k][1] if SHIFT_TARGETS[k][0] == ">=" else
                                  row[k] > SHIFT_TARGETS[k][1])]
    return "misses: " + ", ".join(missed) if missed else "meets all"


def shifted_sets(predictor: Predictor, data_dir: str, quick: bool) -> tuple[dict, list]:
    """The shifted sets' figures (benchmarks/shifted.py), printed as rows, and four images of each set with
    their answers for the gallery."""
    images, labels = validation_digits(data_dir)
    n = 40 if quick else 300
    with_sets = predictor.answering(coverage=SET_COVERAGE) if predictor.calibration.conformal_p_true else predictor
    out: dict = {"targets": {k: list(v) for k, v in SHIFT_TARGETS.items()}, "digits": {}, "non_digits": {}}
    gallery, every_record, every_label = [], [], []
    print(f"\nshifted digit sets (MNIST validation digits, images made by processes training never imitated):\n"
          f"  {'set':<22}{'n':>5}{'right':>9}{'not answ.':>11}{'ans. wrong':>12}{'not digit':>11}{'ECE':>8}"
          f"{'set cov.':>10}{'set size':>9}\n"
          f"  {'target':<22}{'':>5}{_target('right'):>9}{_target('not_answered'):>11}"
          f"{_target('answered_wrong'):>12}{_target('not_a_digit'):>11}")
    for name, make in [*DIGIT_SETS.items(), ("shifted digits (all)", None)]:
        if make is None:
            records, ys = every_record, every_label
        else:
            items = make(np.random.default_rng(SEEDS[name]), images, labels, n)
            records = as_dicts(predict_images([(f"{name}-{k}", data) for k, (_, data) in enumerate(items)],
                                              with_sets))
            ys = [y for y, _ in items]
            every_record, every_label = every_record + records, every_label + ys
            gallery += [(data, r) for (_, data), r in list(zip(items, records))[:4]]
        row = out["digits"][name] = digit_set_figures(records, ys)
        sets = f"{row['set_coverage']:>10.2%}{row['set_size']:>9.3f}" if "set_size" in row else ""
        print(f"  {name:<22}{row['n']:>5}{row['right']:>9.2%}{row['not_answered']:>11.2%}"
              f"{row['answered_wrong']:>12.2%}{row['not_a_digit']:>11.2%}{row['ece']:>8.2%}{sets}  "
              f"{_misses(row, DIGIT_TARGETS)}")
    print(f"shifted non-digit sets (target: confident digit {_target('confident_digit')}):")
    for name, items in (("signs_and_letters_handwritten", signs_and_letters_handwritten(
            np.random.default_rng(SEEDS["signs_and_letters_handwritten"]), n)),
            ("doodles_other_procedure", doodles_other_procedure(
                np.random.default_rng(SEEDS["doodles_other_procedure"]), n // len(DOODLE_KINDS)))):
        records = as_dicts(predict_images([(kind, data) for kind, data in items], predictor))
        gallery += [(data, r) for (_, data), r in list(zip(items, records))[::max(1, len(items) // 6)][:6]]
        answers = collections.Counter(r["digit"] for r in records if r["verdict"] == "digit").most_common(5)
        row = out["non_digits"][name] = {
            "n": len(records), "confident_digit": share(records, {"digit"}),
            "not_a_digit": share(records, {"not_a_digit"}), "top_confident_answers": [list(a) for a in answers],
            "per_kind": non_digit_figures([kind for kind, _ in items], records)["per_kind"]}  # per glyph, per doodle
        print(f"  {name} ({row['n']}): confident digit {row['confident_digit']:.1%}, not a digit "
              f"{row['not_a_digit']:.1%}; most common confident answers: "
              f"{', '.join(f'{d} ({c})' for d, c in answers) or 'none'}  {_misses(row, ('confident_digit',))}")
    return out, gallery


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--quick", action="store_true", help="smaller sets (a smoke run)")
    p.add_argument("--picture", help="write a gallery of wild digits and non-digits with the verdicts here")
    a = p.parse_args()
    if not handwriting_fonts():
        raise SystemExit(f"no handwriting fonts: apt-get install {DEBIAN_FONTS}")
    started = time.perf_counter()
    print(f"machine: {machine()}\nmodel: {a.model}")
    predictor = Predictor(a.model)
    print(f"calibration: {predictor.calibration}")
    figures: dict = {"model": a.model}

    # 1. MNIST test set: accuracy and calibration of the model as it predicts.
    test = load_split("mnist", a.data_dir, train=False)
    if predictor.backend == "onnxruntime":  # an exported graph (e.g. int8): its runtime, as it serves
        probabilities = torch.from_numpy(predictor.probabilities(list(to_float(test.images).numpy()[:, 0])))
        accuracy = 100.0 * (probabilities.argmax(1) == test.labels).sum().item() / len(test.labels)
    else:
        network, meta = load_model(a.model)
        ev = evaluate_split(predictive_model(network, meta), test)
        probabilities, accuracy = ev.probabilities, ev.accuracy
    cal = calibration_report(probabilities, test.labels)
    top = probabilities.max(1).values
    figures["mnist_test"] = {"accuracy": accuracy, **cal,
                             "flagged": float((top < predictor.calibration.uncertain_below).double().mean()),
                             "not_a_digit": float((top < predictor.calibration.not_a_digit_below).double().mean())}
    figures["mnist_test"].update(selective_report(probabilities, test.labels, predictor.calibration,
                                                    (0.99, 0.999)))
    m = figures["mnist_test"]
    print(f"\nMNIST test (10,000): accuracy {m['accuracy']:.2f}%, ECE {m['ece']:.2%}, NLL {m['nll']:.4f}, Brier "
          f"{m['brier']:.4f}, mean confidence {m['mean_confidence']:.2%}; flagged {m['flagged']:.2%}, "
          f"not a digit {m['not_a_digit']:.2%}")
    for key, row in m.get("sets", {}).items():
        print(f"  prediction sets at coverage {key}: hold the digit {row['coverage']:.2%}, {row['mean_size']:.3f} "
              f"digits a set ({row['empty']:.2%} empty, {row['several']:.2%} of two or more)")
    for key, row in m.get("max_error", {}).items():
        print(f"  --max-error {key}: {row['kept']:.2%} answered, {row['wrong_among_kept']:.3%} of them wrong")

    rng = np.random.default_rng(2026)
    # 2. Digits in the wild (handwriting fonts).
    digits = wild_digits(rng, 2 if a.quick else 6)
    records = as_dicts(predict_images([(font, data) for _, font, data in digits], predictor))
    gallery = [(data, r) for (_, _, data), r in zip(digits[::37], records[::37])][:24]
    labels = [label for label, _, _ in digits]
    right = [r["digit"] == y for r, y in zip(records, labels)]
    per_font = collections.defaultdict(list)
    for (label, font, _), r in zip(digits, records):
        per_font[font].append(r["digit"] == label)
    figures["wild_digits"] = {
        "n": len(records), "fonts": len(per_font), "accuracy": float(np.mean(right)),
        "accuracy_of_digit_verdicts": float(np.mean([ok for ok, r in zip(right, records) if r["verdict"] == "digit"]
                                                    or [0])),
        "flagged": share(records, {"uncertain", "not_a_digit", "no_ink", "error"}),
        "not_a_digit": share(records, {"not_a_digit"}),
        "per_font": {f: float(np.mean(v)) for f, v in sorted(per_font.items())}}
    w = figures["wild_digits"]
    print(f"\ndigits in handwriting fonts ({w['n']} images, {w['fonts']} fonts): top answer right {w['accuracy']:.2%}; "
          f"right when the verdict is `digit` {w['accuracy_of_digit_verdicts']:.2%}; flagged uncertain or not a "
          f"digit {w['flagged']:.2%}; called not a digit {w['not_a_digit']:.2%}")
    print("  per font: " + ", ".join(f"{f.rsplit('.', 1)[0]} {v:.0%}" for f, v in w["per_font"].items()))

    # 3. Non-digits.
    fashion = load_split("fashion-mnist", a.data_dir, train=False).images.numpy()
    others = wild_non_digits(rng, 3 if a.quick else 8, 6 if a.quick else 20, 60 if a.quick else 200, fashion)
    records = as_dicts(predict_images([(kind, data) for kind, data in others], predictor))
    gallery += [(data, r) for (_, data), r in zip(others[::11], records[::11])][:24]
    figures["non_digits"] = non_digit_figures(
        ["doodle" if kind not in ("letter", "clothing") else kind for kind, _ in others], records)
    n = figures["non_digits"]
    print(f"\nnon-digits ({n['n']}: handwritten letters, doodles, clothing photos): not a digit "
          f"{n['not_a_digit']:.1%}, "
          f"not a digit or uncertain {n['not_a_digit_or_uncertain']:.1%}, confident digit {n['confident_digit']:.1%}")
    print("  per kind: " + ", ".join(f"{k} (n={v['n']}) confident {v['confident_digit']:.0%} / not a digit "
                                     f"{v['not_a_digit']:.0%}" for k, v in n["per_kind"].items()))

    # 3b. Doodles of families written after the training outliers' icons (own seed: the sets above and below
    # stay the same images as before they were added).
    later = later_doodles(np.random.default_rng(2027), 5 if a.quick else 20)
    records = as_dicts(predict_images([(kind, data) for kind, data in later], predictor))
    figures["later_doodles"] = non_digit_figures([kind for kind, _ in later], records)
    d = figures["later_doodles"]
    print(f"doodles of families never drawn in training code ({d['n']}): not a digit {d['not_a_digit']:.1%}, not a "
          f"digit or uncertain {d['not_a_digit_or_uncertain']:.1%}, confident digit {d['confident_digit']:.1%}")
    print("  per kind, confident: " + ", ".join(f"{k} {v['confident_digit']:.0%}" for k, v in d["per_kind"].items()))

    # 4. Lines of handwritten-font digits; then lines whose digits touch (own seed: added later, the sets above
    # stay the same images).
    for key, what, lines in (
            ("wild_lines", "lines of 3-8 handwriting-font digits", wild_lines(rng, 40 if a.quick else 150)),
            ("wild_touching_lines", "lines of 3-8 touching handwriting-font digits",
             wild_lines(np.random.default_rng(2028), 40 if a.quick else 150, touching=True))):
        read = as_dicts(read_images([(font, data) for _, font, data in lines], predictor))
        exact = [r["text"] == text for (text, _, _), r in zip(lines, read)]
        count = [len(r["digits"]) == len(text) for (text, _, _), r in zip(lines, read)]
        figures[key] = {"n": len(lines), "exact": float(np.mean(exact)), "right_count": float(np.mean(count))}
        print(f"\n{what} ({len(lines)}): read exactly {np.mean(exact):.1%}, right number of digits "
              f"{np.mean(count):.1%}")

    # 5. People's images made from MNIST test digits (the test suite's kinds).
    from synth import variants  # the people's-images set of the test suite (tests/, on sys.path above)

    images, labels = [], []
    pick = np.random.default_rng(7).choice(len(test), 60 if a.quick else 300, replace=False)
    for i in pick:
        for kind, data in variants(test.images[i].numpy(), rng).items():
            images.append((kind, data))
            labels.append(int(test.labels[i]))
    records = as_dicts(predict_images(images, predictor))
    figures["people_images"] = {"n": len(records),
                                "accuracy": float(np.mean([r["digit"] == y for r, y in zip(records, labels)])),
                                "flagged": share(records, {"uncertain", "not_a_digit", "no_ink", "error"}),
                                "not_a_digit": share(records, {"not_a_digit"})}
    q = figures["people_images"]
    print(f"\npeople's images of MNIST test digits ({q['n']}, 11 kinds): right {q['accuracy']:.2%}, flagged "
          f"{q['flagged']:.2%}, not a digit {q['not_a_digit']:.2%}")

    # 6. The shifted sets (own seeds: the sets above stay the same images).
    figures["shifted"], shifted_gallery = shifted_sets(predictor, a.data_dir, a.quick)
    if a.picture:
        draw_gallery(gallery, a.picture)
        picture = Path(a.picture)
        draw_gallery(shifted_gallery, str(picture.with_name(f"{picture.stem}-shifted{picture.suffix or '.png'}")),
                     "Shifted sets (benchmarks/shifted.py): four of each digit set, six of each non-digit set")
    figures["seconds"] = time.perf_counter() - started
    print(f"\n{figures['seconds']:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as e:  # a missing or unreadable model: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
