"""`digitrec ablate`: does each of the course report's four "key improvements" (its section 5.2: the third
conv layer, BatchNorm, Dropout, the learning-rate schedule) actually help, by how much, and how sure can we be?

Each variant is the seed recipe with one improvement removed, written as data: recipe fields (a model name from
models.MODELS, a schedule).  Every variant trains with N seeds on the same seeded validation carve of the
training set (recipe field `validation`); variants are compared on validation accuracy after the last epoch
(mean, std, 95% t-interval, Welch's t-test against `seed`).  The test set is evaluated once per run, after the
last epoch, and only reported.  Each run is an ordinary run folder OUT/<variant>/seed-<k>; finished ones are
read back instead of trained again, so an interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from digitrec.data.datasets import say
from digitrec.errors import DigitrecError
from digitrec.files import atomic_write_text
from digitrec.models import build_model, count_parameters
from digitrec.training.recipes import RECIPES, Recipe
from digitrec.training.train import train

SIGNIFICANCE = 0.05  # a difference counts when Welch's test gives p below this


@dataclass(frozen=True)
class Variant:
    name: str
    removes: str  # what is taken away, in words
    fields: dict = field(default_factory=dict)  # recipe fields that differ from the base recipe
    claim: str = ""  # the report's claim that this variant tests


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("seed", "nothing: the report's network and schedule"),
    Variant("no-conv3", "the third conv block (two blocks, then Linear(32·7·7 → 10))", {"model": "seed-no-conv3"},
            "the third convolution layer helps"),
    Variant("no-batchnorm", "BatchNorm after conv3", {"model": "seed-no-bn"}, "BatchNorm helps"),
    Variant("no-dropout", "Dropout(0.5) before the output layer", {"model": "seed-no-dropout"}, "Dropout helps"),
    Variant("constant-lr", "the StepLR schedule (lr stays 1e-3)", {"schedule": "constant"},
            "the learning-rate schedule helps"),
]}

# The seed recipe as the ablation runs it: 5,000 training images held out for the comparison (the same
# seeded, stratified carve for every run), the test set looked at once at the end.
BASE = RECIPES["seed"].with_overrides(name="ablate", validation=5000, test_each_epoch=False)


def variant_recipe(variant: Variant, base: Recipe = BASE) -> Recipe:
    return base.with_overrides(name=f"ablate-{variant.name}", **variant.fields)


def ablate(out: str | os.PathLike = "runs/ablation", *, variants: Sequence[str] | None = None, seeds: int = 5,
           base: Recipe = BASE, data_dir: str | os.PathLike = "data", device: str = "auto",
           tensorboard: bool = False, progress: bool | None = None,
           log: Callable[[str], None] = say) -> dict:
    """Train every (variant, seed) not yet finished in `out`, then write ablation.json, ablation.md,
    ablation.png and curves.png there; returns what ablation.json holds."""
    names = list(VARIANTS) if variants is None else list(dict.fromkeys(variants))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise DigitrecError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}" if unknown
                            else "no variants given")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise DigitrecError(f"seeds must be a whole number of at least 1, not {seeds!r}")
    if not isinstance(base, Recipe):
        raise DigitrecError(f"base must be a Recipe, not {type(base).__name__}")
    if base.validation < 1:
        raise DigitrecError("the ablation compares variants on a validation split: recipe field validation "
                            "must be at least 1")
    out = Path(out)
    # Seed by seed, every variant: a stopped ablation has comparable runs for the seeds it finished
    # (`--seeds K` then reports on those).
    jobs = [(VARIANTS[n], s) for s in range(seeds) for n in names]
    hook = None
    if tensorboard:
        from digitrec.training.tensorboard_log import TensorBoardLog, require_tensorboard

        require_tensorboard()  # before the first run, not after the finished ones are read
        hook = TensorBoardLog  # one writer per run folder
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for i, (variant, seed) in enumerate(jobs, 1):
        recipe, run_dir = variant_recipe(variant, base), out / variant.name / f"seed-{seed}"
        state = _run_state(run_dir, recipe, seed)
        if state == "finished":
            log(f"run {i}/{len(jobs)}: {variant.name}, seed {seed}: finished earlier, read from {run_dir}")
        else:
            log(f"run {i}/{len(jobs)}: {variant.name}, seed {seed} -> {run_dir}"
                + (" (resuming)" if state == "started" else ""))
            writer = hook(run_dir) if hook else None
            try:
                train(None if state == "started" else recipe, out=run_dir, resume=state == "started", seed=seed,
                      data_dir=data_dir, device=device, progress=progress, log=log,
                      on_epoch=writer.on_epoch if writer else None)
            finally:
                if writer:
                    writer.close()
        runs[variant.name].append(_read_run(run_dir, seed))
        if state != "finished" or i == len(jobs):  # the results so far, after every run (marked partial)
            report = _report(names, runs, base, seeds, time.perf_counter() - started, device, (i, len(jobs)))
            atomic_write_text(out / "ablation.json", json.dumps(report, indent=2) + "\n")
            atomic_write_text(out / "ablation.md", format_table(report) + "\n")
            _plot(report, out / "ablation.png", out / "curves.png")
    report["files"] = [str(out / f) for f in ("ablation.md", "ablation.json", "ablation.png", "curves.png")]
    return report


def _run_state(run_dir: Path, recipe: Recipe, seed: int) -> str:
    """'new', 'started' (config.json, no final model) or 'finished'; refuses a folder holding another run."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        return "new"
    config = json.loads(config_path.read_text())
    if Recipe.from_dict(config["recipe"]) != recipe or config["seed"] != seed:
        raise DigitrecError(f"{run_dir} holds a run with other settings than this ablation's (epochs, --set, ...): "
                            "pass another --out, or the same options as before")
    return "finished" if (run_dir / "model.safetensors").is_file() else "started"


