import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitrec.data.datasets import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    dataset_spec,
    load_split,
    raw_dir,
    write_idx,
)
from digitrec.errors import DigitrecError
from digitrec.files import sha256_file

DATA_DIR = Path(os.environ.get("DIGITREC_DATA", Path(__file__).parent.parent / "data"))
DATA_FIXTURES = {"mnist_dir", "small_data", "fashion_dir"}


def prepared(dataset: str) -> Path:
    """DATA_DIR, once the data set's four files are there and verified.  Tests never download anything:
    `make test` (make data, make data-fashion) prepares the data and tests read it from DIGITREC_DATA."""
    raw = raw_dir(dataset, DATA_DIR)
    bad = [name for name, digest in dataset_spec(dataset).sha256.items()
           if not (raw / name).is_file() or sha256_file(raw / name) != digest]
    if bad:
        pytest.fail(f"{dataset} is not in {raw} ({', '.join(bad)} missing or not matching SHA-256): run `make data` "
                    f"(`make data-fashion`) or set DIGITREC_DATA; tests do not download", pytrace=False)
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST, as `make data` put it in DIGITREC_DATA (verified once a session)."""
    return prepared("mnist")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Fashion-MNIST, as `make data-fashion` put it in DIGITREC_DATA."""
    return prepared("fashion-mnist")


@pytest.fixture(scope="session")
def small_data(mnist_dir, tmp_path_factory) -> Path:
    """A small MNIST-shaped data set in IDX files: 2,000 training and 500 test images of real MNIST, and as many
    of Fashion-MNIST (the `best` recipe draws its non-digit outliers from it) when `make data-fashion` ran."""
    root = tmp_path_factory.mktemp("small")
    for dataset in ("mnist", "fashion-mnist"):
        try:
            train, test = load_split(dataset, mnist_dir, True), load_split(dataset, mnist_dir, False)
        except DigitrecError:
            continue
        raw = raw_dir(dataset, root)
        raw.mkdir(parents=True)
        write_idx(raw / TRAIN_IMAGES, train.images[:2000].numpy())
        write_idx(raw / TRAIN_LABELS, train.labels[:2000].numpy().astype(np.uint8))
        write_idx(raw / TEST_IMAGES, test.images[:500].numpy())
        write_idx(raw / TEST_LABELS, test.labels[:500].numpy().astype(np.uint8))
    return root


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`digitrec ARGS` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)



def pytest_collection_modifyitems(config, items):
    """A test that reads the real data (through mnist_dir, small_data or fashion_dir, directly or through another
    fixture) is marked `mnist` whether or not it says so: `pytest -m "not mnist"` runs without any data."""
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("mnist") is None:
            item.add_marker(pytest.mark.mnist)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """No test reaches past this machine: a connection to anything but loopback (or a Unix socket) fails."""
    import ipaddress
    import socket

    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = False
            if not local:
                raise OSError(f"tests do not use the network: connection to {address} refused")
        return connect(sock, address)

    socket.socket.connect = loopback_only
    yield
    socket.socket.connect = connect
