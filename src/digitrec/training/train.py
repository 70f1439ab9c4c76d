"""Training: one loop for every recipe, in the shape of torchvision's references/classification.

train() = resolve_run (what to train: the caller's recipe, or a resumed run's own) -> setup_run (device, data,
model, optimizer, schedule, checkpoint) -> train_one_epoch and evaluate, epoch after epoch -> finish_run
(calibrate, measure on the test split, save).  A batch is composed on the device from the data set's digits
plus printed digits and non-digits (BatchComposer); its loss mixes the labels' cross-entropy, the teacher's
soft targets and the non-digits' pull towards uniform (TrainingLoss).

Batches are cut from the whole split held in memory (on the GPU when there is one).  Each epoch's data order
and random draws (dropout, augmentation) come from seeds derived from (seed, epoch), so a run resumed from
the checkpoint of epoch k replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from digitrec import __version__
from digitrec.data.datasets import (
    Split,
    batches,
    data_hashes,
    dataset_spec,
    load_split,
    say,
    split_validation,
    to_float,
)
from digitrec.errors import DigitrecError
from digitrec.files import atomic_write_text
from digitrec.inference.backends import autocast, evaluate_split, predictive_model, resolve_precision, select_device
from digitrec.inference.calibration import Calibration
from digitrec.inference.reliability import expected_calibration_error
from digitrec.memory import keep_freed_memory
from digitrec.meta import ModelMeta
from digitrec.modelfile import last_checkpoint_dir, save_model
from digitrec.models import build_model
from digitrec.training import distributed
from digitrec.training.augment import european_strokes, random_affine
from digitrec.training.calibrate import calibrate, calibration_digits, held_out_non_digits
from digitrec.training.checkpoint import load_checkpoint, save_checkpoint
from digitrec.training.distill import ModelFile, Teacher, check_resumed, soft_target_loss
from digitrec.training.recipes import Augment, Recipe

Log = Callable[[str], None]

# fused: one kernel per step instead of a loop over parameters (the same update, several times faster on a CPU).
OPTIMIZERS: dict[str, Callable[[list, Recipe, bool], torch.optim.Optimizer]] = {
    "adam": lambda params, r, fused: torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay, fused=fused),
    "adamw": lambda params, r, fused: torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay, fused=fused),
    "sgd": lambda params, r, fused: torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, nesterov=True,
                                                    weight_decay=r.weight_decay, fused=fused),
}

# name -> (factory(optimizer, recipe, total batch steps), whether it steps after each "batch" or "epoch")
SCHEDULES: dict[str, tuple[Callable, str]] = {
    "step": (lambda opt, r, steps: torch.optim.lr_scheduler.StepLR(opt, r.step_size, r.gamma), "epoch"),
    "onecycle": (lambda opt, r, steps: _one_cycle(opt, r, steps), "batch"),
    "constant": (lambda opt, r, steps: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0), "epoch"),
}


def _one_cycle(optimizer, recipe: Recipe, steps: int):
    """OneCycleLR.  PyTorch divides by zero when the warm-up is exactly one step (warmup 0.2 of a 5-step run);
    a warm-up a hair longer runs (its peak falls a hair after step 0, so step 1 is already on the way down: a
    run this short has no schedule to speak of anyway)."""
    warmup = recipe.warmup * (1 + 1e-9) if float(recipe.warmup * steps) == 1.0 else recipe.warmup
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps, pct_start=warmup)


def ema_with_warmup(decay: float) -> Callable:
    """Exponential moving average whose decay ramps up as (1 + n) / (10 + n): early on, when the first
    weights are poor, they are forgotten quickly."""

    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        return averaged * d + current * (1 - d)

    return average


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


@dataclass
class RunResult:
    model: nn.Module  # the model that was evaluated and saved (the weight average when the recipe keeps one)
    history: list[dict]  # one row per epoch, as in metrics.jsonl
    run_dir: Path | None
    test_accuracy: float  # percent, of the final model as it predicts (with the recipe's test-time shifts)
    meta: ModelMeta | None = None  # the saved model's metadata (calibration, precision, ...)


def train(recipe: Recipe | None, *, dataset: str = "mnist", data_dir: str | os.PathLike = "data",
          out: str | os.PathLike | None = None, seed: int = 0, device: str = "auto", resume: bool = False,
          compile: bool = False, progress: bool | None = None, precision: str | None = None,
          log: Log = say, on_epoch: Callable[[dict, nn.Module], None] | None = None,
          teacher: str | os.PathLike | None = None, init: str | os.PathLike | None = None) -> RunResult:
    """Train `recipe` and evaluate on the test split after each epoch (after the last only, when the recipe
    has test_each_epoch=False).

    out:    run folder for config.json, metrics.jsonl, curves.png, model.safetensors and checkpoints/
            (None: write nothing).  resume=True continues the run in `out` with the recipe, seed and data
            it was started with (recipe may then be None).
    precision: fp32 or bf16 overrides the recipe's precision; auto or None keeps the recipe's own (which may
            itself be auto: see inference.resolve_precision; the seed recipe says fp32).
    on_epoch: called in the main process after each epoch (once it is on disk) with the epoch's metrics row
            and the model as it is evaluated, e.g. digitrec.tensorboard's writer.
    teacher: a model file or run folder to distill from (distill.py): the digits' loss becomes the recipe's
            mix of cross-entropy on the labels and the teacher's soft targets.  A resumed run needs the same one.
    init:   a model file or run folder to start from instead of random weights (fine-tuning: e.g. the shipped
            model taught new non-digits in a few epochs); its architecture and data set must be the recipe's.
            Recorded in config.json and the metadata; a resumed run starts from its own checkpoint.
    """
    spec = resolve_run(recipe, dataset=dataset, data_dir=data_dir, out=out, seed=seed, resume=resume,
                       precision=precision, teacher=teacher, init=init)
    run = setup_run(spec, device, compile, log)
    show_bar = sys.stderr.isatty() if progress is None else progress
    for epoch in range(run.start_epoch, spec.recipe.epochs):
        row = run_epoch(run, epoch, show_bar)
        run.history.append(row)
        save_epoch(run, epoch + 1, row)
        if run.world.is_main:  # after the checkpoint: a line printed means the epoch is safe on disk
            log(_epoch_line(row, spec.recipe.epochs))
            if on_epoch is not None:
                on_epoch(row, run.learner.eval_model)
    final = finish_run(run, log)
    return RunResult(run.learner.eval_model, run.history, spec.run_dir, final.test_accuracy, final)


# ---------------------------------------------------------------------------------------------------
# What to train: the caller's recipe and data, or a resumed run's own.

@dataclass(frozen=True)
class RunSpec:
    """What a run trains, checked before anything is loaded.  Resumed: as its config.json recorded it."""

    recipe: Recipe  # with the caller's precision, if any
    seed: int
    dataset: str
    data_dir: str | os.PathLike
    run_dir: Path | None  # None: write nothing
    resume: bool
    teacher: Teacher | None
    init: ModelFile | None  # the weights to start from (fingerprinted), or None for random ones


def resolve_run(recipe: Recipe | None, *, dataset: str, data_dir: str | os.PathLike, out: str | os.PathLike | None,
                seed: int, resume: bool, precision: str | None, teacher: str | os.PathLike | None,
                init: str | os.PathLike | None) -> RunSpec:
    """train()'s arguments checked and, for a resumed run, replaced by what the run was started with."""
    run_dir = Path(out) if out is not None else None
    teacher = Teacher.of(teacher) if teacher is not None else None
    if init is not None and resume:
        raise DigitrecError("a resumed run continues from its own checkpoint: init does not apply")
    init = ModelFile.of(init) if init is not None else None
    if run_dir is not None:
        config = _start_run_dir(run_dir, resume)
        if config:  # a resumed run keeps what it was started with
            recipe, seed, dataset, init = _as_started(config, recipe, teacher, run_dir)
    elif resume:
        raise DigitrecError("cannot resume a run without its run folder (out is None)")
    if not isinstance(recipe, Recipe):  # None is fine only when resuming: the run's own recipe is used
        raise DigitrecError(f"train() needs a Recipe (digitrec.training.recipes), not {type(recipe).__name__}")
    recipe = with_precision(recipe, precision)
    _check_digit_batches(recipe, dataset, resume)
    if init is not None and not resume:  # before the data and the banks: fail early
        _check_start(init, recipe, dataset)
    return RunSpec(recipe, seed, dataset, data_dir, run_dir, resume, teacher, init)


