"""Selective answers (--max-error) and prediction sets (--sets, --coverage): the arithmetic on tables built by
hand, then the shipped model on real MNIST test digits, the CLI, and the server in process."""

import json
import math

import numpy as np
import pytest
import torch
from test_predict import png

from digitrec.cli import main
from digitrec.errors import DigitrecError
from digitrec.inference.calibration import Calibration
from digitrec.inference.predict import Predictor, predict_images
from digitrec.inference.reliability import conformal_p_true, coverage_at_error, risk_coverage, risk_table
from digitrec.meta import ModelMeta


def _hand_made(n: int = 1000, wrong_at: tuple[float, ...] = (0.3, 0.6, 0.9, 0.95)) -> tuple[torch.Tensor, ...]:
    """n answers with confidences spread over (0.5, 1), right except at the given confidences."""
    confidence = torch.linspace(0.5, 0.999, n, dtype=torch.float64)
    confidence = torch.cat([confidence, torch.tensor(wrong_at, dtype=torch.float64)])
    correct = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(len(wrong_at), dtype=torch.bool)])
    return confidence, correct


def test_the_risk_table_gives_the_lowest_threshold_within_each_error_budget():
    confidence, correct = _hand_made()
    cal = Calibration(risk=tuple(tuple(r) for r in risk_table(confidence, correct)))
    for max_error in (0.0, 0.001, 0.002, 0.0035, 0.01):
        t = cal.threshold_for(max_error)
        kept = confidence >= t
        assert (~correct[kept]).sum() <= max_error * kept.sum()
        # any lower threshold that keeps more answers breaks the budget
        lower = confidence[confidence < t].max() if (confidence < t).any() else None
        if lower is not None:
            kept = confidence >= lower
            assert (~correct[kept]).sum() > max_error * kept.sum()
    assert cal.threshold_for(0.01) == 0.0  # 4 wrong of 1004: everything may be kept
    floored = Calibration(risk=tuple(tuple(r) for r in risk_table(confidence, correct, floor=0.7)))
    assert floored.risk[0][0] == 0.7 and all(t >= 0.7 for t, _, _ in floored.risk)
    assert floored.threshold_for(0.01) == 0.7
    assert coverage_at_error(confidence, correct, 0.0) == pytest.approx((confidence > 0.95).double().mean().item())
    coverage, risk = risk_coverage(confidence, correct)
    assert coverage[-1] == 1 and risk[-1] == pytest.approx(4 / 1004)


