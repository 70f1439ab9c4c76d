import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitrec.data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, fetch, load_split, write_idx

DATA_DIR = Path(os.environ.get("DIGITREC_DATA", Path(__file__).parent.parent / "data"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST, fetched (and verified) once: `make test` has usually done it already."""
    fetch("mnist", DATA_DIR, log=lambda msg: None)
    return DATA_DIR


@pytest.fixture(scope="session")
def small_data(mnist_dir, tmp_path_factory) -> Path:
    """A small MNIST-shaped data set in IDX files: 2,000 training and 500 test images of real MNIST."""
    root = tmp_path_factory.mktemp("small")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train, test = load_split("mnist", mnist_dir, True), load_split("mnist", mnist_dir, False)
    write_idx(raw / TRAIN_IMAGES, train.images[:2000].numpy())
    write_idx(raw / TRAIN_LABELS, train.labels[:2000].numpy().astype(np.uint8))
    write_idx(raw / TEST_IMAGES, test.images[:500].numpy())
    write_idx(raw / TEST_LABELS, test.labels[:500].numpy().astype(np.uint8))
    return root


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`digitrec ARGS` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