def with_precision(recipe: Recipe, precision: str | None) -> Recipe:
    """`recipe` with the precision a caller asked for.  "auto" asks for nothing in particular, so like None it
    keeps the recipe's own choice: the seed recipe's fp32 stays fp32 on hardware with bf16."""
    if precision is None or precision == "auto":
        return recipe
    return recipe.with_overrides(precision=precision)


def _start_run_dir(out: Path, resume: bool) -> dict | None:
    """Check the run folder; return its config when resuming."""
    config_path = out / "config.json"
    if resume:
        if not config_path.is_file():
            raise DigitrecError(f"cannot resume: {config_path} not found")
        return json.loads(config_path.read_text())
    if config_path.exists():
        raise DigitrecError(f"{out} already holds a run: resume it, or start the new run in another folder",
                            param="out")
    return None


def _as_started(config: dict, recipe: Recipe | None, teacher: Teacher | None,
                run_dir: Path) -> tuple[Recipe, int, str, ModelFile | None]:
    """(recipe, seed, dataset, init) of a resumed run, from its config.json: a different recipe or teacher is
    refused rather than silently dropped."""
    started_with = Recipe.from_dict(config["recipe"])
    if recipe is not None and recipe != started_with:
        raise DigitrecError(f"{run_dir} was started with another recipe; resume it with recipe=None")
    check_resumed(config.get("teacher"), teacher, run_dir)
    init = ModelFile(Path(config["init"]["path"]), config["init"]["sha256"]) if config.get("init") else None
    return started_with, config["seed"], config["dataset"], init


