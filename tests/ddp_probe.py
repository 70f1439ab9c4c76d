"""`python ddp_probe.py WEIGHTS_DIR TRAIN-ARGS...`, alone or under torchrun: `digitrec train --recipe probe ...`
through the real CLI, where the probe recipe's network has no BatchNorm and no dropout.  Then N processes
splitting each global batch must compute what one process computes on the whole batch, up to float rounding.
Every process also writes the weights it ended with to WEIGHTS_DIR/rank-R.safetensors."""

import os
import sys
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from digitrec import cli, models
from digitrec.training import recipes
from digitrec.training import train as training


class Probe(nn.Module):
    """conv 5x5 -> ReLU -> max-pool -> linear: nothing that depends on the batch or on random draws."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.out = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        return self.out(self.features(x).flatten(1))


models.MODELS["probe"] = Probe
recipes.CHOICES["model"] += ("probe",)  # recipes validate model names against this list
# One-cycle SGD: the learning rate changes every step, so a process that ran a different number of steps
# ends elsewhere.  200 images held out: 1,800 of the small split's 2,000 train, a short last batch included.
recipes.RECIPES["probe"] = recipes.Recipe(name="probe", model="probe", epochs=2, batch_size=64, optimizer="sgd",
                                          lr=0.05, schedule="onecycle", warmup=0.3, validation=200,
                                          precision="fp32")  # bf16 rounds differently for 1 and 2 processes


def train_and_keep_weights(*args, **kwargs):
    result = plain_train(*args, **kwargs)
    weights = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    save_file(weights, str(Path(sys.argv[1]) / f"rank-{os.environ.get('RANK', '0')}.safetensors"))
    return result


plain_train, training.train = training.train, train_and_keep_weights

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[2:]))