def test_conformal_sets_reach_the_coverage_on_exchangeable_data():
    """Calibration and test drawn from the same distribution: split conformal sets cover at least the asked
    share (up to the sampling error), and are the smallest that do (LAC: probability above one threshold)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8000, 10, generator=g) * 3
    probs = logits.softmax(1)
    labels = torch.multinomial(probs, 1, generator=g)[:, 0]  # (its own generator: the same draw in any test order)
    calibrate, test = slice(0, 4000), slice(4000, 8000)
    cal = Calibration(conformal_p_true=tuple(conformal_p_true(probs[calibrate], labels[calibrate])),
                      conformal_n=4000)
    for coverage in (0.9, 0.95, 0.99):
        asked = cal.answering(coverage=coverage)
        sets = [asked.prediction_set(p) for p in probs[test].numpy()]
        covered = np.mean([y in s for s, y in zip(sets, labels[test].tolist())])
        assert coverage - 0.015 <= covered <= coverage + 0.02, (coverage, covered)  # (about 3 standard errors)
        assert all(list(s) == sorted(s, key=lambda d: -p[d]) for s, p in zip(sets[:50], probs[test].numpy()))


def test_the_set_threshold_is_the_conformal_order_statistic():
    """n = 19 validation digits whose true digit had probability 0.05, 0.10, ..., 0.95: at coverage C the set
    takes every digit at least as likely as the (n + 1 - ceil((n + 1) C))-th smallest of them (1 - the
    ceil((n + 1) C)-th smallest score); the probabilities are kept to 4 significant digits however small."""
    p_true = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    probs = torch.stack([p_true, 1 - p_true] + [torch.zeros(19, dtype=torch.float64)] * 8, 1)
    cal = Calibration(conformal_p_true=tuple(conformal_p_true(probs, torch.zeros(19, dtype=torch.long))),
                      conformal_n=19)
    assert len(cal.conformal_p_true) == 19 - math.ceil(20 * 0.9) + 1 == 2
    assert cal.set_threshold(0.9) == pytest.approx(0.10)  # ceil(20 * 0.9) = 18: the 2nd smallest p
    assert cal.set_threshold(0.95) == pytest.approx(0.05)  # 19: the smallest
    tiny = torch.tensor([[1.234567e-7, 1 - 1.234567e-7] + [0.0] * 8], dtype=torch.float64)
    assert conformal_p_true(tiny, torch.zeros(1, dtype=torch.long)) == [1.235e-7]


def test_answering_checks_its_inputs_and_names_the_parameter():
    cal = Calibration(risk=((0.0, 10, 1),), conformal_p_true=(0.5,) * 20, conformal_n=100)
    for kwargs, param in (({"max_error": 1.5}, "max_error"), ({"max_error": -0.1}, "max_error"),
                          ({"coverage": 0.5}, "coverage"), ({"coverage": 1.0}, "coverage"),
                          ({"coverage": 0.999}, "coverage")):  # 100 digits cannot tell 99.9%
        with pytest.raises(DigitrecError) as e:
            cal.answering(**kwargs)
        assert e.value.param == param and e.value.code == "invalid_input"
    for kwargs in ({"coverage": 0.99}, {"max_error": 0.01}):
        with pytest.raises(DigitrecError) as e:
            Calibration().answering(**kwargs)
        assert e.value.code == "not_calibrated"
    assert cal.answering().prediction_set(np.full(10, 0.1)) is None  # no sets asked


def test_the_tables_travel_in_the_metadata():
    cal = Calibration(0.5, 0.2, 0.9, risk=((0.2, 100, 2), (0.7, 90, 0)),
                      conformal_p_true=tuple(0.05 * k for k in range(1, 11)), conformal_n=100)
    again = Calibration.from_meta(ModelMeta.from_dict({"calibration": json.loads(json.dumps(cal.to_dict()))}))
    assert again == cal
    assert "set_at_least" not in cal.to_dict() and cal.answering(coverage=0.9).to_dict() == cal.to_dict()
    for bad in ({"risk": [[0.1, "x"]]}, {"conformal": {"n": 10, "p_true": [0.5, 0.1]}},
                {"conformal": {"n": 1, "p_true": [0.1, 0.5]}}):
        with pytest.raises(DigitrecError) as e:
            Calibration.from_meta(ModelMeta.from_dict({"calibration": bad}))
        assert e.value.code == "invalid_model", bad


# --- the shipped model on real MNIST test digits -------------------------------------------------------------

@pytest.fixture(scope="module")
def test_probabilities(mnist_dir):
    from digitrec.data.datasets import load_split, to_float

    test = load_split("mnist", mnist_dir, train=False)
    predictor = Predictor()
    probs = predictor.probabilities(list(to_float(test.images).numpy()[:, 0]))
    return predictor, probs, test.labels.numpy()


@pytest.mark.mnist
def test_sets_of_the_shipped_model_cover_mnist_test_as_asked(test_probabilities):
    predictor, probs, labels = test_probabilities
    for coverage in (0.99, 0.999):
        asked = predictor.calibration.answering(coverage=coverage)
        sets = [asked.prediction_set(p) for p in probs]
        covered = np.mean([y in s for s, y in zip(sets, labels)])
        assert abs(covered - coverage) <= 0.01, (coverage, covered)
        assert 0.9 <= np.mean([len(s) for s in sets]) <= 1.2


@pytest.mark.mnist
def test_max_error_keeps_about_that_share_wrong_on_mnist_test(test_probabilities):
    """The threshold is chosen on the validation digits; on the test set (other writers) the share wrong among
    the answers kept stays within a small multiple of the asked budget, and most answers are kept."""
    predictor, probs, labels = test_probabilities
    for max_error, allowed in ((0.001, 0.002), (0.01, 0.01)):
        threshold = predictor.calibration.threshold_for(max_error)
        kept = probs.max(1) >= threshold
        wrong = np.mean(probs[kept].argmax(1) != labels[kept])
        assert wrong <= allowed and kept.mean() >= 0.98, (max_error, wrong, kept.mean())
    strict, loose = (predictor.calibration.threshold_for(e) for e in (0.0005, 0.01))
    assert strict > loose


@pytest.mark.mnist
def test_cli_predict_and_read_with_sets_and_max_error(tmp_path, mnist_dir, capsys):
    from digitrec.data.datasets import load_split

    test = load_split("mnist", mnist_dir, train=False)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png(test.images[i].numpy()))
    assert main(["predict", *map(str, paths), "--sets", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["set"] for r in records] == [[int(test.labels[i])] for i in range(4)]
    assert main(["predict", str(paths[0]), "--coverage", "0.999", "--max-error", "0.01"]) == 0
    assert "set: " in capsys.readouterr().out
    assert main(["read", str(paths[0]), "--sets", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digits"][0]["set"] == [int(test.labels[0])]
    assert main(["predict", str(paths[0]), "--coverage", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--coverage" in err and "0.9" in err
    assert main(["read", str(paths[0]), "--max-error", "2"]) == 2
    assert "--max-error" in capsys.readouterr().err


@pytest.mark.mnist
def test_max_error_moves_the_verdicts(test_probabilities, mnist_dir):
    """An answer is `uncertain` exactly when its confidence is under the threshold of the budget asked (and
    not under the not-a-digit one); a budget of 0 flags answers that a budget of 1% lets through."""
    from digitrec.data.datasets import load_split

    predictor, probs, _ = test_probabilities
    cal = predictor.calibration
    strict, loose = cal.threshold_for(0.0), cal.threshold_for(0.01)
    between = np.flatnonzero((probs.max(1) < strict) & (probs.max(1) >= max(loose, cal.not_a_digit_below) + 0.05))
    assert len(between), "no test digit between the two thresholds"
    test = load_split("mnist", mnist_dir, train=False)
    items = [(str(i), png(test.images[i].numpy())) for i in between[:8]]
    tight = predict_images(items, predictor.answering(max_error=0.0))
    wide = predict_images(items, predictor.answering(max_error=0.01))
    for t, w in zip(tight, wide):
        assert t.confidence == w.confidence
        assert (t.verdict == "uncertain") == (cal.not_a_digit_below <= t.confidence < strict)
        assert (w.verdict == "digit") == (w.confidence >= max(loose, cal.not_a_digit_below))
    assert sum(t.verdict != w.verdict for t, w in zip(tight, wide)) >= 1
    assert all(r.set is None for r in predict_images(items[:2], predictor))
