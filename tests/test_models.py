import pytest
import torch

from benchmarks.report_code import CNN
from digitrec.models import MODELS, Ensemble, SeedCNN, build_model, count_parameters


def test_seed_cnn_matches_the_report_name_for_name():
    ours, theirs = SeedCNN(), CNN()
    assert count_parameters(ours) == 37_642
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [v.shape for v in ours.state_dict().values()] == [v.shape for v in theirs.state_dict().values()]
    assert "conv3.1.running_var" in ours.state_dict() and "out.bias" in ours.state_dict()


def test_seed_cnn_and_report_cnn_load_each_other_and_agree():
    ours, theirs = SeedCNN().eval(), CNN().eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(ours(x), theirs(x))
    ours.load_state_dict(CNN().state_dict())


def test_seed_cnn_pooling_before_relu_gives_the_reports_outputs_and_gradients_bit_for_bit():
    ours, theirs = SeedCNN().train(), CNN().train()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(32, 1, 28, 28)
    torch.manual_seed(7)  # the same dropout mask for both
    a = ours(x)
    torch.manual_seed(7)
    b = theirs(x)
    assert torch.equal(a, b)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p.grad, q.grad), name
    assert torch.equal(ours.conv3[1].running_mean, theirs.conv3[1].running_mean)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_maps_images_to_ten_logits(name):
    model = build_model(name).eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_ensemble_averages_probabilities():
    members = [SeedCNN().eval(), SeedCNN().eval()]
    x = torch.rand(5, 1, 28, 28)
    expected = (members[0](x).softmax(1) + members[1](x).softmax(1)) / 2
    assert torch.allclose(Ensemble(members)(x).softmax(1), expected, atol=1e-6)