def _check_digit_batches(recipe: Recipe, dataset: str, resume: bool) -> None:
    """Synthesised non-digits, printed digits and European 1s and 7s are made for digits: on another data set
    (a flag on a trouser, label 1) they would be noise."""
    if dataset == "mnist" or not (recipe.outliers or recipe.printed or recipe.augment.euro):
        return
    fix = ("a resumed run keeps its recipe: start a new run with outliers, printed and augment.euro at 0" if resume
           else "set the recipe's outliers, printed and augment.euro to 0")
    raise DigitrecError(f"the recipe's synthesised non-digits, printed digits and European 1s and 7s are for "
                        f"mnist, not {dataset}: {fix}", param="outliers")


def _check_start(init: ModelFile, recipe: Recipe, dataset: str) -> None:
    """Refuse a starting model of another architecture or data set (from its metadata: no weights read)."""
    from digitrec.modelfile import read_meta

    meta = read_meta(init.path)
    if meta.architecture != recipe.model or meta.dataset != dataset:
        raise DigitrecError(f"cannot start from {init.path}: it is a {meta.architecture!r} model of {meta.dataset}, "
                            f"the recipe trains {recipe.model!r} on {dataset}")


# ---------------------------------------------------------------------------------------------------
# Setup: device, data, model, optimizer, schedule, and where the epochs start.

@dataclass
class TrainingData:
    """The splits and banks a run draws on, on the device that trains."""

    train: Split  # what is left for training once the validation images are held out
    test: Split
    val: Split | None  # held out of training, for choosing things afterwards; the test set is only reported
    outliers: torch.Tensor | None  # uint8 [N, 28, 28] synthesised non-digits, when the recipe mixes them in
    printed: Split | None  # labelled printed-font digits, when the recipe mixes them in


@dataclass(frozen=True)
class EpochPlan:
    """How an epoch is cut into steps, the same for every process."""

    images: int  # training images seen per epoch, all processes together
    local_batch: int  # images per step and process (before printed digits and non-digits are added)
    steps: int


