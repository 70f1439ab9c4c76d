"""Training: one loop for every recipe.

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
from collections.abc import Callable
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
from digitrec.training.recipes import Recipe

# fused: one kernel per step instead of a loop over parameters (the same update; 3-4x faster a step on a CPU).
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
    """OneCycleLR.  PyTorch divides by zero when the warm-up is exactly one step (warmup 0.2 of a 5-step run,
    from `--set train_fraction=0.01`: a traceback); a warm-up a hair longer runs (its peak falls a hair after
    step 0, so step 1 is already on the way down: a run this short has no schedule to speak of anyway)."""
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


def _start_run_dir(out: Path, resume: bool) -> dict | None:
    """Check the run folder; return its config when resuming."""
    config_path = out / "config.json"
    if resume:
        if not config_path.is_file():
            raise DigitrecError(f"cannot resume: {config_path} not found")
        return json.loads(config_path.read_text())
    if config_path.exists():
        raise DigitrecError(f"{out} already holds a run: pass --resume {out} to continue it, or another --out")
    return None


def train(recipe: Recipe | None, *, dataset: str = "mnist", data_dir: str | os.PathLike = "data",
          out: str | os.PathLike | None = None, seed: int = 0, device: str = "auto", resume: bool = False,
          compile: bool = False, progress: bool | None = None, precision: str | None = None,
          log: Callable[[str], None] = say, on_epoch: Callable[[dict, nn.Module], None] | None = None,
          teacher: str | os.PathLike | None = None, init: str | os.PathLike | None = None) -> RunResult:
    """Train `recipe` and evaluate on the test split after each epoch (after the last only, when the recipe
    has test_each_epoch=False).

    out:    run folder for config.json, metrics.jsonl, curves.png, model.safetensors and checkpoints/
            (None: write nothing).  resume=True continues the run in `out` with the recipe, seed and data
            it was started with (recipe may then be None).
    precision: auto | fp32 | bf16, overriding the recipe's (see inference.resolve_precision).
    on_epoch: called in the main process after each epoch (once it is on disk) with the epoch's metrics row
            and the model as it is evaluated, e.g. digitrec.tensorboard's writer.
    teacher: a model file or run folder to distill from (distill.py): the digits' loss becomes the recipe's
            mix of cross-entropy on the labels and the teacher's soft targets.  A resumed run needs the same one.
    init:   a model file or run folder to start from instead of random weights (fine-tuning: e.g. the shipped
            model taught new non-digits in a few epochs); its architecture and data set must be the recipe's.
            Recorded in config.json and the metadata; a resumed run starts from its own checkpoint.
    """
    run_dir = Path(out) if out is not None else None
    teacher = Teacher.of(teacher) if teacher is not None else None
    if init is not None and resume:
        raise DigitrecError("a resumed run continues from its own checkpoint: init does not apply")
    init = ModelFile.of(init) if init is not None else None
    if run_dir is not None:
        config = _start_run_dir(run_dir, resume)
        if config:  # a resumed run keeps what it was started with
            if recipe is not None and recipe != Recipe.from_dict(config["recipe"]):
                raise DigitrecError(f"{run_dir} was started with another recipe; resume it with recipe=None")
            check_resumed(config.get("teacher"), teacher, run_dir)
            recipe, seed, dataset = Recipe.from_dict(config["recipe"]), config["seed"], config["dataset"]
            init = ModelFile(Path(config["init"]["path"]), config["init"]["sha256"]) if config.get("init") else None
    elif resume:
        raise DigitrecError("resume needs the run folder (--resume RUN_DIR)")
    if not isinstance(recipe, Recipe):  # None is fine only when resuming: the run's own recipe is used
        raise DigitrecError(f"train() needs a Recipe (digitrec.training.recipes), not {type(recipe).__name__}")

    if precision is not None:
        recipe = recipe.with_overrides(precision=precision)
    if dataset != "mnist" and (recipe.outliers or recipe.printed or recipe.augment.euro):  # made for digits
        raise DigitrecError(f"the recipe's synthesised non-digits, printed digits and European 1s and 7s are for "
                            f"mnist, not {dataset}: "
                            + ("this run's recipe cannot change on resume; start a new run with --set outliers=0 "
                               "--set printed=0 --set augment.euro=0" if resume
                               else "add --set outliers=0 --set printed=0 --set augment.euro=0"))
    if init is not None and not resume:  # before the data and the banks: fail early
        _check_start(init, recipe, dataset)
    dev = select_device(device)
    precision = resolve_precision(recipe.precision, dev)
    keep_freed_memory()
    world = distributed.init(dev)
    if recipe.batch_size % world.size:
        raise DigitrecError(f"--batch-size {recipe.batch_size} (global) must divide by the {world.size} processes")
    spec = dataset_spec(dataset)
    teacher_net = teacher.load(dataset, dev) if teacher is not None else None  # before the data: fail early
    train_split, test_split = load_split(dataset, data_dir, True), load_split(dataset, data_dir, False)
    val_split = None
    if recipe.validation:  # held out of training, for choosing things afterwards; the test set is only reported
        train_split, val_split = split_validation(train_split, recipe.validation)
    outliers = None
    if recipe.outliers:  # non-digits mixed into every batch, trained towards "no digit in particular"
        from digitrec.data.outliers import TRAIN_BANK, outlier_bank

        bank_size = min(TRAIN_BANK, len(train_split) // 2)  # fewer for a small data set: made in seconds
        outliers = torch.from_numpy(outlier_bank(data_dir, "train", bank_size, log=log if world.is_main else _quiet))
    printed = None
    if recipe.printed:  # labelled printed-font digits beside MNIST's in every batch
        from digitrec.data.outliers import PRINTED_BANK, printed_digit_bank

        images, labels = printed_digit_bank(data_dir, "train", min(PRINTED_BANK, len(train_split) // 2),
                                            log=log if world.is_main else _quiet)
        printed = Split(torch.from_numpy(images), torch.from_numpy(labels))
    if dev.type == "cuda":  # the whole data set fits on any GPU: no host-to-device copies per batch
        train_split, test_split = train_split.to(dev), test_split.to(dev)
        val_split = val_split.to(dev) if val_split is not None else None
        outliers = outliers.to(dev) if outliers is not None else None
        printed = printed.to(dev) if printed is not None else None
    n_outliers = round(recipe.batch_size // world.size * recipe.outliers)
    n_printed = round(recipe.batch_size // world.size * recipe.printed)

    torch.manual_seed(seed)  # initial weights
    net = build_model(recipe.model).to(dev)
    net = net.to(memory_format=torch.channels_last)  # faster convolutions and pooling on CPU and GPU alike
    ema = AveragedModel(net, avg_fn=ema_with_warmup(recipe.ema_decay), use_buffers=True) \
        if recipe.ema_decay > 0 else None
    optimizer = OPTIMIZERS[recipe.optimizer](net.parameters(), recipe, dev.type in ("cpu", "cuda"))
    n_used = int(len(train_split) * recipe.train_fraction)
    n_used -= n_used % world.size  # equal shards, so every process runs the same number of steps
    local_batch = recipe.batch_size // world.size
    steps_per_epoch = -(-(n_used // world.size) // local_batch)
    if steps_per_epoch == 0:
        raise DigitrecError(f"train_fraction {recipe.train_fraction} of {len(train_split)} images leaves no batch to "
                            f"train on: raise it", code="invalid_input")
    make_schedule, schedule_unit = SCHEDULES[recipe.schedule]
    scheduler = make_schedule(optimizer, recipe, steps_per_epoch * recipe.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    history: list[dict] = []
    start_epoch = 0
    last = last_checkpoint_dir(run_dir) if resume and run_dir is not None else None
    if last is not None:
        weights, _, state = load_checkpoint(last)
        net.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, start_epoch = state["history"], state["epoch"]
        log(f"resuming {run_dir} after epoch {start_epoch}/{recipe.epochs}")
    elif init is not None:  # (also a resumed run stopped before its first checkpoint)
        _start_from(net, init)

    hashes = data_hashes(dataset, data_dir)
    config = {"recipe": recipe.to_dict(), "seed": seed, "dataset": dataset, "data_dir": str(data_dir),
              "device": str(dev), "world_size": world.size, "precision": precision,
              "data_sha256": hashes, "command": sys.argv,
              "versions": {"python": platform.python_version(), "torch": torch.__version__, "digitrec": __version__}}
    if teacher is not None:
        config["teacher"] = teacher.to_dict()
    if init is not None:
        config["init"] = {**init.to_dict(), "path": str(init.path.resolve())}  # to start again on resume
    if run_dir is not None and world.is_main and start_epoch == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")

    model = net
    if world.size > 1:
        model = nn.parallel.DistributedDataParallel(net)
    if compile:
        model = torch.compile(model)
    eval_model = ema.module if ema is not None else net
    show_bar = sys.stderr.isatty() if progress is None else progress

    def meta(epoch: int, accuracy: float | None) -> ModelMeta:
        return ModelMeta(architecture=recipe.model, recipe=recipe.to_dict(), dataset=dataset,
                         classes=list(spec.classes), epoch=epoch, test_accuracy=accuracy, seed=seed,
                         precision=precision, data_sha256=hashes, teacher=teacher.to_dict() if teacher else None,
                         init=init.to_dict() if init else None, digitrec_version=__version__)

    for epoch in range(start_epoch, recipe.epochs):
        started = time.perf_counter()
        order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        order = order[:n_used][world.rank::world.size].to(dev)
        torch.manual_seed(epoch_seed(seed, epoch) + 7919 * world.rank)  # dropout and augmentation draws
        net.train()
        running = torch.zeros((), device=dev)
        bar = _progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{recipe.epochs}") if show_bar else None
        for step, (images, labels) in enumerate(batches(train_split, local_batch, order)):
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            if recipe.augment.euro > 0:  # the data set's own digits only: printed 1s have their flags already
                images = european_strokes(images, labels, recipe.augment.euro)
            if printed is not None:  # (before the outliers: the loss reads digits as the first len(labels))
                pick = torch.randint(len(printed), (n_printed,), device=dev)
                images, labels = torch.cat([images, to_float(printed.images[pick])]), torch.cat([labels,
                                                                                                printed.labels[pick]])
            if outliers is not None:  # drawn from the epoch's seeded RNG, like dropout: a resume replays them
                pick = torch.randint(len(outliers), (n_outliers,), device=dev)
                images = torch.cat([images, to_float(outliers[pick])])
            if recipe.augment.enabled:
                images = random_affine(images, recipe.augment)
            images = images.contiguous(memory_format=torch.channels_last)
            with autocast(dev, precision):
                logits = model(images).float()
                loss = criterion(logits[:len(labels)], labels)
                if teacher_net is not None:  # the digits only: the teacher has nothing to say on outliers
                    with torch.no_grad():
                        soft = teacher_net(images[:len(labels)]).float()
                    loss = (1 - recipe.distill_weight) * loss + recipe.distill_weight * soft_target_loss(
                        logits[:len(labels)], soft, recipe.distill_temperature)
                if outliers is not None:  # cross-entropy to the uniform distribution over the ten digits
                    rest = logits[len(labels):]
                    loss = loss + recipe.outlier_weight * (rest.logsumexp(1) - rest.mean(1)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule_unit == "batch":
                scheduler.step()
            if ema is not None:
                ema.update_parameters(net)
            running += loss.detach()
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{running.item() / (step + 1):.4f}")
        if bar is not None:
            bar.close()
        if schedule_unit == "epoch":
            scheduler.step()
        train_loss = distributed.mean(running / steps_per_epoch, world).item()
        train_seconds = time.perf_counter() - started
        lr = scheduler.get_last_lr()[0]
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr, "seconds": train_seconds,
               "images_per_second": n_used / train_seconds}
        if val_split is not None:
            val = evaluate_split(eval_model, val_split, recipe.eval_batch_size, dev)
            row.update(val_loss=val.loss, val_accuracy=val.accuracy)
        if recipe.test_each_epoch or epoch + 1 == recipe.epochs:
            ev = evaluate_split(eval_model, test_split, recipe.eval_batch_size, dev)
            row.update(test_loss=ev.loss, test_accuracy=ev.accuracy)
        history.append(row)
        if run_dir is not None and world.is_main:
            state = {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "history": history}
            if ema is not None:
                state["ema"] = ema.state_dict()
            save_checkpoint(run_dir, epoch + 1, net, meta(epoch + 1, row.get("test_accuracy")), state)
            _write_metrics(run_dir, history)
        if world.is_main:  # after the checkpoint: a line printed means the epoch is safe on disk
            validation = f"Val Accuracy: {row['val_accuracy']:.2f}%, " if val_split is not None else ""
            test = f"Test Loss: {row['test_loss']:.4f}, Test Accuracy: {row['test_accuracy']:.2f}%, " \
                if "test_loss" in row else ""
            log(f"Epoch [{epoch + 1}/{recipe.epochs}], Average Loss: {train_loss:.4f}, LR: {lr:.6f}, "
                f"{validation}{test}{train_seconds:.1f} s")
            if on_epoch is not None:
                on_epoch(row, eval_model)

    # Calibration on held-out data: the validation split (or, for recipes that train on every image, the same
    # carve of images they trained on: said in the metadata), plus held-out non-digits when the recipe uses them.
    final = meta(recipe.epochs, history[-1]["test_accuracy"])
    held_out = val_split if val_split is not None else calibration_digits(train_split, 0)
    outliers_val = held_out_non_digits(data_dir, len(held_out), log if world.is_main else _quiet) \
        if outliers is not None else None
    calibration, summary = calibrate(eval_model, final, held_out, outliers_val, dev, seen=val_split is None)
    final = replace(final, calibration=calibration.to_dict(), calibration_validation=summary)
    # Per epoch a plain evaluation tracks progress; the final model is measured once the way it will predict
    # (test-time shifts, calibration): that figure is the one saved with it.
    final_eval = evaluate_split(predictive_model(eval_model, final), test_split, recipe.eval_batch_size, dev)
    final = replace(final, test_accuracy=final_eval.accuracy)
    accuracy = final.test_accuracy
    if world.is_main:
        log(f"calibrated on {calibration.fitted_on}: temperature {calibration.temperature:.3f}, validation ECE "
            f"{summary['ece_before']:.2%} -> {summary['ece']:.2%}, uncertain below {calibration.uncertain_below:.3f} "
            f"(validation digits flagged: {summary['digits_flagged']:.2%})" +
            (f", not a digit below {calibration.not_a_digit_below:.3f} (validation non-digits: "
             f"{summary['outliers_not_a_digit']:.1%} not a digit, {summary['outliers_uncertain_or_not']:.1%} "
             f"not a confident digit)" if outliers_val is not None else "") +
            f"; test ECE {expected_calibration_error(final_eval.probabilities, final_eval.labels):.2%}")
    if run_dir is not None and world.is_main:
        save_model(run_dir / "model.safetensors", eval_model, final)
        _write_metrics(run_dir, history)
        if len(history) > 1:  # a curve needs two points; a one-epoch run's figures are in metrics.jsonl
            from digitrec.plots import curves

            curves(history, run_dir / "curves.png")
    distributed.barrier(world)
    distributed.shutdown(world)
    if world.is_main:
        log(f"Test Accuracy: {accuracy:.2f}%" + (" (with test-time shifts)" if recipe.tta else ""))
    return RunResult(eval_model, history, run_dir, accuracy, final)


def _check_start(init: ModelFile, recipe: Recipe, dataset: str) -> None:
    """Refuse a starting model of another architecture or data set (from its metadata: no weights read)."""
    from digitrec.modelfile import read_meta

    meta = read_meta(init.path)
    if meta.architecture != recipe.model or meta.dataset != dataset:
        raise DigitrecError(f"cannot start from {init.path}: it is a {meta.architecture!r} model of {meta.dataset}, "
                            f"the recipe trains {recipe.model!r} on {dataset}")


def _start_from(net: nn.Module, init: ModelFile) -> None:
    """Copy the weights of `init` (the file whose fingerprint the run recorded) into `net`."""
    from digitrec.modelfile import load_model

    if ModelFile.of(init.path).sha256 != init.sha256:
        raise DigitrecError(f"cannot start from {init.path}: the file changed since the run began",
                            code="invalid_model")
    net.load_state_dict(load_model(init.path)[0].state_dict())


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
