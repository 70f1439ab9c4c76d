import json

import pytest

from digitrec.cli import main
from digitrec.errors import DigitrecError
from digitrec.models import build_model, count_parameters
from digitrec.training.ablate import BASE, VARIANTS, ablate, format_table, summarize, welch_p

quiet = lambda line: None


def test_statistics_match_textbook_values():
    s = summarize([98.0, 99.0, 100.0])
    assert s["mean"] == 99.0 and s["std"] == pytest.approx(1.0)
    assert s["ci95"] == pytest.approx([99.0 - 2.4843, 99.0 + 2.4843], abs=1e-3)  # t(0.975, 2) = 4.303 / sqrt(3)
    assert summarize([97.5])["ci95"] is None
    # Welch's t-test: scipy's ttest_ind(equal_var=False); clearly apart -> small p, the same -> large p
    assert welch_p([1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9, 2.05]) < 1e-4
    assert welch_p([1.0, 1.1, 0.9], [1.05, 0.95, 1.0]) > 0.5
    assert welch_p([1.0], [2.0, 3.0]) is None


def test_variants_are_data_each_removing_one_claimed_improvement():
    assert set(VARIANTS) == {"seed", "no-conv3", "no-batchnorm", "no-dropout", "constant-lr"}
    assert BASE.validation == 5000 and not BASE.test_each_epoch and BASE.model == "seed"
    params = {n: count_parameters(build_model(BASE.with_overrides(**v.fields).model)) for n, v in VARIANTS.items()}
    assert params == {"seed": 37642, "no-conv3": 28938,  # 416 + 12,832 + Linear(1568 -> 10) = 15,690 + 13,248
                      "no-batchnorm": 37514, "no-dropout": 37642, "constant-lr": 37642}
    assert BASE.with_overrides(**VARIANTS["constant-lr"].fields).schedule == "constant"


@pytest.mark.parametrize("kwargs, message", [
    ({"variants": ["seed", "no-attention"]}, "unknown variant 'no-attention'"),
    ({"seeds": 0}, "seeds must be a whole number of at least 1"),
    ({"base": BASE.with_overrides(validation=0)}, "validation must be at least 1"),
])
def test_bad_arguments_are_refused_before_training(kwargs, message, tmp_path):
    with pytest.raises(DigitrecError, match=message):
        ablate(tmp_path / "out", data_dir=tmp_path, log=quiet, **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.mnist
@pytest.mark.slow
def test_a_short_ablation_runs_resumes_and_reports(small_data, tmp_path, capsys):
    out = tmp_path / "ablation"
    args = ["ablate", "--data-dir", str(small_data), "--out", str(out), "--device", "cpu", "--progress", "lines",
            "--epochs", "1", "--seeds", "2", "--variants", "seed,no-conv3", "--set", "validation=500",
            "--tensorboard", "--set", "batch_size=128"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "run 1/4: seed, seed 0" in captured.out and "run 2/4: no-conv3, seed 0" in captured.out
    assert "| no-conv3 |" in captured.out and "Verdict per claim" in captured.out
    report = json.loads((out / "ablation.json").read_text())
    seed, no_conv3 = report["variants"]
    assert [v["name"] for v in report["variants"]] == ["seed", "no-conv3"]
    assert (seed["parameters"], no_conv3["parameters"]) == (37642, 28938)
    assert report["validation_images"] == 500 and report["base_recipe"]["batch_size"] == 128  # --set got there
    for v in (seed, no_conv3):
        assert [r["seed"] for r in v["runs"]] == [0, 1] and v["validation"]["n"] == 2
        assert all(50 < r["val_accuracy"] <= 100 and 50 < r["test_accuracy"] <= 100 for r in v["runs"])
    assert no_conv3["diff_vs_seed"] == pytest.approx(no_conv3["validation"]["mean"] - seed["validation"]["mean"])
    config = json.loads((out / "no-conv3" / "seed-1" / "config.json").read_text())
    assert config["recipe"]["model"] == "seed-no-conv3" and config["seed"] == 1 and config["recipe"]["epochs"] == 1
    row = json.loads((out / "seed" / "seed-0" / "metrics.jsonl").read_text())
    assert "val_accuracy" in row and "test_accuracy" in row  # one epoch: validated, and tested once at the end
    assert all(list(run.glob("events.out.tfevents.*")) for run in out.glob("*/seed-*"))  # --tensorboard
    for name in ("ablation.png", "curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "ablation.md").read_text().strip() == format_table(report)

    # Again: every run is read back, none is trained again.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/model.safetensors")}
    assert len(stamps) == 4
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished earlier") == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((out / "ablation.json").read_text())["variants"][1]["runs"] == no_conv3["runs"]

    # Other settings in the same folder would mix two experiments: refused in one line.
    assert main([*args[:-1], "batch_size=64"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err
