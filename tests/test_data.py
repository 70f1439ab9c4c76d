import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from digitrec.data import datasets as data
from digitrec.data.datasets import (
    DATASETS,
    TEST_IMAGES,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetSpec,
    batches,
    fetch,
    load_split,
    read_idx,
    write_idx,
)
from digitrec.errors import DigitrecError
from digitrec.files import sha256_file


def test_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x", images)
    assert np.array_equal(read_idx(tmp_path / "x", 3), images)


def test_idx_truncated_file_names_the_file_and_the_fix(tmp_path):
    write_idx(tmp_path / "x", np.zeros((5, 28, 28), np.uint8))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-100])
    with pytest.raises(DigitrecError, match=r"x: 3836 bytes but its header \(5, 28, 28\) says 3936.*fetch --force"):
        read_idx(tmp_path / "x", 3)


def test_idx_header_too_short(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DigitrecError, match="truncated"):
        read_idx(tmp_path / "x", 3)


def test_idx_wrong_magic(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(10, np.uint8))  # a label file (1 dim) where images (3 dims) belong
    with pytest.raises(DigitrecError, match="wrong magic number 00000801"):
        read_idx(tmp_path / "labels", 3)


def _write_split(raw, n_images, n_labels):
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / TRAIN_IMAGES, np.zeros((n_images, 28, 28), np.uint8))
    write_idx(raw / TRAIN_LABELS, np.zeros(n_labels, np.uint8))


def test_load_split_counts_must_match(tmp_path):
    _write_split(tmp_path / "MNIST" / "raw", 10, 9)
    with pytest.raises(DigitrecError, match="10 images but .* 9 labels"):
        load_split("mnist", tmp_path, train=True)


def test_load_split_missing_data_dir_says_fetch(tmp_path):
    with pytest.raises(DigitrecError, match="digitrec fetch"):
        load_split("mnist", tmp_path / "nowhere")


def test_batches_cover_every_index_once():
    split = data.Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 28, 28).clone(),
                       torch.arange(10))
    order = torch.randperm(10)
    seen = torch.cat([labels for _, labels in batches(split, 3, order)])
    assert torch.equal(seen, order)
    images, _ = next(batches(split, 4))
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.float32
    assert torch.allclose(images[1], torch.full((1, 28, 28), 1 / 255))


# --- fetch, with sources the test controls ---------------------------------------------------------

def _tiny_spec(tmp_path):
    """A made-up dataset whose 'true' files the test knows."""
    contents = {name: f"content of {name}".encode() for name in DATASETS["mnist"].sha256}
    spec = DatasetSpec(name="tiny", folder="Tiny", classes=tuple("0123456789"), sources=(),
                       sha256={n: hashlib.sha256(c).hexdigest() for n, c in contents.items()})
    return spec, contents


def test_fetch_takes_first_source_that_verifies_and_reports_failures(tmp_path, monkeypatch):
    spec, contents = _tiny_spec(tmp_path)
    monkeypatch.setitem(DATASETS, "tiny", spec)
    calls = []

    def broken(spec, names, scratch):
        calls.append("broken")
        raise DigitrecError("no network")

    def corrupt(spec, names, scratch):  # right names, wrong bytes: must not be kept
        calls.append("corrupt")
        for n in names:
            (scratch / n).write_bytes(b"garbage")

    def good(spec, names, scratch):
        calls.append("good")
        for n in names:
            (scratch / n).write_bytes(contents[n])

    raw = fetch("tiny", tmp_path, sources={"broken": broken, "corrupt": corrupt, "good": good}, log=lambda m: None)
    assert calls == ["broken", "corrupt", "good"]
    assert {p.name for p in raw.iterdir()} == set(contents)  # no temp files left behind
    for n, c in contents.items():
        assert (raw / n).read_bytes() == c
    # Second time: files already there and verified, no source is asked.
    fetch("tiny", tmp_path, sources={"good": good}, log=lambda m: None)
    assert calls == ["broken", "corrupt", "good"]


def test_fetch_failure_lists_every_source(tmp_path, monkeypatch):
    spec, _ = _tiny_spec(tmp_path)
    monkeypatch.setitem(DATASETS, "tiny", spec)

    def offline(spec, names, scratch):
        raise DigitrecError("network unreachable")

    def partial(spec, names, scratch):  # a download cut short: the half file must not land in raw/
        (scratch / names[0]).write_bytes(b"half")

    with pytest.raises(DigitrecError) as e:
        fetch("tiny", tmp_path, sources={"mirror-a": offline, "mirror-b": partial}, log=lambda m: None)
    message = str(e.value)
    assert "files already there" in message and "mirror-a: network unreachable" in message
    assert "mirror-b: SHA-256 mismatch" in message
    assert list((tmp_path / "Tiny" / "raw").iterdir()) == []


@pytest.mark.mnist
def test_fetch_replaces_a_corrupted_file(mnist_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(mnist_dir / "MNIST" / "raw", raw)
    (raw / TEST_IMAGES).write_bytes(b"\x00\x00\x08\x03 corrupted")

    def from_real_copy(spec, names, scratch):
        for n in names:
            shutil.copy(mnist_dir / "MNIST" / "raw" / n, scratch / n)

    fetch("mnist", tmp_path, sources={"copy": from_real_copy}, log=lambda m: None)
    assert sha256_file(raw / TEST_IMAGES) == DATASETS["mnist"].sha256[TEST_IMAGES]


@pytest.mark.mnist
def test_real_mnist_loads_whole_and_matches_torchvision(mnist_dir):
    train, test = load_split("mnist", mnist_dir, True), load_split("mnist", mnist_dir, False)
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 28, 28) and len(test.labels) == 10000
    assert torch.bincount(train.labels).tolist()[:3] == [5923, 6742, 5958]
    import torchvision

    tv = torchvision.datasets.MNIST(mnist_dir, train=False, download=False)
    assert torch.equal(tv.data, test.images) and torch.equal(tv.targets, test.labels)


@pytest.mark.mnist
@pytest.mark.slow
def test_fashion_mnist_from_debian_trains_with_the_fast_recipe(fashion_dir, tmp_path):
    from conftest import run_cli

    fetched = run_cli("fetch", "--dataset", "fashion-mnist", "--data-dir", str(fashion_dir))
    assert fetched.returncode == 0, fetched.stderr
    assert "all files present and verified" in fetched.stdout  # `make data-fashion` put them there
    result = run_cli("train", "--dataset", "fashion-mnist", "--recipe", "fast", "--data-dir", str(fashion_dir),
                     "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1].split()[-1].rstrip("%")) >= 85.0
    report = run_cli("evaluate", str(tmp_path / "run"), "--data-dir", str(fashion_dir), "--json")
    assert json.loads(report.stdout)["classes"][-1] == "Ankle boot"