@dataclass
class Learner:
    """The network and what updates it, as a checkpoint saves and restores them."""

    net: nn.Module  # the weights trained and checkpointed
    ema: AveragedModel | None  # the average of net's weights the recipe evaluates and ships, if it keeps one
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule_unit: str  # the scheduler steps after each "batch" or each "epoch"
    model: nn.Module | None = None  # net as a training step calls it (DistributedDataParallel, compiled)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.schedule_unit == "batch":
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def state(self) -> dict:
        """The training state a checkpoint keeps besides the weights."""
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        return state | ({"ema": self.ema.state_dict()} if self.ema is not None else {})

    def restore(self, weights: dict, state: dict) -> None:
        self.net.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


@dataclass
class Run:
    """A run set up for its epochs: what setup_run hands to run_epoch, save_epoch and finish_run."""

    spec: RunSpec
    device: torch.device
    precision: str  # as resolved for the device: fp32 or bf16
    world: distributed.World
    classes: list[str]
    data: TrainingData
    plan: EpochPlan
    learner: Learner
    compose: BatchComposer
    loss: TrainingLoss
    data_sha256: dict
    history: list[dict]  # one row per epoch trained so far (a resumed run's, from its checkpoint)
    start_epoch: int
    log_main: Log  # the log in the main process, silent in the others: the main process speaks for all

    def meta(self, epoch: int, accuracy: float | None) -> ModelMeta:
        spec = self.spec
        return ModelMeta(architecture=spec.recipe.model, recipe=spec.recipe.to_dict(), dataset=spec.dataset,
                         classes=list(self.classes), epoch=epoch, test_accuracy=accuracy, seed=spec.seed,
                         precision=self.precision, data_sha256=self.data_sha256,
                         teacher=spec.teacher.to_dict() if spec.teacher else None,
                         init=spec.init.to_dict() if spec.init else None, digitrec_version=__version__)


