"""torchrun with 2 CPU processes (gloo) against one process with the same global batch.

The probe recipe (tests/ddp_probe.py) has no BatchNorm and no dropout, so the two processes, each taking half
of every batch, must end where one process ends on whole batches, up to float rounding: the same weights on
both ranks, the same weights as the single process, the same averaged training loss, the same schedule."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

PROBE = str(Path(__file__).with_name("ddp_probe.py"))
ATOL = 1e-5


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.mnist
@pytest.mark.slow
def test_two_processes_end_with_the_weights_of_one_with_the_same_global_batch(small_data, tmp_path):
    common = ["train", "--recipe", "probe", "--data-dir", str(small_data), "--seed", "1", "--device", "cpu",
              "--progress", "lines"]
    (tmp_path / "w2").mkdir()
    (tmp_path / "w1").mkdir()
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          PROBE, str(tmp_path / "w2"), *common, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, PROBE, str(tmp_path / "w1"), *common, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.stdout.count("run folder:") == 1 and ddp.stdout.count("Test Accuracy: ") == 3  # rank 0 speaks
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2 and config["recipe"]["batch_size"] == 64
    assert sorted(p.name for p in (tmp_path / "w2").iterdir()) == ["rank-0.safetensors", "rank-1.safetensors"]

    rank0, rank1 = (load_file(str(tmp_path / "w2" / f"rank-{r}.safetensors")) for r in (0, 1))
    one = load_file(str(tmp_path / "w1" / "rank-0.safetensors"))
    saved = {run: load_file(str(tmp_path / run / "model.safetensors")) for run in ("one", "ddp")}
    for k in one:
        assert torch.equal(rank0[k], rank1[k]), f"{k}: the two ranks ended with different weights"
        assert torch.allclose(rank0[k], one[k], rtol=0, atol=ATOL), \
            f"{k}: 2 processes vs 1 differ by {(rank0[k] - one[k]).abs().max():.2e}"
        assert torch.equal(saved["one"][k], one[k]) and torch.equal(saved["ddp"][k], rank0[k])  # the files

    a, b = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x["lr"] == y["lr"]  # the same number of schedule steps
        assert abs(x["train_loss"] - y["train_loss"]) <= ATOL, (x["train_loss"], y["train_loss"])
        assert abs(x["test_loss"] - y["test_loss"]) <= ATOL
        assert abs(x["test_accuracy"] - y["test_accuracy"]) <= 0.2  # at most one of the 500 test images
    assert b[-1]["test_accuracy"] > 80  # it did learn: the comparison is between two trained models
