"""`digitrec` as a user runs it: subprocesses on real MNIST, their output and their files."""

import json
import pickle

import pytest
import torch
import torchvision
from conftest import run_cli
from torch.utils.data import DataLoader

from benchmarks.report_code import CNN
from digitrec import __version__
from digitrec.modelfile import load_model


@pytest.fixture(scope="module")
def one_epoch_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli("train", "--epochs", "1", "--seed", "0", "--data-dir", str(mnist_dir), "--out", str(out),
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.mark.mnist
def test_fetch_verifies_files_already_there(mnist_dir):
    result = run_cli("fetch", "--data-dir", str(mnist_dir))
    assert result.returncode == 0 and "all files present and verified" in result.stdout


@pytest.mark.mnist
@pytest.mark.slow
def test_one_epoch_of_the_seed_recipe_reaches_97_percent(one_epoch_run):
    out, stdout = one_epoch_run
    lines = stdout.strip().splitlines()
    assert lines[-3].startswith("Epoch [1/1], Average Loss: ") and ", LR: 0.001000, " in lines[-3]
    assert lines[-2].startswith("calibrated on ") and "seen in training" in lines[-2]  # seed holds nothing out
    accuracy = float(lines[-1].removeprefix("Test Accuracy: ").removesuffix("%"))
    assert accuracy >= 97.0
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["batch_size"] == 64 and config["recipe"]["lr"] == 0.001 and config["seed"] == 0
    assert set(config["versions"]) == {"python", "torch", "digitrec"}
    assert len(config["data_sha256"]) == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["test_accuracy"] == pytest.approx(accuracy, abs=0.005)
    assert {"train_loss", "test_loss", "lr", "seconds"} <= rows[0].keys()
    assert not (out / "curves.png").exists()  # one point is no curve: multi-epoch runs draw one (test_train)
    assert (out / "checkpoints" / "epoch-001" / "state.pt").is_file()


@pytest.mark.mnist
@pytest.mark.slow
def test_evaluate_writes_report_and_pictures_and_matches_the_report_code(one_epoch_run, mnist_dir, tmp_path):
    out, _ = one_epoch_run
    result = run_cli("evaluate", str(out), "--data-dir", str(mnist_dir), "--out", str(tmp_path), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert result.stdout.startswith(f"Test Accuracy: {report['accuracy']:.2f}%")
    assert sum(map(sum, report["confusion_matrix"])) == 10000 and len(report["per_class"]) == 10
    for name in ("confusion.png", "mistakes.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"

    # The report's own CNN class and evaluation code, given our weights, count the same correct answers.
    cnn = CNN()
    cnn.load_state_dict(load_model(out)[0].state_dict())
    cnn.eval()
    test_data = torchvision.datasets.MNIST(root=str(mnist_dir), train=False, download=False,
                                           transform=torchvision.transforms.ToTensor())
    correct = total = 0
    with torch.no_grad():
        for images, labels in DataLoader(test_data, batch_size=1000, shuffle=False):
            _, predicted = torch.max(cnn(images).data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    assert 100 * correct / total == pytest.approx(report["accuracy"], abs=1e-9)


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"digitrec {__version__}"
    for command in ("fetch", "train", "evaluate", "recipes", "predict", "read", "serve", "export", "ensemble"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout, command


@pytest.mark.parametrize("args, message", [
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--epochs", "many"], "invalid int value"),
    (["train", "--epochs", "0"], "recipe field epochs must be at least 1"),
    (["train", "--recipe", "magic"], "unknown recipe 'magic'"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["fetch", "--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["evaluate", "missing.safetensors"], "model file missing.safetensors not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = run_cli(*args, "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_pickle_as_model_is_refused_by_the_cli(tmp_path):
    marker = tmp_path / "pwned"
    from test_checkpoint import Payload

    with open(tmp_path / "model.safetensors", "wb") as f:
        pickle.dump(Payload(marker), f)
    result = run_cli("evaluate", str(tmp_path / "model.safetensors"), "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "not a digitrec model" in result.stderr
    assert result.stderr.count("\n") == 1 and not marker.exists()
    debug = run_cli("--debug", "evaluate", str(tmp_path / "model.safetensors"), "--data-dir", str(tmp_path))
    assert "Traceback" in debug.stderr and not marker.exists()


def test_a_reader_that_goes_away_ends_predict_quietly(tmp_path):
    """`digitrec predict DIR | head`: no traceback, the shell's code for a broken pipe (141)."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / f"{i}.png")
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "predict", str(tmp_path), "--format", "csv"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in stderr, stderr


def test_a_library_error_names_the_flag_to_change(tmp_path, capsys):
    """In process: the library says what is wrong (no flags in its message); the CLI adds the flag."""
    from digitrec.cli import main
    from digitrec.errors import DigitrecError
    from digitrec.training.recipes import RECIPES
    from digitrec.training.train import train

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DigitrecError) as e:
        train(RECIPES["fast"], out=tmp_path, data_dir=tmp_path)
    assert "--" not in str(e.value) and e.value.param == "out"
    assert main(["train", "--recipe", "fast", "--out", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("digitrec: error: ") and err.endswith("(change: --out, or --resume OUT to continue the run there)")
    assert "\n" not in err
