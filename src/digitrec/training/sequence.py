"""Training the sequence reader (models.SequenceReader): numbers drawn from MNIST's training digits (the
validation carve left out), read whole with CTC (Graves et al. 2006), so that touching digits need no cut.

    digitrec train-reader --data-dir data --out src/digitrec/weights/reader.safetensors   (the shipped one)

Each step draws a fresh batch (data/sheets.py strip_examples): the reader never sees the same number twice.
Every EVAL_EVERY steps it reads a fixed set of numbers drawn from the validation digits; the weights saved
are the last ones, with that exact-match figure in their metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from digitrec.data.datasets import load_split, say, split_validation
from digitrec.data.sheets import by_class, strip_examples
from digitrec.errors import DigitrecError
from digitrec.files import atomic_write
from digitrec.inference.backends import pad_strips
from digitrec.inference.export import export_reader
from digitrec.meta import META_KEY
from digitrec.models import SequenceReader

BATCH = 64
EVAL_EVERY = 250


def greedy_decode(logits: torch.Tensor) -> list[list[int]]:
    """[N, T, 11] -> per number its digits: best class per column, repeats merged, blanks dropped."""
    best = logits.argmax(-1)
    out = []
    for row in best.tolist():
        digits, last = [], 0
        for c in row:
            if c != last and c != 0:
                digits.append(c - 1)
            last = c
        out.append(digits)
    return out


def ctc_loss(model: SequenceReader, strips: list[np.ndarray], labels: list[list[int]]) -> torch.Tensor:
    logits = model(torch.from_numpy(pad_strips(strips)))  # [N, T, 11]
    log_probs = logits.log_softmax(-1).transpose(0, 1)  # [T, N, 11]
    lengths = torch.tensor([s.shape[1] // 4 for s in strips])
    targets = torch.tensor([d + 1 for digits in labels for d in digits])
    return F.ctc_loss(log_probs, targets, lengths, torch.tensor([len(x) for x in labels]), zero_infinity=True)


def exact(model: SequenceReader, strips: list[np.ndarray], labels: list[list[int]]) -> float:
    model.eval()
    with torch.no_grad():
        read = [d for s in range(0, len(strips), 256)
                for d in greedy_decode(model(torch.from_numpy(pad_strips(strips[s:s + 256]))))]
    model.train()
    return float(np.mean([r == t for r, t in zip(read, labels)]))


def train_sequence_reader(data_dir: str, out: str, steps: int = 10_000, seed: int = 0, lr: float = 2e-3) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train, validation = split_validation(load_split("mnist", data_dir, train=True), 5000)
    bank = by_class(train.images.numpy(), train.labels.numpy())
    held_out = strip_examples(by_class(validation.images.numpy(), validation.labels.numpy()),
                              np.random.default_rng(10_000 + seed), 1000)
    model = SequenceReader()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.15)
    start, history = time.time(), []
    for step in range(1, steps + 1):
        loss = ctc_loss(model, *strip_examples(bank, rng, BATCH))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # CTC's early gradients spike
        optimizer.step()
        schedule.step()
        if step % EVAL_EVERY == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), "validation_exact": exact(model, *held_out)})
            say(f"step {step}/{steps}: loss {history[-1]['loss']:.3f}, validation numbers read exactly "
                f"{history[-1]['validation_exact']:.1%} ({time.time() - start:.0f} s)")
    meta = {"architecture": "sequence-reader", "steps": steps, "batch": BATCH, "seed": seed, "lr": lr,
            "validation_exact": history[-1]["validation_exact"], "history": history,
            "data": "numbers of 1-8 MNIST training digits (validation carve of 5,000 left out), 2/3 touching"}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)}))
    # What `read` and the server run: the same network in ONNX beside it, checked on the held-out numbers.
    difference = export_reader(out, Path(out).with_suffix(".onnx"), held_out[0][:256])
    if difference > 1e-3:
        raise DigitrecError(f"the reader's ONNX export differs from PyTorch by {difference:.2g}", code="internal")
    return meta