def setup_run(spec: RunSpec, device: str, compile: bool, log: Log) -> Run:
    """Everything the epochs need, in an order that fails early (teacher before data, data before weights)
    and leaves the global random state where the epochs expect it."""
    recipe = spec.recipe
    dev = select_device(device)
    precision = resolve_precision(recipe.precision, dev)
    keep_freed_memory()
    world = distributed.init(dev)
    if recipe.batch_size % world.size:
        raise DigitrecError(f"the recipe's batch_size {recipe.batch_size} (global: all processes together) must "
                            f"divide by the {world.size} processes", param="batch_size")
    classes = list(dataset_spec(spec.dataset).classes)
    teacher_net = spec.teacher.load(spec.dataset, dev) if spec.teacher is not None else None
    log_main = log if world.is_main else _quiet
    data = load_training_data(spec, dev, log_main)
    plan = plan_epochs(recipe, len(data.train), world)
    learner = build_learner(recipe, spec.seed, dev, plan.steps * recipe.epochs)
    history, start_epoch = restore_or_start(learner, spec, log)
    hashes = data_hashes(spec.dataset, spec.data_dir)
    if spec.run_dir is not None and world.is_main and start_epoch == 0:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        config = run_config(spec, dev, world, precision, hashes)
        atomic_write_text(spec.run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    learner.model = _for_training(learner.net, world, compile)
    compose = BatchComposer(recipe.augment, data.printed, data.outliers,
                            n_printed=round(plan.local_batch * recipe.printed),
                            n_outliers=round(plan.local_batch * recipe.outliers), device=dev)
    loss = TrainingLoss.of(recipe, teacher_net, with_outliers=data.outliers is not None)
    return Run(spec, dev, precision, world, classes, data, plan, learner, compose, loss, hashes, history,
               start_epoch, log_main)


def load_training_data(spec: RunSpec, device: torch.device, log: Log) -> TrainingData:
    """The splits, the validation carve and the recipe's banks of non-digits and printed digits."""
    recipe, data_dir = spec.recipe, spec.data_dir
    train_split, test_split = load_split(spec.dataset, data_dir, True), load_split(spec.dataset, data_dir, False)
    val_split = None
    if recipe.validation:
        train_split, val_split = split_validation(train_split, recipe.validation)
    bank_size = len(train_split) // 2  # at most: a small data set's banks are made in seconds
    outliers = _non_digit_bank(data_dir, bank_size, log) if recipe.outliers else None
    printed = _printed_digit_bank(data_dir, bank_size, log) if recipe.printed else None
    data = TrainingData(train_split, test_split, val_split, outliers, printed)
    return _on_gpu(data, device) if device.type == "cuda" else data


def _non_digit_bank(data_dir: str | os.PathLike, at_most: int, log: Log) -> torch.Tensor:
    from digitrec.data.outliers import TRAIN_BANK, outlier_bank

    return torch.from_numpy(outlier_bank(data_dir, "train", min(TRAIN_BANK, at_most), log=log))


def _printed_digit_bank(data_dir: str | os.PathLike, at_most: int, log: Log) -> Split:
    from digitrec.data.outliers import PRINTED_BANK, printed_digit_bank

    images, labels = printed_digit_bank(data_dir, "train", min(PRINTED_BANK, at_most), log=log)
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def _on_gpu(data: TrainingData, device: torch.device) -> TrainingData:
    """The whole data set fits on any GPU: no host-to-device copies per batch."""
    return TrainingData(data.train.to(device), data.test.to(device),
                        data.val.to(device) if data.val is not None else None,
                        data.outliers.to(device) if data.outliers is not None else None,
                        data.printed.to(device) if data.printed is not None else None)


def plan_epochs(recipe: Recipe, n_train: int, world: distributed.World) -> EpochPlan:
    """The recipe's train_fraction of the training images, in equal shards so that every process runs the same
    number of steps; refused when that leaves no batch at all."""
    images = int(n_train * recipe.train_fraction)
    images -= images % world.size
    local_batch = recipe.batch_size // world.size
    steps = -(-(images // world.size) // local_batch)
    if steps == 0:
        raise DigitrecError(f"train_fraction {recipe.train_fraction} of {n_train} images leaves no batch to "
                            f"train on: raise it", param="train_fraction")
    return EpochPlan(images, local_batch, steps)


def build_learner(recipe: Recipe, seed: int, device: torch.device, total_steps: int) -> Learner:
    """The network with its initial weights drawn from `seed`, its weight average, optimizer and schedule."""
    torch.manual_seed(seed)
    net = build_model(recipe.model).to(device)
    net = net.to(memory_format=torch.channels_last)  # faster convolutions and pooling on CPU and GPU alike
    ema = AveragedModel(net, avg_fn=ema_with_warmup(recipe.ema_decay), use_buffers=True) \
        if recipe.ema_decay > 0 else None
    optimizer = OPTIMIZERS[recipe.optimizer](net.parameters(), recipe, device.type in ("cpu", "cuda"))
    make_schedule, schedule_unit = SCHEDULES[recipe.schedule]
    scheduler = make_schedule(optimizer, recipe, total_steps)
    return Learner(net, ema, optimizer, scheduler, schedule_unit)


def restore_or_start(learner: Learner, spec: RunSpec, log: Log) -> tuple[list[dict], int]:
    """(history, first epoch to train).  A resumed run continues after its last checkpoint (weights, optimizer,
    schedule, weight average); a new one, or one stopped before its first checkpoint, starts at epoch 0, from
    `init`'s weights when it has them."""
    last = last_checkpoint_dir(spec.run_dir) if spec.resume and spec.run_dir is not None else None
    if last is None:
        if spec.init is not None:
            _start_from(learner.net, spec.init)
        return [], 0
    weights, _, state = load_checkpoint(last)
    learner.restore(weights, state)
    log(f"resuming {spec.run_dir} after epoch {state['epoch']}/{spec.recipe.epochs}")
    return state["history"], state["epoch"]


def _start_from(net: nn.Module, init: ModelFile) -> None:
    """Copy the weights of `init` (the file whose fingerprint the run recorded) into `net`."""
    from digitrec.modelfile import load_model

    if ModelFile.of(init.path).sha256 != init.sha256:
        raise DigitrecError(f"cannot start from {init.path}: the file changed since the run began",
                            code="invalid_model")
    net.load_state_dict(load_model(init.path)[0].state_dict())


def run_config(spec: RunSpec, device: torch.device, world: distributed.World, precision: str,
               hashes: dict) -> dict:
    """config.json: what a resumed run reads back, and what reproduces the run."""
    config = {"recipe": spec.recipe.to_dict(), "seed": spec.seed, "dataset": spec.dataset,
              "data_dir": str(spec.data_dir), "device": str(device), "world_size": world.size,
              "precision": precision, "data_sha256": hashes, "command": sys.argv,
              "versions": {"python": platform.python_version(), "torch": torch.__version__, "digitrec": __version__}}
    if spec.teacher is not None:
        config["teacher"] = spec.teacher.to_dict()
    if spec.init is not None:
        config["init"] = {**spec.init.to_dict(), "path": str(spec.init.path.resolve())}  # to start again on resume
    return config


def _for_training(net: nn.Module, world: distributed.World, compile: bool) -> nn.Module:
    """net as the training steps call it: shared across processes, compiled if asked for.  After the weights
    are restored: DistributedDataParallel copies the main process's weights to the others."""
    model = nn.parallel.DistributedDataParallel(net) if world.size > 1 else net
    return torch.compile(model) if compile else model


# ---------------------------------------------------------------------------------------------------
# A training batch and its loss.

@dataclass(frozen=True)
class Batch:
    images: torch.Tensor  # float, channels_last: the labelled digits first, then the non-digits
    labels: torch.Tensor  # of the first len(labels) images

    @property
    def digits(self) -> torch.Tensor:
        return self.images[:len(self.labels)]


@dataclass
class BatchComposer:
    """Makes a training batch from a batch of the data set's digits, on their device: European 1s and 7s on
    some of them, printed digits and non-digits added, then the random distortions over all.  Its draws come
    from the global RNG, which each epoch seeds like dropout: a resumed run replays them."""

    augment: Augment
    printed: Split | None
    outliers: torch.Tensor | None
    n_printed: int  # per batch and process
    n_outliers: int
    device: torch.device

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        if self.augment.euro > 0:  # the data set's own digits only: printed 1s have their flags already
            images = european_strokes(images, labels, self.augment.euro)
        if self.printed is not None:  # before the non-digits: the loss reads digits as the first len(labels)
            pick = torch.randint(len(self.printed), (self.n_printed,), device=self.device)
            images = torch.cat([images, to_float(self.printed.images[pick])])
            labels = torch.cat([labels, self.printed.labels[pick]])
        if self.outliers is not None:
            pick = torch.randint(len(self.outliers), (self.n_outliers,), device=self.device)
            images = torch.cat([images, to_float(self.outliers[pick])])
        if self.augment.enabled:
            images = random_affine(images, self.augment)
        return Batch(images.contiguous(memory_format=torch.channels_last), labels)


@dataclass(frozen=True)
class TrainingLoss:
    """The digits' cross-entropy on their labels (label-smoothed), mixed with a teacher's soft targets when
    distilling, plus, for the non-digits, the cross-entropy to the uniform distribution over the classes."""

    criterion: nn.Module
    teacher: nn.Module | None = None
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    outlier_weight: float | None = None  # None: the recipe mixes in no non-digits

    @classmethod
    def of(cls, recipe: Recipe, teacher: nn.Module | None, with_outliers: bool) -> TrainingLoss:
        return cls(nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing), teacher, recipe.distill_weight,
                   recipe.distill_temperature, recipe.outlier_weight if with_outliers else None)

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """logits: float, for all of batch.images."""
        digits = logits[:len(batch.labels)]
        loss = self.criterion(digits, batch.labels)
        if self.teacher is not None:  # the digits only: the teacher has nothing to say on non-digits
            with torch.no_grad():
                soft = self.teacher(batch.digits).float()
            loss = (1 - self.distill_weight) * loss + self.distill_weight * soft_target_loss(
                digits, soft, self.distill_temperature)
        if self.outlier_weight is not None:
            rest = logits[len(batch.labels):]
            loss = loss + self.outlier_weight * (rest.logsumexp(1) - rest.mean(1)).mean()
        return loss


# ---------------------------------------------------------------------------------------------------
# The epochs.

def run_epoch(run: Run, epoch: int, show_bar: bool) -> dict:
    """Train epoch `epoch` (from 0) and evaluate: the epoch's row of metrics.jsonl."""
    started = time.perf_counter()
    recipe, learner, plan = run.spec.recipe, run.learner, run.plan
    order = epoch_order(len(run.data.train), plan.images, run.spec.seed, epoch, run.world).to(run.device)
    torch.manual_seed(epoch_seed(run.spec.seed, epoch) + 7919 * run.world.rank)  # dropout and the batches' draws
    bar = _progress_bar(plan.steps, f"epoch {epoch + 1}/{recipe.epochs}") if show_bar else None
    loss_sum = train_one_epoch(learner, run.loss, composed_batches(run, order), run.device, run.precision, bar)
    if learner.schedule_unit == "epoch":
        learner.scheduler.step()
    train_loss = distributed.mean(loss_sum / plan.steps, run.world).item()  # waits for the last step
    seconds = time.perf_counter() - started
    row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": learner.scheduler.get_last_lr()[0],
           "seconds": seconds, "images_per_second": plan.images / seconds}
    return row | evaluate_epoch(run, last=epoch + 1 == recipe.epochs)


def epoch_order(n_train: int, n_used: int, seed: int, epoch: int, world: distributed.World) -> torch.Tensor:
    """This process's share of the epoch's images: a permutation drawn from (seed, epoch) alone, so that a
    resumed run draws the same."""
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    return order[:n_used][world.rank::world.size]


def composed_batches(run: Run, order: torch.Tensor) -> Iterator[Batch]:
    """The epoch's training batches, in `order`, composed one at a time as the steps ask for them."""
    for images, labels in batches(run.data.train, run.plan.local_batch, order):
        yield run.compose(images.to(run.device, non_blocking=True), labels.to(run.device, non_blocking=True))


def train_one_epoch(learner: Learner, loss_fn: TrainingLoss, epoch_batches: Iterable[Batch], device: torch.device,
                    precision: str, bar=None) -> torch.Tensor:
    """One pass of optimizer steps over `epoch_batches`: the sum of their losses, kept on the device (reading a loss
    back each step would wait for the device each step)."""
    learner.net.train()
    loss_sum = torch.zeros((), device=device)
    for step, batch in enumerate(epoch_batches):
        with autocast(device, precision):
            logits = learner.model(batch.images).float()
            loss = loss_fn(logits, batch)
        learner.step(loss)
        loss_sum += loss.detach()
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / (step + 1):.4f}")
    if bar is not None:
        bar.close()
    return loss_sum


