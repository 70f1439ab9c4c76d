"""`digitrec distill`: a student learns from a teacher's soft targets.  The teacher is the shipped model (the `wide`
model shipped before: 99.4% on the small test split); the student is the small `fast` network, one short epoch on the small data set."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import run_cli

from digitrec.cli import main
from digitrec.data.datasets import load_split, to_float
from digitrec.files import sha256_file
from digitrec.inference.backends import logits_of
from digitrec.inference.predict import default_model_path
from digitrec.modelfile import load_model, read_meta, save_model
from digitrec.training.distill import soft_target_loss
from digitrec.training.train import train

# Labels get no weight (distill_weight=1): whatever the student gets right, it learnt from the teacher.
STUDENT = ["--recipe", "fast", "--set", "validation=0", "--set", "batch_size=32", "--set", "distill_weight=1"]


@pytest.fixture(scope="module")
def teacher():
    return default_model_path()


@pytest.fixture(scope="module")
def distilled(small_data, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "run"
    result = run_cli("distill", str(teacher), *STUDENT, "--data-dir", str(small_data), "--out", str(out),
                     "--device", "cpu", "--progress", "lines", "--seed", "1")
    assert result.returncode == 0, result.stderr
    return out


def _other_model(teacher, path, **changes):
    """The teacher's weights saved again with changed metadata: another file, another SHA-256."""
    model, meta = load_model(teacher)
    return save_model(path, model, replace(meta, **changes))


def _one_line_exit_2(args, capsys) -> str:
    assert main(args) == 2  # in-process, as tests/test_recipes.py does: test_cli runs the real script
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_distill_writes_a_student_that_names_its_teacher(distilled, teacher):
    recorded = {"file": "default.safetensors", "sha256": sha256_file(teacher)}
    meta = read_meta(distilled / "model.safetensors")
    assert meta.teacher == recorded and meta.architecture == "fast"
    config = json.loads((distilled / "config.json").read_text())
    assert config["teacher"] == recorded
    assert config["recipe"]["distill_weight"] == 1.0 and config["recipe"]["distill_temperature"] == 4.0


def test_the_student_agrees_with_its_teacher_without_seeing_a_label(distilled, teacher, small_data):
    test = load_split("mnist", small_data, False)
    images = to_float(test.images)
    student, _ = load_model(distilled)
    teacher_net, _ = load_model(teacher)
    agreement = (logits_of(student, images).argmax(1) == logits_of(teacher_net, images).argmax(1)).float().mean()
    # 93% measured with the `wide` teacher shipped before; with the soft targets ignored (a uniform teacher) or the loss's sign flipped: 7-10%.
    assert agreement >= 0.85, agreement


def test_soft_target_loss_is_zero_only_when_the_student_matches_the_teacher():
    teacher_logits = torch.tensor([[4.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert soft_target_loss(teacher_logits, teacher_logits, 4.0).item() == pytest.approx(0, abs=1e-6)
    assert soft_target_loss(teacher_logits + 3.0, teacher_logits, 4.0).item() == pytest.approx(0, abs=1e-6)
    student = torch.zeros(2, 3)
    p = (teacher_logits / 2).softmax(1)
    expected = (p * (p.log() - (student / 2).log_softmax(1))).sum(1).mean() * 4  # KL(p || q) T^2, per image
    assert soft_target_loss(student, teacher_logits, 2.0).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("setting, message", [
    ("distill_temperature=0", "recipe field distill_temperature must be positive, not 0.0"),
    ("distill_temperature=-2", "recipe field distill_temperature must be positive"),
    ("distill_weight=1.5", "recipe field distill_weight must be in [0, 1], not 1.5"),
    ("distill_weight=-0.1", "recipe field distill_weight must be in [0, 1]"),
])
def test_bad_distill_settings_are_one_line_and_exit_2(setting, message, teacher, tmp_path, capsys):
    err = _one_line_exit_2(["distill", str(teacher), "--set", setting, "--out", str(tmp_path / "run"),
                            "--data-dir", str(tmp_path)], capsys)
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_distill_needs_a_run_folder(teacher, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "distill needs --out RUN_DIR" in _one_line_exit_2(["distill", str(teacher)], capsys)
    assert not (tmp_path / "runs").exists()


def test_a_teacher_of_another_data_set_or_no_teacher_is_one_line(teacher, small_data, tmp_path, capsys):
    fashion = _other_model(teacher, tmp_path / "fashion" / "model.safetensors", dataset="fashion-mnist")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model")
    for bad, message in [(fashion, "was trained on fashion-mnist, not mnist"),
                         (tmp_path / "missing.safetensors", "not found"),
                         (garbage, "is not a digitrec model")]:
        err = _one_line_exit_2(["distill", str(bad), *STUDENT, "--data-dir", str(small_data),
                                "--out", str(tmp_path / "run"), "--device", "cpu"], capsys)
        assert message in err, err
        assert not (tmp_path / "run").exists()


def test_resume_needs_the_same_teacher(distilled, teacher, small_data, tmp_path, capsys):
    other = _other_model(teacher, tmp_path / "other.safetensors", name="another teacher")
    err = _one_line_exit_2(["distill", str(other), "--resume", str(distilled), "--data-dir", str(small_data),
                            "--device", "cpu"], capsys)
    assert "is distilled from default.safetensors" in err and "resume it with the same teacher" in err, err
    err = _one_line_exit_2(["train", "--resume", str(distilled), "--data-dir", str(small_data), "--device", "cpu"],
                           capsys)
    assert f"digitrec distill default.safetensors --resume {distilled}" in err, err
    # The same teacher (by its content, wherever it lies) is accepted: the finished run is only calibrated again.
    copy = tmp_path / "copy" / "default.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(teacher.read_bytes())
    result = train(None, data_dir=small_data, out=distilled, resume=True, device="cpu", teacher=copy,
                   log=lambda line: None)
    assert result.meta.teacher["sha256"] == sha256_file(teacher)
