"""Training recipes as data.  A recipe names every hyperparameter; the training loop reads them and never
branches on the recipe's name.  `digitrec recipes` prints them all; every run saves its recipe in config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from .errors import DigitrecError


@dataclass(frozen=True)
class Augment:
    """Random affine distortion per training image (0 / (1, 1) = off)."""

    degrees: float = 0.0  # rotation, uniform in [-degrees, degrees]
    translate: float = 0.0  # shift, uniform in [-translate, translate] x image size, per axis
    scale: tuple[float, float] = (1.0, 1.0)  # zoom factor, uniform in [lo, hi]
    # Other people's pens and hands: stroke weight changed by up to this share of a 3x3 dilation/erosion,
    # and a smooth random warp (elastic distortion) of up to this many pixels.
    thickness: float = 0.0
    elastic: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.degrees > 0 or self.translate > 0 or self.scale != (1.0, 1.0) or self.thickness > 0 \
            or self.elastic > 0


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str = "seed"  # a key of models.MODELS
    epochs: int = 10
    batch_size: int = 64  # global: split across processes under torchrun
    eval_batch_size: int = 1000
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "step"  # step (per epoch) | onecycle (per batch) | constant
    step_size: int = 5  # step: epochs between decays
    gamma: float = 0.5  # step: decay factor
    warmup: float = 0.25  # onecycle: fraction of steps spent rising to lr
    label_smoothing: float = 0.0
    augment: Augment = field(default_factory=Augment)
    ema_decay: float = 0.0  # > 0 keeps an exponential moving average of the weights and saves that
    train_fraction: float = 1.0  # share of each epoch's permutation actually used (fast recipes: < 1)
    tta: bool = False  # evaluate on the image and small shifts of it, averaging probabilities
    # Training images held out as a validation split (seeded, stratified; data.split_validation) for what is
    # chosen after training (calibration, thresholds) and for comparing variants.  0: train on all of them.
    validation: int = 5000
    # Outlier exposure (outliers.py): this many non-digits per digit in each batch, trained towards equal
    # probabilities for all ten digits with this weight (Hendrycks et al. 2019 use 0.5).  0: off.
    outliers: float = 0.0
    outlier_weight: float = 0.5
    # auto: bf16 autocast where the hardware has bf16 (inference.resolve_precision), else fp32; fp32; bf16.
    precision: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        d = dict(d)
        augment = d.pop("augment", {}) or {}
        if "scale" in augment:
            augment["scale"] = tuple(augment["scale"])
        known = {f.name for f in fields(cls)}
        return cls(augment=Augment(**augment), **{k: v for k, v in d.items() if k in known})

    def with_overrides(self, **overrides) -> Recipe:
        """The recipe with the given fields replaced; None means 'keep the recipe's value'."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


RECIPES: dict[str, Recipe] = {
    # The course report, exactly: Adam 1e-3, StepLR(5, 0.5), batch 64, 10 epochs, [0, 1] inputs.
    # It trains on all 60,000 images, as the report did (validation=0).
    "seed": Recipe(name="seed", validation=0, precision="fp32"),
    # Shortest wall time to 99% on a CPU: a small BN network, big batches, one-cycle LR, under one epoch.
    "fast": Recipe(name="fast", model="fast", epochs=1, batch_size=128, optimizer="adam", lr=8e-3,
                   schedule="onecycle", warmup=0.2, label_smoothing=0.05, train_fraction=0.7),
    # Best single model, and the shipped one: augmentation for other people's hands (affine, elastic, stroke
    # weight), one-cycle SGD, label smoothing, weight averaging, and non-digits in every batch (outlier
    # exposure) so that it can say "not a digit".  No test-time shifts: with calibration they moved validation
    # accuracy by less than they cost (five network calls per image).
    "best": Recipe(name="best", model="wide", epochs=15, batch_size=128, optimizer="sgd", lr=0.1,
                   momentum=0.9, weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.1,
                   augment=Augment(degrees=12.0, translate=0.1, scale=(0.9, 1.1), thickness=0.5, elastic=1.5),
                   ema_decay=0.999, outliers=0.25),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise DigitrecError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}") from None
