"""What the network sees: `digitrec explain` and `digitrec summary`.

explain: per image one PNG with the 28x28 input as the model sees it (through `preprocess`, the path `predict`
takes), the top-3 probabilities, an attribution map for the predicted digit and for the runner-up, conv1's
filters and the feature maps after each conv block.  The attribution is Captum's Integrated Gradients from a
blank (black) image, averaged over a few noisy copies of the input (SmoothGrad, Captum's NoiseTunnel): red
pixels push the score of that digit up, blue ones push it down.
summary: torchinfo's table of layers, output shapes, parameters and multiply-adds per image.

Both need the optional extra `learn` (captum, torchinfo)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitrec.errors import DigitrecError, missing_dependency
from digitrec.imaging.prepare import preprocess
from digitrec.inference.backends import predictive_model
from digitrec.inference.predict import default_model_path, expand
from digitrec.meta import ModelMeta
from digitrec.modelfile import load_model
from digitrec.models import MODELS, Ensemble, build_model

# SmoothGrad over Integrated Gradients: NOISE_SAMPLES noisy copies (std NOISE_STD in the [0, 1] input range),
# each integrated in IG_STEPS steps from a black image.  More of either: smoother maps, proportionally slower.
IG_STEPS, NOISE_SAMPLES, NOISE_STD = 24, 8, 0.1
SHOWN_CHANNELS = 16  # feature maps per block in the figure: the most active ones


def require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise missing_dependency(module, "learn") from None


@dataclass
class Explanation:
    name: str
    image: np.ndarray  # float32 [28, 28] in [0, 1]: what the model sees
    probabilities: np.ndarray  # [10], as `predict` reports them (with the model's test-time shifts, if any)
    attributions: dict[int, np.ndarray]  # digit -> [28, 28], for the predicted digit and the runner-up
    filters: np.ndarray  # conv1's weights [C_out, k, k] (first input channel)
    feature_maps: list[tuple[str, np.ndarray]]  # (layer, [C, H, W]) after each conv block's ReLU
    label: int | None = None  # the true digit, when known (an MNIST test image)

    @property
    def ranking(self) -> list[int]:
        return [int(d) for d in np.argsort(-self.probabilities)]

    @property
    def digit(self) -> int:
        return self.ranking[0]

    @property
    def runner_up(self) -> int:
        return self.ranking[1]

    def to_dict(self) -> dict:
        return {"name": self.name, "digit": self.digit, "runner_up": self.runner_up, "label": self.label,
                "topk": [[d, float(self.probabilities[d])] for d in self.ranking[:3]],
                "probabilities": [float(p) for p in self.probabilities],
                "attributions": {str(d): a.round(5).tolist() for d, a in self.attributions.items()}}


def load(model: str | os.PathLike | None = None) -> tuple[nn.Module, ModelMeta]:
    """A model file or run folder (default: the shipped model) in eval mode, and its metadata."""
    return load_model(Path(model) if model else default_model_path(), "cpu")


def explain_image(model: nn.Module, image: np.ndarray, meta: ModelMeta | None = None, name: str = "image",
                  label: int | None = None) -> Explanation:
    """Explain one float [28, 28] image in [0, 1] (already preprocessed)."""
    require("captum")
    from captum.attr import IntegratedGradients, NoiseTunnel

    image = np.asarray(image, dtype=np.float32)
    if image.shape != (28, 28):
        raise DigitrecError(f"explain_image needs a 28x28 image, not {image.shape}")
    model.eval()
    x = torch.from_numpy(image)[None, None]
    with torch.no_grad():  # as `predict` reports them: test-time shifts and calibration, if the model has them
        probabilities = predictive_model(model, meta or ModelMeta())(x).softmax(1)[0].numpy()
    first = model.members[0] if isinstance(model, Ensemble) else model  # layers to show: the first member's
    maps, hooks = [], []
    for layer_name, module in first.named_modules():
        if isinstance(module, nn.ReLU):
            hooks.append(module.register_forward_hook(
                lambda m, i, out, n=layer_name: maps.append((n, out[0].detach().numpy().copy()))
                if out.dim() == 4 else None))
    try:
        with torch.no_grad():
            first(x)
    finally:
        for h in hooks:
            h.remove()
    conv1 = next(m for m in first.modules() if isinstance(m, nn.Conv2d))
    ranking = np.argsort(-probabilities)
    smooth_ig = NoiseTunnel(IntegratedGradients(model))
    attributions = {}
    with torch.random.fork_rng():  # the noise is seeded: the same image gets the same map, every time
        torch.manual_seed(0)
        for digit in (int(ranking[0]), int(ranking[1])):
            a = smooth_ig.attribute(x, baselines=torch.zeros_like(x), target=digit, nt_type="smoothgrad",
                                    nt_samples=NOISE_SAMPLES, stdevs=NOISE_STD, n_steps=IG_STEPS,
                                    internal_batch_size=NOISE_SAMPLES * IG_STEPS)
            attributions[digit] = a[0, 0].detach().numpy()
    return Explanation(name, image, probabilities, attributions,
                       conv1.weight.detach()[:, 0].numpy().copy(), maps, label)


def explain(paths: list[str] = (), *, model: str | os.PathLike | None = None, out: str | os.PathLike = "explanations",
            indices: list[int] = (), data_dir: str | os.PathLike = "data") -> list[dict]:
    """`digitrec explain`: images (files, folders, globs, '-') and MNIST test images by index -> one PNG each in
    `out`.  Returns a record per input: name, the PNG written, digit, top-3, or an error and its code."""
    require("captum")
    if not paths and not indices:
        raise DigitrecError("name at least one image, or --index N for an MNIST test image")
    net, meta = load(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []

    def run(name: str, image: np.ndarray, stem: str, label: int | None = None) -> None:
        e = explain_image(net, image, meta, name, label)
        target = out / f"{stem}-explained.png"
        draw(e, target, meta.architecture or "?")
        records.append({"path": name, "out": str(target), **{k: v for k, v in e.to_dict().items()
                                                                 if k in ("digit", "runner_up", "topk", "label")},
                        "error": None, "error_code": None})

    for source in expand(list(paths)):
        try:
            digit = preprocess(source.read())
            if digit is None:
                raise DigitrecError("no ink found: the image is blank or uniform", code="no_ink")
            run(source.name, digit, Path(source.name).stem or "stdin")
        except DigitrecError as e:
            records.append({"path": source.name, "error": str(e), "error_code": e.code})
    if indices:
        from digitrec.data.datasets import load_split

        test = load_split(meta.dataset, data_dir, False)
        for i in indices:
            if not 0 <= i < len(test):
                raise DigitrecError(f"--index {i} is outside the test set (0-{len(test) - 1})")
            run(f"test[{i}]", test.images[i].numpy().astype(np.float32) / 255, f"test-{i}", int(test.labels[i]))
    return records


# --- pictures ----------------------------------------------------------------------------------------------

def _grid(tiles: np.ndarray, columns: int, pad: int = 1, fill: float = np.nan) -> np.ndarray:
    """[N, h, w] -> one image with the tiles in rows of `columns`, NaN (drawn as background) between them."""
    n, h, w = tiles.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad), fill, np.float32)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = tile
    return grid


def _scale(e: Explanation) -> float:
    """One colour scale for both maps, so they compare: the 99th percentile of |attribution| (a few extreme
    pixels would otherwise wash everything else out)."""
    return float(np.percentile(np.abs(np.stack(list(e.attributions.values()))), 99)) or 1.0


def draw(e: Explanation, path: str | os.PathLike, architecture: str = "") -> Path:
    """One figure, read top to bottom: input, top 3, attributions; conv1's filters; feature maps per block."""
    from matplotlib.colors import LinearSegmentedColormap

    from digitrec.plots import plt

    signed = LinearSegmentedColormap.from_list("signed", ["#1f5fd6", "white", "#d62728"])
    blocks = e.feature_maps
    fig = plt.figure(figsize=(11, 3.3 + 1.25 * (len(blocks) + 1)), layout="constrained")
    rows = fig.subfigures(2 + len(blocks), 1, height_ratios=[3.1] + [1.2] * (len(blocks) + 1))
    truth = "" if e.label is None else f", true digit {e.label}" + (" (wrong)" if e.label != e.digit else " (right)")
    top = rows[0]
    top.suptitle(f"{e.name}: the model ({architecture}) says {e.digit}{truth}", fontsize=12, weight="bold")
    ax_in, ax_p, ax_a, ax_b = top.subplots(1, 4, width_ratios=[1, 1.1, 1, 1])
    ax_in.imshow(e.image, cmap="gray", vmin=0, vmax=1)
    ax_in.set_title("input as the model sees it\n(28×28, white ink on black)", fontsize=9)
    top3 = e.ranking[:3]
    ax_p.barh(range(3), [e.probabilities[d] for d in top3], color=["#2463eb", "#9db7f5", "#d5e1fb"])
    for k, d in enumerate(top3):
        ax_p.text(0.02, k, f"{d}: {e.probabilities[d]:.3f}", va="center", fontsize=10, weight="bold")
    ax_p.set(xlim=(0, 1), ylim=(2.6, -0.6), yticks=[], title="top-3 probabilities")
    ax_p.title.set_fontsize(9)
    m = _scale(e)
    for ax, digit, what in ((ax_a, e.digit, "predicted"), (ax_b, e.runner_up, "runner-up")):
        ax.imshow(e.image, cmap="gray_r", vmin=0, vmax=1.6)  # the ink in light grey underneath
        ax.imshow(e.attributions[digit], cmap=signed, vmin=-m, vmax=m, alpha=0.75)
        ax.set_title(f"why {digit} ({what}, p={e.probabilities[digit]:.2f}):\nred raises its score, blue lowers it",
                     fontsize=9)
    for ax in (ax_in, ax_a, ax_b):
        ax.set_xticks([])
        ax.set_yticks([])

    k = e.filters.shape[-1]
    ax = rows[1].subplots()
    filters = e.filters / np.abs(e.filters).max(axis=(1, 2), keepdims=True).clip(1e-12)
    ax.imshow(_grid(filters, len(filters)), cmap=signed, vmin=-1, vmax=1)
    ax.set_title(f"conv1's {len(filters)} filters ({k}×{k}, each scaled to its own range; red positive, blue "
                 "negative weights)", fontsize=9)
    ax.axis("off")
    for row, (name, fmap) in zip(rows[2:], blocks):
        activity = fmap.reshape(len(fmap), -1).mean(1)
        shown = np.sort(np.argsort(-activity)[:SHOWN_CHANNELS])
        ax = row.subplots()
        ax.imshow(_grid(fmap[shown] / max(float(fmap.max()), 1e-12), SHOWN_CHANNELS), cmap="magma", vmin=0, vmax=1)
        which = f"all {len(fmap)}" if len(shown) == len(fmap) else f"the {len(shown)} most active of {len(fmap)}"
        ax.set_title(f"feature maps after {name} (ReLU): {fmap.shape[0]}×{fmap.shape[1]}×{fmap.shape[2]}, "
                     f"{which} channels; bright = strong response", fontsize=9)
        ax.axis("off")
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def overlay_png(e: Explanation, scale: int = 8) -> bytes:
    """The two attribution maps side by side over the input, as PNG (for the server; PIL only, fast)."""
    from PIL import Image, ImageDraw

    side = 28 * scale
    canvas = Image.new("RGB", (2 * side + 12, side + 24), "white")
    m = _scale(e)
    draw_text = ImageDraw.Draw(canvas)
    for k, (digit, what) in enumerate(((e.digit, "why"), (e.runner_up, "runner-up"))):
        a = np.clip(e.attributions[digit] / m, -1, 1)[..., None]
        ink = (255 - 110 * e.image)[..., None]  # the drawing in grey on white
        red, blue = np.array([214, 39, 40]), np.array([31, 95, 214])
        strength = np.abs(a)
        rgb = ink * (1 - strength) + np.where(a > 0, red, blue) * strength
        tile = Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).resize((side, side), Image.NEAREST)
        x = k * (side + 12)
        canvas.paste(tile, (x, 24))
        draw_text.text((x + 2, 4), f"{what} {digit} ({e.probabilities[digit]:.2f})",
                       fill=(29, 39, 51), font_size=16)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


# --- summary ---------------------------------------------------------------------------------------------

def summary(model: str | os.PathLike | None = None) -> str:
    """torchinfo's table for an architecture name (seed, wide, ...), a model file or a run folder (default:
    the shipped model): layers, output shapes, parameters, multiply-adds for one 28x28 image."""
    require("torchinfo")
    import torchinfo

    if model is not None and str(model) in MODELS:
        net, title = build_model(str(model)), f"architecture {model}"
    else:
        net, meta = load(model)
        title = f"{meta.architecture or '?'} from {Path(model) if model else default_model_path()}"
    stats = torchinfo.summary(net.eval(), input_size=(1, 1, 28, 28), verbose=0, depth=3,
                              col_names=("output_size", "num_params", "mult_adds"), row_settings=("var_names",))
    # torchinfo names its mult-add unit after a byte unit (Units.MEGABYTES): say millions instead
    return f"{title}\n{stats}".replace("(Units.MEGABYTES)", "(millions)").replace("(Units.GIGABYTES)", "(billions)")