def _read_run(run_dir: Path, seed: int) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "run_dir": str(run_dir), "val_accuracy": rows[-1]["val_accuracy"],
            "test_accuracy": rows[-1]["test_accuracy"],
            "seconds_per_epoch": sum(r["seconds"] for r in rows) / len(rows),
            "val_curve": [r["val_accuracy"] for r in rows], "val_loss_curve": [r["val_loss"] for r in rows]}


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and the 95% t-interval of the mean (None where n = 1 allows none)."""
    from scipy import stats

    n = len(values)
    t = torch.tensor(values, dtype=torch.float64)
    mean = t.mean().item()
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = t.std().item()
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None when it is undefined."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the p-value is still what it is
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return None if math.isnan(p) else float(p)


def _verdict(diff: float, p: float | None) -> str:
    if p is None:
        return "not testable (needs 2+ seeds each)"
    if p >= SIGNIFICANCE:
        return "no clear difference: the claim does not hold on this evidence"
    return "removing it hurts: the claim holds" if diff < 0 else "removing it helps: the claim does not hold"


def _report(names: list[str], runs: dict[str, list[dict]], base: Recipe, seeds: int, wall: float,
            device: str, progress: tuple[int, int]) -> dict:
    seed_val = [r["val_accuracy"] for r in runs.get("seed", [])]
    variants = []
    for name in (n for n in names if runs[n]):
        variant, rs = VARIANTS[name], runs[name]
        val = [r["val_accuracy"] for r in rs]
        entry = {"name": name, "removes": variant.removes, "claim": variant.claim, "fields": variant.fields,
                 "model": variant_recipe(variant, base).model,
                 "parameters": count_parameters(build_model(variant_recipe(variant, base).model)),
                 "validation": summarize(val), "test": summarize([r["test_accuracy"] for r in rs]),
                 "seconds_per_epoch": sum(r["seconds_per_epoch"] for r in rs) / len(rs), "runs": rs}
        if name != "seed" and seed_val:
            diff = entry["validation"]["mean"] - summarize(seed_val)["mean"]
            p = welch_p(val, seed_val)
            entry.update(diff_vs_seed=diff, p_value=p, verdict=_verdict(diff, p))
        variants.append(entry)
    return {"metric": "validation accuracy (%) after the last epoch", "base_recipe": base.to_dict(),
            "validation_images": base.validation, "epochs": base.epochs, "seeds": list(range(seeds)),
            "significance": SIGNIFICANCE, "variants": variants,
            "runs_finished": progress[0], "runs_planned": progress[1],
            "wall_seconds_this_call": wall,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
                        "torch": torch.__version__}}


def _pm(s: dict, digits: int = 2) -> str:
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else "")


def format_table(report: dict) -> str:
    """The ablation as a Markdown table, then one line per claim."""
    partial = report["runs_finished"] < report["runs_planned"]
    lines = ([f"**Partial: {report['runs_finished']} of {report['runs_planned']} runs finished.**", ""] if partial
             else []) + [f"Ablation of the seed recipe: {report['epochs']} epochs, seeds {report['seeds']}, compared on "
             f"{report['validation_images']:,} held-out training images (validation accuracy after the last "
             "epoch, %); the test set is evaluated once per run and only reported.", "",
             "| variant | removes | parameters | validation % (mean ± std) | 95% CI | Δ vs seed (points) | "
             "p (Welch) | test % (mean ± std) | s / epoch |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v in report["variants"]:
        ci = v["validation"]["ci95"]
        diff = f"{v['diff_vs_seed']:+.2f}" if "diff_vs_seed" in v else "—"
        p = f"{v['p_value']:.3f}" if v.get("p_value") is not None else "—"
        lines.append(f"| {v['name']} | {v['removes']} | {v['parameters']:,} | {_pm(v['validation'])} | "
                     + (f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "—")
                     + f" | {diff} | {p} | {_pm(v['test'])} | {v['seconds_per_epoch']:.1f} |")
    verdicts = [v for v in report["variants"] if "verdict" in v]
    if verdicts:
        lines += ["", f"Verdict per claim (Welch's t-test, p < {report['significance']}):"]
        lines += [f"- {v['claim']} ({v['name']}): {v['verdict']} "
                  f"(Δ {v['diff_vs_seed']:+.2f} points, p = "
                  + (f"{v['p_value']:.3f})" if v["p_value"] is not None else "n/a)") for v in verdicts]
    return "\n".join(lines)


def _plot(report: dict, points_path: Path, curves_path: Path) -> None:
    from digitrec.plots import plt

    variants = report["variants"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(variants) + 1.8), sharey=True)
    for ax, split in zip(axes, ("validation", "test")):
        key = "val_accuracy" if split == "validation" else "test_accuracy"
        for row, v in enumerate(variants):
            y = len(variants) - 1 - row
            values = [r[key] for r in v["runs"]]
            spread = torch.linspace(-0.15, 0.15, len(values)).tolist() if len(values) > 1 else [0.0]
            ax.plot(values, [y + d for d in spread], "o", color=f"C{row}", alpha=0.6, markersize=5)
            s = v[split]
            if s["ci95"]:
                ax.plot(s["ci95"], [y - 0.3] * 2, "-", color="black", linewidth=2)
            ax.plot([s["mean"]], [y - 0.3], "|", color="black", markersize=12, markeredgewidth=2)
            if v["name"] == "seed":
                ax.axvline(s["mean"], color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel=f"{split} accuracy (%)",
               title="validation: what variants are compared on" if split == "validation" else "test: reported only")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(variants)), [v["name"] for v in reversed(variants)])
    fig.suptitle("dots: one run each; black bar: mean and 95% confidence interval; dashed line: seed's mean",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(points_path, dpi=100)
    plt.close(fig)

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, v in enumerate(variants):
        for j, r in enumerate(v["runs"]):
            epochs = range(1, len(r["val_curve"]) + 1)
            label = v["name"] if j == 0 else None
            ax_loss.plot(epochs, r["val_loss_curve"], "-", color=f"C{i}", alpha=0.7, label=label)
            ax_acc.plot(epochs, r["val_curve"], "-", color=f"C{i}", alpha=0.7, label=label)
    finals = [x for v in variants for r in v["runs"] for x in r["val_curve"][1:]]
    if finals:  # the first epoch sits far below the rest: leave it off the scale
        ax_acc.set_ylim(min(finals) - 0.1, max(finals) + 0.1)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="validation loss, every run", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="%", title="validation accuracy, every run")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(curves_path, dpi=100)
    plt.close(fig)