def evaluate_epoch(run: Run, last: bool) -> dict:
    """The model as evaluated (the weight average, if any) on the validation split, and on the test split
    after every epoch or only the last, as the recipe says."""
    recipe, model, row = run.spec.recipe, run.learner.eval_model, {}
    if run.data.val is not None:
        val = evaluate_split(model, run.data.val, recipe.eval_batch_size, run.device)
        row.update(val_loss=val.loss, val_accuracy=val.accuracy)
    if recipe.test_each_epoch or last:
        test = evaluate_split(model, run.data.test, recipe.eval_batch_size, run.device)
        row.update(test_loss=test.loss, test_accuracy=test.accuracy)
    return row


def save_epoch(run: Run, epoch: int, row: dict) -> None:
    """Checkpoint and metrics.jsonl after `epoch` (from 1), from the main process."""
    if run.spec.run_dir is None or not run.world.is_main:
        return
    state = {"epoch": epoch} | run.learner.state() | {"history": run.history}
    save_checkpoint(run.spec.run_dir, epoch, run.learner.net, run.meta(epoch, row.get("test_accuracy")), state)
    _write_metrics(run.spec.run_dir, run.history)


def _epoch_line(row: dict, epochs: int) -> str:
    validation = f"Val Accuracy: {row['val_accuracy']:.2f}%, " if "val_accuracy" in row else ""
    test = f"Test Loss: {row['test_loss']:.4f}, Test Accuracy: {row['test_accuracy']:.2f}%, " \
        if "test_loss" in row else ""
    return (f"Epoch [{row['epoch']}/{epochs}], Average Loss: {row['train_loss']:.4f}, LR: {row['lr']:.6f}, "
            f"{validation}{test}{row['seconds']:.1f} s")


