"""Network architectures, looked up by name.  Every model takes float [N, 1, 28, 28] in [0, 1] and
returns 10 logits; any mean/std normalisation lives inside the model, so exported graphs are self-contained."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from digitrec.errors import DigitrecError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Dropout(nn.Dropout):
    """nn.Dropout with the mask drawn as rand >= p: the same distribution (each value kept with probability
    1 - p, survivors scaled by 1 / (1 - p)), but forward and backward on a CPU about 3x faster than with the
    bernoulli_ kernel nn.Dropout uses, which saves ~0.3 s of a 5 s seed-recipe epoch.  The random draws
    differ from nn.Dropout's; `inplace` is ignored."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        keep = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1 / (1 - self.p))
        return x * keep


class SeedCNN(nn.Module):
    """The course report's CNN, layer for layer and name for name (its state_dict loads into the report's
    `CNN` class and back).  37,642 parameters.

    The flags remove one of the report's claimed improvements each, for `digitrec ablate`: conv3=False ends
    after two conv blocks with Linear(32*7*7 -> 10); batchnorm=False drops conv3's BatchNorm; dropout=False
    drops the Dropout before the output layer.  A removed layer becomes nn.Identity, so the layers that stay
    keep their names and the forward pass stays one piece of code."""

    def __init__(self, conv3: bool = True, batchnorm: bool = True, dropout: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 5, stride=1, padding=2), nn.ReLU(), nn.MaxPool2d(2))  # 28 -> 14
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 5, stride=1, padding=2), nn.ReLU(), nn.MaxPool2d(2))  # 14 -> 7
        if conv3:
            self.conv3 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=1, padding=1),
                                       nn.BatchNorm2d(64) if batchnorm else nn.Identity(), nn.ReLU(),
                                       nn.MaxPool2d(2))  # 7 -> 3
        else:
            self.conv3 = nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity())
        self.dropout = Dropout(0.5) if dropout else nn.Identity()
        self.out = nn.Linear(64 * 3 * 3 if conv3 else 32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU and max-pooling commute exactly (max of ReLUs = ReLU of max), so each stage pools first and
        # applies ReLU to a quarter of the values: the same outputs and gradients bit for bit, ~1.5x faster.
        conv, relu, pool = self.conv1
        x = relu(pool(conv(x)))
        conv, relu, pool = self.conv2
        x = relu(pool(conv(x)))
        conv, bn, relu, pool = self.conv3
        x = relu(pool(bn(conv(x))))
        return self.out(self.dropout(x.flatten(1)))


class Normalize(nn.Module):
    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def conv_pool_bn(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    # Pooling first: BatchNorm and ReLU then run on a quarter of the values (on a CPU, about twice as fast).
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out), nn.ReLU()]


