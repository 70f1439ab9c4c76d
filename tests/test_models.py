import pytest
import torch

from benchmarks.report_code import CNN
from digitrec.models import MODELS, Dropout, Ensemble, SeedCNN, build_model, count_parameters, fuse_conv_bn


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
    theirs.dropout = Dropout(0.5)  # ours draws its masks differently (tested below); here both draw the same
    x = torch.randn(32, 1, 28, 28)
    torch.manual_seed(7)
    a = ours(x)
    torch.manual_seed(7)
    b = theirs(x)
    assert torch.equal(a, b)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p.grad, q.grad), name
    assert torch.equal(ours.conv3[1].running_mean, theirs.conv3[1].running_mean)


def test_dropout_keeps_each_value_with_probability_1_minus_p_and_scales_survivors_like_nn_dropout():
    x = torch.rand(1000, 1000) + 0.5
    for p in (0.2, 0.5):
        layer = Dropout(p).train()
        assert isinstance(layer, torch.nn.Dropout)
        y = layer(x)
        kept = y != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 0.003  # 1e6 draws: std of the mean is 0.0005
        assert torch.allclose(y[kept], x[kept] / (1 - p))
        assert torch.equal(layer.eval()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    x.requires_grad_(True)
    y = Dropout(0.5).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * 2)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_maps_images_to_ten_logits(name):
    model = build_model(name).eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_ensemble_averages_probabilities():
    members = [SeedCNN().eval(), SeedCNN().eval()]
    x = torch.rand(5, 1, 28, 28)
    expected = (members[0](x).softmax(1) + members[1](x).softmax(1)) / 2
    assert torch.allclose(Ensemble(members)(x).softmax(1), expected, atol=1e-6)



@pytest.mark.parametrize("name", list(MODELS))
def test_folding_batchnorm_for_inference_keeps_the_function(name):
    torch.manual_seed(0)
    model = Ensemble([build_model(name), build_model(name)]) if name == "wide" else build_model(name)
    for m in model.modules():  # statistics far from the identity, so that a wrong fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    model.eval()
    count = lambda m: sum(isinstance(k, torch.nn.BatchNorm2d) for k in m.modules())
    pairs = sum(isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)
                for seq in model.modules() if isinstance(seq, torch.nn.Sequential) for a, b in zip(seq, seq[1:]))
    before = count(model)
    fused = fuse_conv_bn(model)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-4)
    assert count(model) == before and count(fused) == before - pairs  # a copy; every adjacent pair folded
    if name in ("seed", "wide", "wide-k5"):
        assert pairs > 0  # (so that the check above can fail; `fast` pools between conv and BatchNorm)