# ---------------------------------------------------------------------------------------------------
# The finish: calibrate, measure on the test split the way the model will predict, save.

def finish_run(run: Run, log: Log) -> ModelMeta:
    """The final model's metadata, saved with it in the run folder."""
    final = calibrate_and_test(run)
    if run.spec.run_dir is not None and run.world.is_main:
        save_model(run.spec.run_dir / "model.safetensors", run.learner.eval_model, final)
        _write_metrics(run.spec.run_dir, run.history)
        if len(run.history) > 1:  # a curve needs two points; a one-epoch run's figures are in metrics.jsonl
            from digitrec.plots import curves

            curves(run.history, run.spec.run_dir / "curves.png")
    distributed.barrier(run.world)
    distributed.shutdown(run.world)
    if run.world.is_main:
        log(f"Test Accuracy: {final.test_accuracy:.2f}%" + (" (with test-time shifts)" if run.spec.recipe.tta else ""))
    return final


def calibrate_and_test(run: Run) -> ModelMeta:
    """Calibrate on held-out data: the validation split (or, for recipes that train on every image, the same
    carve of images they trained on: said in the metadata), plus held-out non-digits when the recipe uses them.
    Then measure the test accuracy once the way the model will predict (test-time shifts, calibration): per
    epoch a plain evaluation tracks progress, this figure is the one saved with the model."""
    data, model = run.data, run.learner.eval_model
    final = run.meta(run.spec.recipe.epochs, run.history[-1]["test_accuracy"])
    held_out = data.val if data.val is not None else calibration_digits(data.train, 0)
    non_digits = held_out_non_digits(run.spec.data_dir, len(held_out), run.log_main) \
        if data.outliers is not None else None
    calibration, summary = calibrate(model, final, held_out, non_digits, run.device, seen=data.val is None)
    final = replace(final, calibration=calibration.to_dict(), calibration_validation=summary)
    test = evaluate_split(predictive_model(model, final), data.test, run.spec.recipe.eval_batch_size, run.device)
    run.log_main(_calibration_line(calibration, summary, non_digits is not None)
                 + f"; test ECE {expected_calibration_error(test.probabilities, test.labels):.2%}")
    return replace(final, test_accuracy=test.accuracy)


def _calibration_line(calibration: Calibration, summary: dict, with_non_digits: bool) -> str:
    line = (f"calibrated on {calibration.fitted_on}: temperature {calibration.temperature:.3f}, validation ECE "
            f"{summary['ece_before']:.2%} -> {summary['ece']:.2%}, uncertain below "
            f"{calibration.uncertain_below:.3f} (validation digits flagged: {summary['digits_flagged']:.2%})")
    if with_non_digits:
        line += (f", not a digit below {calibration.not_a_digit_below:.3f} (validation non-digits: "
                 f"{summary['outliers_not_a_digit']:.1%} not a digit, {summary['outliers_uncertain_or_not']:.1%} "
                 f"not a confident digit)")
    return line


# ---------------------------------------------------------------------------------------------------

def _quiet(line: str) -> None:
    pass


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def default_run_dir(recipe: Recipe, dataset: str = "mnist") -> Path:
    prefix = recipe.name if dataset == "mnist" else f"{dataset}-{recipe.name}"
    return Path("runs") / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"