class FastCNN(nn.Module):
    """Small and cheap on a CPU: three conv-pool-BN-ReLU stages and a linear head (29k parameters)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Normalize(),
            *conv_pool_bn(1, width, 5),  # 28 -> 14
            *conv_pool_bn(width, 2 * width),  # 14 -> 7
            *conv_pool_bn(2 * width, 4 * width),  # 7 -> 3
        )
        self.out = nn.Linear(4 * width * 9, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x).flatten(1))


class WideCNN(nn.Module):
    """VGG-style pairs of conv-BN-ReLU, global average pooling: 288k parameters with 3x3 kernels (`wide`), 681k
    with 5x5 ones in the last stage (`wide-k5`, the `best` recipe's and the shipped model's network).  Before
    each max-pool, ReLU moves after the pool (the same function, less work)."""

    def __init__(self, width: int = 32, last_kernel: int = 3) -> None:
        super().__init__()
        w = width
        pool_then_relu = lambda c: [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.MaxPool2d(2),
                                    nn.ReLU()]
        self.features = nn.Sequential(
            Normalize(),
            *conv_bn(1, w), *pool_then_relu(w),  # 28 -> 14
            *conv_bn(w, 2 * w), *pool_then_relu(2 * w),  # 14 -> 7
            *conv_bn(2 * w, 4 * w, last_kernel), *conv_bn(4 * w, 4 * w, last_kernel),
            nn.AdaptiveAvgPool2d(1),
        )
        self.dropout = Dropout(0.2)
        self.out = nn.Linear(4 * w, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.features(x).flatten(1)))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "seed": SeedCNN, "fast": FastCNN, "wide": WideCNN,
    # 5x5 kernels in the last stage see a whole 7x7 map at once (48.4 M multiply-adds against wide's 29.1 M; the
    # 28x28 stage keeps 3x3).  Measured, 3 seeds of the best recipe: validation 99.73% against wide's 99.65
    # (docs/benchmarks.md, Training), so `best` uses it; `wide` stays as the cheaper network and an ensemble member.
    "wide-k5": partial(WideCNN, last_kernel=5),
    # The seed network with one of the course report's claimed improvements removed (`digitrec ablate`).
    "seed-no-conv3": partial(SeedCNN, conv3=False),
    "seed-no-bn": partial(SeedCNN, batchnorm=False),
    "seed-no-dropout": partial(SeedCNN, dropout=False),
}


def build_model(name: str) -> nn.Module:
    try:
        return MODELS[name]()
    except KeyError:
        raise DigitrecError(f"unknown architecture {name!r}; known: {', '.join(MODELS)}") from None


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode network for inference, each BatchNorm that directly follows a convolution in a
    Sequential folded into that convolution's weights (the same function up to rounding; PyTorch eager then
    runs one layer instead of two: the shipped model in bf16, 10,000 digits at batch 256 on 2 threads, 1.12 s
    -> 0.83 s).  The BatchNorm's place is kept by an Identity, so code that unpacks a stage still works."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for stage in fused.modules():
        if isinstance(stage, nn.Sequential):
            for i in range(len(stage) - 1):
                if isinstance(stage[i], nn.Conv2d) and isinstance(stage[i + 1], nn.BatchNorm2d):
                    stage[i], stage[i + 1] = fuse_conv_bn_eval(stage[i], stage[i + 1]), nn.Identity()
    return fused


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Ensemble(nn.Module):
    """Averages its members' probabilities; returns log of the mean, so softmax(output) is that mean."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


class ShiftAveraged(nn.Module):
    """Test-time shifts: mean logits of the image and its whole-pixel shifts (zero fill), in one batched call
    of the network (one call of 5N images is cheaper than five calls of N, and exports as one graph)."""

    def __init__(self, network: nn.Module, shifts: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.network = network
        self.shifts = tuple(shifts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1))
        views = [padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w] for dy, dx in self.shifts]
        logits = self.network(torch.cat(views))
        return logits.view(len(self.shifts), -1, logits.shape[-1]).mean(0)


class Calibrated(nn.Module):
    """logits / temperature, in float32: the softmax of the output is the calibrated probability."""

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).float() / self.temperature


class SequenceReader(nn.Module):
    """Reads a number whose digits may touch without cutting it (a CRNN, Shi, Bai & Yao 2015): convolutions
    over the strip (imaging.ink.to_strip: float [N, 1, 32, W] in [0, 1]) down to one feature column per 4 px,
    a bidirectional GRU along them, and per column 11 logits: CTC's blank (0) and the digits 0-9 (1-10)."""

    CLASSES = 11

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int]) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.MaxPool2d(pool)]

        self.features = nn.Sequential(Normalize(), *block(1, 16, (2, 2)), *block(16, 32, (2, 2)),
                                      *block(32, 64, (2, 1)), *block(64, 64, (2, 1)))  # 32 -> 2 rows
        self.rnn = nn.GRU(64 * 2, 64, batch_first=True, bidirectional=True)
        self.out = nn.Linear(128, self.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 32, W] -> [N, W / 4, 11] logits."""
        f = self.features(x)  # [N, 64, 2, W / 4]
        f = f.flatten(1, 2).transpose(1, 2)  # [N, W / 4, 128]
        return self.out(self.rnn(f)[0])
