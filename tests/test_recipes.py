import json
from dataclasses import dataclass

import pytest
from conftest import run_cli

from digitrec import models
from digitrec.cli import main
from digitrec.errors import DigitrecError
from digitrec.training import train
from digitrec.training.recipes import MODEL_NAMES, OPTIMIZER_NAMES, RECIPES, SCHEDULE_NAMES, Augment, Recipe, get_recipe

SEED = RECIPES["seed"]


def test_the_allowed_names_match_the_tables_they_stand_for():
    assert set(MODEL_NAMES) == set(models.MODELS)
    assert set(OPTIMIZER_NAMES) == set(train.OPTIMIZERS)
    assert set(SCHEDULE_NAMES) == set(train.SCHEDULES)


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_survives_a_trip_through_config_json(name):
    saved = json.loads(json.dumps(RECIPES[name].to_dict()))
    assert Recipe.from_dict(saved) == RECIPES[name]


@pytest.mark.parametrize("fields, message", [
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"batch_size": -8}, "batch_size must be at least 1"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"epochs": True}, "epochs must be an integer"),
    ({"tta": 1}, "tta must be true or false"),
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'; choose from adam, adamw, sgd"),
    ({"schedule": "cosine"}, "unknown schedule 'cosine'"),
    ({"model": "vit"}, "unknown model 'vit'"),
    ({"train_fraction": 1.5}, "train_fraction must be in (0, 1]"),
    ({"validation": -1}, "validation must be zero or positive"),
    ({"augment": {"scale": [1.2, 0.8]}}, "augment.scale must be two factors"),
    ({"augment": {"degrees": 5, "twirl": 3}}, "unknown recipe field 'augment.twirl'"),
])
def test_a_bad_recipe_is_refused_where_it_is_made(fields, message):
    with pytest.raises(DigitrecError, match=None) as caught:
        Recipe(name="bad", **fields)
    assert message in str(caught.value) and caught.value.code == "invalid_input"
    with pytest.raises(DigitrecError):  # the same through the other ways in
        Recipe.from_dict({**SEED.to_dict(), **fields})


def test_from_dict_and_with_overrides_refuse_a_field_they_do_not_know():
    with pytest.raises(DigitrecError, match="unknown recipe field 'lr_decay'"):
        Recipe.from_dict({**SEED.to_dict(), "lr_decay": 0.9})
    with pytest.raises(DigitrecError, match="unknown recipe field 'lr_decay'"):
        SEED.with_overrides(lr_decay=0.9)
    assert SEED.with_overrides(epochs=None, lr=0.01) == SEED.with_settings(["lr=0.01"])


def test_settings_are_parsed_by_the_type_of_their_field():
    r = SEED.with_settings(["epochs=3", "lr=2e-3", "schedule=constant", "tta=yes", "augment.degrees=5",
                            "augment.scale=0.9, 1.1", "name=mine"])
    assert (r.epochs, r.lr, r.schedule, r.tta, r.name) == (3, 0.002, "constant", True, "mine")
    assert r.augment == Augment(degrees=5.0, scale=(0.9, 1.1)) and r.augment.enabled
    assert isinstance(r.augment.degrees, float) and SEED.epochs == 10  # recipes are values: SEED is unchanged
    assert SEED.with_settings(["lr=1", "lr=0.5"]).lr == 0.5  # in order: the last one wins


@pytest.mark.parametrize("setting, message", [
    ("epochs", "is not key=value"),
    ("=3", "is not key=value"),
    ("speed=3", "unknown recipe field 'speed'"),
    ("augment=5", "'augment' is a group"),
    ("augment.twirl=5", "unknown recipe field 'augment.twirl'"),
    ("epochs=ten", "epochs expects an integer, not 'ten'"),
    ("lr=fast", "lr expects a finite number"),
    ("tta=maybe", "tta expects true or false"),
    ("augment.scale=0.9", "augment.scale expects 2 comma-separated values"),
    ("epochs=0", "epochs must be at least 1"),
])
def test_bad_settings_say_what_is_wrong(setting, message):
    with pytest.raises(DigitrecError) as caught:
        SEED.with_settings([setting])
    assert message in str(caught.value) and caught.value.code == "invalid_input"


def test_a_new_field_is_validated_by_its_type_with_no_more_code():
    @dataclass(frozen=True)
    class Extended(Recipe):
        precision: str = "fp32"
        negatives: int = 0
        outlier_weight: float | None = None

    assert Extended(name="x", negatives=3).negatives == 3
    with pytest.raises(DigitrecError, match="negatives must be an integer"):
        Extended(name="x", negatives="many")
    e = Extended(name="x").with_settings(["outlier_weight=0.5", "precision=bf16"])
    assert (e.outlier_weight, e.precision) == (0.5, "bf16")
    assert Extended(name="x").with_settings(["outlier_weight=none"]).outlier_weight is None


def test_train_refuses_a_non_recipe_and_unknown_recipes_are_one_line():
    with pytest.raises(DigitrecError, match="needs a Recipe"):
        train.train({"epochs": 1}, out=None)
    with pytest.raises(DigitrecError, match="unknown recipe 'magic'"):
        get_recipe("magic")


@pytest.mark.parametrize("args, message", [
    (["--set", "epochs=0"], "recipe field epochs must be at least 1, not 0"),
    (["--set", "optimizer=lbfgs"], "unknown optimizer 'lbfgs'"),
    (["--set", "colour=blue"], "unknown recipe field 'colour'"),
    (["--set", "augment.degrees=lots"], "augment.degrees expects a finite number"),
    (["--lr", "0"], "recipe field lr must be positive"),
    (["--resume", "runs/x", "--epochs", "3"], "--epochs cannot change it"),
    (["--resume", "runs/x", "--set", "lr=1"], "--set cannot change it"),
    (["--resume", "runs/x", "--seed", "0"], "--seed cannot change it"),
])
def test_bad_training_options_are_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *args, "--data-dir", str(tmp_path)]) == 2  # in-process: test_cli runs the real script
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.mnist
@pytest.mark.slow
def test_set_reaches_the_training_loop(small_data, tmp_path):
    result = run_cli("train", "--data-dir", str(small_data), "--out", str(tmp_path / "run"), "--device", "cpu",
                     "--progress", "lines", "--set", "epochs=2", "--set", "lr=0.004", "--set", "step_size=1",
                     "--set", "gamma=0.25", "--set", "validation=500")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["recipe"]["epochs"] == 2 and config["recipe"]["gamma"] == 0.25
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in rows] == pytest.approx([0.001, 0.00025])  # 0.004 quartered after each epoch
    assert all("val_accuracy" in row for row in rows)  # the seed recipe has none: validation=500 carved one
    assert "Epoch [2/2]" in result.stderr + result.stdout
