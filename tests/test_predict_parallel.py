"""`digitrec predict` on a large folder prepares its images in several processes: the records must be those of
one process."""

import pytest
from PIL import Image

from digitrec.data.datasets import load_split
from digitrec.inference.predict import PARALLEL_FROM, Predictor, parallel_workers, predict_paths
from digitrec.inference.records import as_dicts


@pytest.mark.mnist
def test_parallel_predict_gives_the_records_of_one_process(tmp_path, mnist_dir):
    test = load_split("mnist", mnist_dir, train=False)
    n = 300
    for i in range(n):
        Image.fromarray(test.images[i].numpy()).save(tmp_path / f"{i:04d}.png")
    (tmp_path / "0150.png").write_bytes(b"not a png")  # a bad file keeps its place
    predictor = Predictor()
    one = as_dicts(predict_paths([str(tmp_path)], predictor, topk=3, workers=1))
    two = as_dicts(predict_paths([str(tmp_path)], Predictor, topk=3, workers=2))  # loaded once the workers have started
    assert [r["path"] for r in two] == [r["path"] for r in one] == [str(tmp_path / f"{i:04d}.png") for i in range(n)]
    assert [(r["digit"], r["verdict"], r["error_code"]) for r in two] == [(r["digit"], r["verdict"], r["error_code"])
                                                                          for r in one]
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(one, two)) < 1e-4
    assert two[150]["error_code"] == "unsupported_format"
    right = sum(r["digit"] == int(test.labels[i]) for i, r in enumerate(two) if i != 150)
    assert right >= 0.98 * (n - 1)
    assert parallel_workers(PARALLEL_FROM - 1) == 1  # with --workers 0 (the default), small jobs stay in one process
    assert parallel_workers(PARALLEL_FROM, "cuda") == 1  # a GPU's process prepares alone


@pytest.mark.mnist
def test_standard_input_is_read_by_this_process_even_with_workers(tmp_path, mnist_dir, monkeypatch):
    import io
    import sys

    test = load_split("mnist", mnist_dir, train=False)
    for i in range(3):
        Image.fromarray(test.images[i].numpy()).save(tmp_path / f"{i}.png")
    buffer = io.BytesIO()
    Image.fromarray(test.images[3].numpy()).save(buffer, "PNG")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buffer.getvalue())))
    records = as_dicts(predict_paths(["-", str(tmp_path)], Predictor(), workers=2))
    assert [r["digit"] for r in records] == [int(test.labels[i]) for i in (3, 0, 1, 2)]


@pytest.mark.mnist
def test_workers_leave_the_callers_predictor_and_threads_as_they_were(tmp_path, mnist_dir):
    import torch

    test = load_split("mnist", mnist_dir, train=False)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(test.images[i].numpy()).resize((40, 40)).save(folder / f"{i:02d}.png")
    (folder / "00.png").write_bytes(b"not a png")  # unreadable first: the saved files keep their numbers
    predictor, threads = Predictor(), torch.get_num_threads()
    runner = predictor.runner
    one = as_dicts(predict_paths([str(folder)], predictor, workers=1, save_preprocessed=tmp_path / "one"))
    two = as_dicts(predict_paths([str(folder)], predictor, workers=2, save_preprocessed=tmp_path / "two"))
    assert predictor.runner is runner and torch.get_num_threads() == threads
    assert [(r["digit"], r["error_code"]) for r in one] == [(r["digit"], r["error_code"]) for r in two]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert "00001-01.png" in {p.name for p in (tmp_path / "two").iterdir()}
