"""benchmarks/read.py (`make bench-read`): its digitrec part in process on a few pages of each set, no peers; a
peer that cannot be imported is reported as not installed, never a crash."""

import re

from benchmarks import read as bench


def test_normalising_makes_answers_comparable():
    assert bench.normalise("  12/04/2026   555-0142 \n\n 3.50\n") == "12/04/2026  555-0142\n3.50"
    assert bench.digits_of("12/04  3,5\n7?") == "120435" + "7"


def test_the_benchmark_prints_and_returns_digitrecs_exact_match(mnist_dir, capsys, monkeypatch):
    def not_there():
        raise ImportError("No module named 'nothing'")

    monkeypatch.setitem(bench.STARTS, "tesseract", not_there)
    results = bench.main(["--data-dir", str(mnist_dir), "--count", "4", "--sheets", "3", "--peers", "tesseract"])
    out = capsys.readouterr().out

    assert results["tesseract"] == {"missing": "not installed"}
    figures = results["digitrec"]["sets"]
    assert set(figures) == {"sheets", "separators", "touching", "plain"}
    for key, m in figures.items():
        assert 0 <= m["exact"] <= m["digits"] <= 1 and m["pages_per_s"] > 0
        assert len(m["answers"]) == (3 if key == "sheets" else 4)
    plain = figures["plain"]
    row = next(line for line in out.splitlines() if line.startswith("| plain spaced numbers (4) |"))
    assert re.search(rf"\| {100 * plain['exact']:.1f}% / {100 * plain['digits']:.1f}% \| not installed \|$", row)
    assert plain["exact"] >= 0.5  # the shipped model reads spaced MNIST digits (a regression would show here)


def test_the_peers_boxes_are_grouped_into_lines_along_a_tilt():
    def box(x0, y0, x1, y1, rise=0.0):  # corners from the top left, clockwise; the right end `rise` px higher
        return [[x0, y0], [x1, y0 - rise], [x1, y1 - rise], [x0, y1]]

    boxes = [(box(1000, 228, 1200, 277, 10), "80.14"),   # the second number of line 2, higher than its start
             (box(200, 180, 490, 245, 15), "047-7454"),  # line 1
             (box(220, 268, 675, 320, 25), "23/08/3446")]
    assert bench.lines_of(boxes) == "047-7454\n23/08/3446  80.14"
