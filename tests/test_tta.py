"""Test-time shifts (inference.TTA_SHIFTS, models.ShiftAveraged, used by predictive_model for recipes with tta):
each shift moves the image the way it says, the logits are the plain mean over the shifted copies, and a model
predicting with them is robust to small shifts."""

import numpy as np
import pytest
import torch

from digitrec.inference.backends import TTA_SHIFTS, predictive_model
from digitrec.meta import ModelMeta
from digitrec.models import FastCNN


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The shifted view ShiftAveraged feeds the network for one (dy, dx)."""
    views = []
    network = lambda batch: views.append(batch) or torch.zeros(len(batch), 10)
    from digitrec.models import ShiftAveraged

    ShiftAveraged(network, ((dy, dx),))(x)
    return views[0]


def predict_proba(model, x, tta=False):
    with torch.no_grad():
        return predictive_model(model, ModelMeta(recipe={"tta": tta}), temperature=1.0)(x).softmax(1)


def shifted_numpy(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """x [N, C, H, W] moved dy rows down and dx columns right, black coming in: written independently of
    evaluate.shift."""
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_the_shifts_are_the_image_and_its_four_one_pixel_neighbours():
    assert sorted(TTA_SHIFTS) == sorted([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)])


@pytest.mark.parametrize("dy, dx", [(1, 0), (-1, 0), (0, 1), (0, -1), (0, 0)])
def test_a_shift_moves_the_ink_that_way_and_fills_with_black(dy, dx):
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 20] = 1.0  # one lit pixel
    x[0, 0, 0, :] = 0.5  # and the top row, the left column: what falls off an edge is gone
    x[0, 0, :, 0] = 0.5
    y = shift(x, dy, dx)
    assert y.shape == x.shape
    assert y[0, 0, 10 + dy, 20 + dx] == 1.0 and (y == 1.0).sum() == 1
    assert torch.equal(y, torch.from_numpy(shifted_numpy(x.numpy(), dy, dx)))
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(shift(images, dy, dx), torch.from_numpy(shifted_numpy(images.numpy(), dy, dx)))


def test_tta_logits_are_the_mean_over_the_shifted_images():
    torch.manual_seed(0)
    model = FastCNN().eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        expected = torch.from_numpy(np.mean([model(torch.from_numpy(shifted_numpy(x.numpy(), dy, dx))).numpy()
                                             for dy, dx in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]],
                                            axis=0)).softmax(1).numpy()
        plain = model(x).softmax(1).numpy()
    got = predict_proba(model, x, tta=True).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert np.abs(got - plain).max() > 1e-4  # the shifts do change the answer
    np.testing.assert_allclose(predict_proba(model, x).numpy(), plain, atol=1e-6)


@pytest.mark.mnist
def test_shifted_digits_are_classified_as_the_unshifted_ones(mnist_dir):
    from digitrec.data.datasets import load_split
    from digitrec.inference.predict import default_model_path
    from digitrec.modelfile import load_model

    test = load_split("mnist", mnist_dir, train=False)
    x = test.images[:200].float().div(255).unsqueeze(1)
    network, _ = load_model(default_model_path())
    probs = predict_proba(network, x, tta=True).numpy()
    base = probs.argmax(1)
    assert (base == test.labels[:200].numpy()).mean() >= 0.99
    for dy, dx in [(2, 0), (-1, -1)]:
        moved = predict_proba(network, torch.from_numpy(shifted_numpy(x.numpy(), dy, dx)), tta=True)
        assert (moved.argmax(1).numpy() == base).mean() >= 0.99, (dy, dx)
