import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from digitrec.errors import DigitrecError
from digitrec.modelfile import load_model
from digitrec.training.checkpoint import load_checkpoint
from digitrec.training.recipes import RECIPES, Recipe
from digitrec.training.train import train

quiet = lambda line: None
SMALL = RECIPES["seed"].with_overrides(epochs=3)


def _without_timing(history):
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_second")} for row in history]


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


class Interrupted(Exception):
    pass


@pytest.mark.mnist
def test_resume_after_an_interruption_ends_with_exactly_the_same_weights(small_data, tmp_path):
    reference = train(SMALL, data_dir=small_data, out=tmp_path / "ref", seed=3, device="cpu", log=quiet)

    def stop_after_epoch_2(line):
        if line.startswith("Epoch [2/3]"):
            raise Interrupted

    with pytest.raises(Interrupted):
        train(SMALL, data_dir=small_data, out=tmp_path / "cut", seed=3, device="cpu", log=stop_after_epoch_2)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    lines = []
    with pytest.raises(DigitrecError, match="started with another recipe"):  # not silently ignored
        train(Recipe(name="other"), data_dir=small_data, out=tmp_path / "cut", resume=True, device="cpu")
    resumed = train(None, data_dir=small_data, out=tmp_path / "cut", resume=True, device="cpu", log=lines.append)
    assert lines[0].startswith("resuming") and lines[1].startswith("Epoch [3/3]")
    _assert_same_weights(reference.model.state_dict(), resumed.model.state_dict())
    assert _without_timing(reference.history) == _without_timing(resumed.history)
    assert (tmp_path / "cut" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert config["seed"] == 3 and config["recipe"]["epochs"] == 3


@pytest.mark.mnist
def test_same_seed_same_result_other_seed_other_result(small_data):
    one = RECIPES["seed"].with_overrides(epochs=1)
    a = train(one, data_dir=small_data, seed=5, device="cpu", log=quiet)
    b = train(one, data_dir=small_data, seed=5, device="cpu", log=quiet)
    c = train(one, data_dir=small_data, seed=6, device="cpu", log=quiet)
    _assert_same_weights(a.model.state_dict(), b.model.state_dict())
    assert not torch.equal(a.model.out.weight, c.model.out.weight)


@pytest.mark.mnist
def test_run_folder_is_not_overwritten_by_a_new_run(small_data, tmp_path):
    one = RECIPES["seed"].with_overrides(epochs=1)
    train(one, data_dir=small_data, out=tmp_path / "run", device="cpu", log=quiet)

    with pytest.raises(DigitrecError, match="already holds a run: resume it") as e:
        train(one, data_dir=small_data, out=tmp_path / "run", device="cpu", log=quiet)
    assert "--" not in str(e.value)  # a library message: the CLI adds its flags


def test_library_messages_name_no_command_line_flags():
    with pytest.raises(DigitrecError, match="without its run folder") as e:
        train(None, resume=True, device="cpu", log=quiet)
    assert "--" not in str(e.value)


def _cli(small_data, out, resume):
    args = ["--resume", str(out)] if resume else ["--out", str(out), "--epochs", "16", "--seed", "11"]
    return subprocess.Popen([sys.executable, "-m", "digitrec", "train", "--data-dir", str(small_data),
                             "--device", "cpu", "--progress", "lines", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_during_checkpoint_write(proc, out, deadline):
    """Spin until a checkpoint folder is being written (a .tmp- folder exists), then SIGKILL."""
    root = out / "checkpoints"
    while time.monotonic() < deadline and proc.poll() is None:
        if root.is_dir() and any(p.name.startswith(".tmp-") for p in os.scandir(root)):
            proc.send_signal(signal.SIGKILL)
            return True
    return False


def _assert_everything_on_disk_loads(out):
    for checkpoint in sorted((out / "checkpoints").glob("epoch-*")) if (out / "checkpoints").is_dir() else []:
        load_checkpoint(checkpoint)  # raises on a torn file
    if (out / "model.safetensors").exists():
        load_model(out)


@pytest.mark.mnist
@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_a_checkpoint(small_data, tmp_path):
    reference = tmp_path / "reference"
    done = _cli(small_data, reference, resume=False)
    assert done.wait(timeout=300) == 0, done.stdout.read()
    rng = random.Random(1234)
    out = tmp_path / "killed"
    kills, mid_write = 0, 0
    for attempt in range(16):
        proc = _cli(small_data, out, resume=(out / "config.json").exists())
        if attempt % 2 == 0:  # every other kill aims at a checkpoint write
            hit = _kill_during_checkpoint_write(proc, out, time.monotonic() + 20)
            mid_write += hit
        else:
            time.sleep(rng.uniform(0.5, 4.0))  # start-up takes about 2 s, an epoch 0.4 s
            proc.send_signal(signal.SIGKILL)
        kills += proc.wait(timeout=60) == -signal.SIGKILL
        _assert_everything_on_disk_loads(out)
        if (out / "model.safetensors").exists():
            break
    final = _cli(small_data, out, resume=True)
    assert final.wait(timeout=300) == 0, final.stdout.read()
    assert kills >= 4 and mid_write >= 1, (kills, mid_write)
    _assert_same_weights(load_model(reference)[0].state_dict(), load_model(out)[0].state_dict())
    assert [json.loads(l)["test_accuracy"] for l in (out / "metrics.jsonl").read_text().splitlines()] == \
           [json.loads(l)["test_accuracy"] for l in (reference / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.mnist
@pytest.mark.slow
def test_the_fast_recipe_reaches_99_percent_on_mnist(mnist_dir):
    """README: `fast` reaches 99% in under an epoch.  One run, seed 0, the recipe exactly as shipped."""
    result = train(RECIPES["fast"], data_dir=mnist_dir, seed=0, device="cpu", log=quiet)
    print(f"fast, seed 0: {result.test_accuracy:.2f}% test, {result.history[0]['val_accuracy']:.2f}% validation")
    assert len(result.history) == 1 and result.history[0]["epoch"] == 1
    assert result.test_accuracy == result.history[-1]["test_accuracy"] >= 99.0
    assert result.history[0]["val_accuracy"] >= 98.5  # the held-out training images tell the same story


def test_an_unknown_recipe_is_one_clear_error_naming_the_known_ones():
    from digitrec.errors import DigitrecError
    from digitrec.training.recipes import get_recipe

    assert get_recipe("fast") is RECIPES["fast"]
    with pytest.raises(DigitrecError, match=r"^unknown recipe 'nope'; choose from seed, fast, best") as e:
        get_recipe("nope")
    assert e.value.code == "invalid_input"


@pytest.mark.mnist
def test_a_run_started_from_a_model_begins_at_its_weights_and_records_it(small_data, tmp_path):
    """--init (fine-tuning): with a learning rate too small to move anything, the weights stay the starting
    model's; from random weights they do not.  The start is fingerprinted, and another architecture refused."""
    one = RECIPES["seed"].with_overrides(epochs=1)
    start = train(one, data_dir=small_data, out=tmp_path / "start", seed=1, device="cpu", log=quiet)
    still = one.with_overrides(lr=1e-12, schedule="constant")
    tuned = train(still, data_dir=small_data, out=tmp_path / "tuned", seed=2, device="cpu", log=quiet,
                  init=tmp_path / "start")
    fresh = train(still, data_dir=small_data, seed=2, device="cpu", log=quiet)
    tuned_weights = dict(tuned.model.named_parameters())  # (BatchNorm's running statistics move without lr)
    for name, weight in start.model.named_parameters():
        assert torch.allclose(tuned_weights[name], weight, atol=1e-6), name
    assert not torch.allclose(fresh.model.out.weight, start.model.out.weight, atol=1e-3)
    # (BatchNorm's statistics, re-estimated over the epoch, move the accuracy by a point or two; none learnt.)
    assert abs(tuned.test_accuracy - start.test_accuracy) <= 3 and fresh.test_accuracy < 30
    recorded = json.loads((tmp_path / "tuned" / "config.json").read_text())["init"]
    meta = load_model(tmp_path / "tuned")[1]
    assert recorded["file"] == meta.init["file"] == "model.safetensors" and len(recorded["sha256"]) == 64
    fast = train(RECIPES["fast"].with_overrides(train_fraction=0.1, validation=0), data_dir=small_data,
                 out=tmp_path / "fast", device="cpu", log=quiet)
    with pytest.raises(DigitrecError, match="cannot start from .* a 'fast' model of mnist, the recipe trains 'seed'"):
        train(one, data_dir=small_data, out=tmp_path / "wrong", device="cpu", log=quiet, init=fast.run_dir)
    with pytest.raises(DigitrecError, match="init does not apply"):
        train(None, data_dir=small_data, out=tmp_path / "tuned", resume=True, device="cpu", init=tmp_path / "start")


@pytest.mark.mnist
def test_digit_only_batches_are_refused_for_another_data_set(small_data):
    """best's synthesised non-digits, printed digits and European 1s and 7s only make sense for digits (a flag on
    a trouser, label 1, would be noise): one line for clothing, also when only the flags are left on."""
    hint = "are for mnist, not fashion-mnist: set the recipe's outliers, printed and augment.euro to 0"
    with pytest.raises(DigitrecError, match=hint) as e:
        train(RECIPES["best"], dataset="fashion-mnist", data_dir=small_data, device="cpu", log=quiet)
    assert "--" not in str(e.value)
    flags_only = RECIPES["best"].with_settings(["outliers=0", "printed=0"])
    with pytest.raises(DigitrecError, match=hint):
        train(flags_only, dataset="fashion-mnist", data_dir=small_data, device="cpu", log=quiet)


def test_a_one_cycle_schedule_whose_warm_up_is_one_step_runs():
    """PyTorch's OneCycleLR divides by zero when the warm-up is exactly one step (5 steps, warmup 0.2: a
    traceback from `--set train_fraction=0.01`); digitrec's schedule runs, warming up over that one step."""
    from digitrec.training.train import SCHEDULES

    make, _ = SCHEDULES["onecycle"]
    for steps in (2, 5, 20):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = make(optimizer, RECIPES["best"], steps)
        lrs = []
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert max(lrs) <= RECIPES["best"].lr + 1e-12 and lrs[-1] < lrs[0] or steps == 2, lrs
        if steps == 5:  # one step up, then down
            assert lrs[0] < lrs[1] and lrs[1:] == sorted(lrs[1:], reverse=True), lrs


@pytest.mark.mnist
def test_a_train_fraction_that_leaves_no_batch_is_refused_in_one_line(small_data, tmp_path):
    recipe = RECIPES["seed"].with_overrides(train_fraction=1e-4, epochs=1)  # 2,000 images x 1e-4: none
    with pytest.raises(DigitrecError, match="leaves no batch") as e:
        train(recipe, data_dir=small_data, out=tmp_path / "run", device="cpu", log=quiet)
    assert e.value.code == "invalid_input" and not (tmp_path / "run").exists()


def test_a_batch_puts_the_labelled_digits_first_and_draws_its_additions_from_the_global_rng():
    """The loss reads the first len(labels) images as the labelled digits: the printed digits join them, the
    non-digits come after.  The draws are the global RNG's, which each epoch seeds: the same seed, the same batch."""
    from digitrec.data.datasets import Split
    from digitrec.training.recipes import Augment
    from digitrec.training.train import BatchComposer

    printed = Split(torch.full((5, 28, 28), 255, dtype=torch.uint8), torch.arange(5))
    outliers = torch.zeros((7, 28, 28), dtype=torch.uint8)
    compose = BatchComposer(Augment(), printed, outliers, n_printed=2, n_outliers=3, device=torch.device("cpu"))
    digits, labels = torch.full((4, 1, 28, 28), 0.5), torch.tensor([9, 8, 7, 6])
    torch.manual_seed(0)
    batch = compose(digits, labels)
    assert batch.images.shape == (9, 1, 28, 28) and batch.images.is_contiguous(memory_format=torch.channels_last)
    assert batch.labels[:4].tolist() == [9, 8, 7, 6] and len(batch.labels) == 6 and batch.labels[4:].max() < 5
    assert torch.equal(batch.digits, batch.images[:6]) and batch.images[4:6].min() > batch.images[:4].max()
    assert torch.equal(batch.images[6:], torch.zeros(3, 1, 28, 28))
    torch.manual_seed(0)
    assert torch.equal(compose(digits, labels).labels, batch.labels)


def test_the_loss_adds_the_non_digits_pull_towards_uniform_to_the_digits_cross_entropy():
    from digitrec.training.train import Batch, TrainingLoss

    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 1.0], [2.0, 0.0, -2.0]])
    batch = Batch(torch.zeros(3, 1, 28, 28), torch.tensor([0, 1]))
    digits_only = TrainingLoss.of(RECIPES["seed"], None, with_outliers=False)
    assert torch.allclose(digits_only(logits, batch), torch.nn.functional.cross_entropy(logits[:2], batch.labels))
    best = RECIPES["best"]
    with_outliers = TrainingLoss.of(best, None, with_outliers=True)
    uniform = torch.full((1, 3), 1 / 3)  # cross-entropy to uniform, less its entropy: KL(uniform || softmax)
    to_uniform = torch.nn.functional.cross_entropy(logits[2:], uniform)
    ce = torch.nn.functional.cross_entropy(logits[:2], batch.labels, label_smoothing=best.label_smoothing)
    assert torch.allclose(with_outliers(logits, batch), ce + best.outlier_weight * to_uniform)


def test_train_one_epoch_steps_once_a_batch_and_returns_the_summed_loss():
    from digitrec.training.train import SCHEDULES, Batch, Learner, TrainingLoss, train_one_epoch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = SCHEDULES["onecycle"][0](optimizer, RECIPES["fast"], 3)
    learner = Learner(net, None, optimizer, scheduler, "batch", model=net)
    batches = [Batch(torch.rand(8, 1, 28, 28), torch.randint(10, (8,))) for _ in range(3)]
    before = net[1].weight.detach().clone()
    loss_sum = train_one_epoch(learner, TrainingLoss.of(RECIPES["seed"], None, False), batches,
                               torch.device("cpu"), "fp32")
    assert net.training and not torch.equal(before, net[1].weight) and scheduler.last_epoch == 3
    assert loss_sum.shape == () and 0 < loss_sum.item() < 3 * 10
