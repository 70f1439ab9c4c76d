"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

import json
import subprocess
import sys

import pytest

from digitrec.checkpoint import load_model

# Tolerance: each process normalises its BatchNorm over its half of the batch and draws its own dropout masks,
# so the two runs are the same algorithm but not the same numbers.
ACCURACY_POINTS = 3.0
LOSS_RELATIVE = 0.25


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(small_data, tmp_path):
    common = ["--data-dir", str(small_data), "--epochs", "4", "--batch-size", "64", "--seed", "1",
              "--device", "cpu", "--progress", "lines"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "digitrec", "train", *common, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = subprocess.run([sys.executable, "-m", "digitrec", "train", *common, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    assert ddp.stdout.count("run folder:") == 1 and ddp.stdout.count("Test Accuracy: ") == 5  # rank 0 speaks

    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2 and config["recipe"]["batch_size"] == 64
    a, b = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    assert len(a) == len(b) == 4
    print("2 processes:", [(round(r["train_loss"], 4), r["test_accuracy"]) for r in a])
    print("1 process:  ", [(round(r["train_loss"], 4), r["test_accuracy"]) for r in b])
    assert abs(a[-1]["test_accuracy"] - b[-1]["test_accuracy"]) <= ACCURACY_POINTS
    for x, y in zip(a, b):
        assert abs(x["train_loss"] - y["train_loss"]) <= LOSS_RELATIVE * y["train_loss"]
    assert a[-1]["lr"] == b[-1]["lr"]  # the same schedule: the same number of steps per epoch
    load_model(tmp_path / "ddp")  # rank 0's model file is whole
