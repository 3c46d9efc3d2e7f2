"""The CPU training convolution with tuned weight gradients, checked against torch's own conv2d and backward."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from doublure.models import fast_conv
from doublure.models.arch import IdentityModel, config_for
from doublure.models.fast_conv import TunedConv2d, patch_weight_grad, reference_convolutions

GEOMETRIES = [(5, 2, 2), (3, 1, 1), (1, 1, 0)]     # (kernel, stride, padding) of the model's layers


class _Always(dict):
    """A tuning table that answers every layer with one formulation."""

    def __init__(self, use_patches: bool) -> None:
        super().__init__()
        self.use_patches = use_patches

    def get(self, key, default=None):
        return self.use_patches


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernel,stride,padding", GEOMETRIES)
@pytest.mark.parametrize("chunked", [False, True])
def test_patch_weight_grad_matches_torch(kernel, stride, padding, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(fast_conv, "PATCH_CHUNK_ELEMENTS", 1)      # one sample per product
    g = torch.Generator().manual_seed(0)
    x = channels_last(torch.randn(3, 5, 12, 12, generator=g))
    w = channels_last(torch.randn(7, 5, kernel, kernel, generator=g))
    out = F.conv2d(x, w, stride=stride, padding=padding)
    grad_out = channels_last(torch.randn(out.shape, generator=g))
    reference = torch.ops.aten.convolution_backward(grad_out, x, w, None, [stride] * 2, [padding] * 2, [1, 1],
                                                    False, [0, 0], 1, [False, True, False])[1]
    got = patch_weight_grad(x, grad_out, kernel, stride, padding)
    assert got.shape == reference.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-4)


def _conv_pair(kernel, stride, padding, bias=True):
    torch.manual_seed(1)
    tuned = TunedConv2d(6, 8, kernel, stride=stride, padding=padding, bias=bias).to(memory_format=torch.channels_last)
    plain = nn.Conv2d(6, 8, kernel, stride=stride, padding=padding, bias=bias).to(memory_format=torch.channels_last)
    plain.load_state_dict(tuned.state_dict())
    return tuned, plain


def _values_and_grads(conv, x, autocast):
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
    return [y.float(), x.grad] + [p.grad for p in conv.parameters()]


@pytest.mark.parametrize("kernel,stride,padding", GEOMETRIES)
@pytest.mark.parametrize("use_patches", [True, False])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_tuned_conv_matches_conv2d(kernel, stride, padding, use_patches, autocast, layout, monkeypatch):
    monkeypatch.setattr(fast_conv, "_choices", _Always(use_patches))
    tuned, plain = _conv_pair(kernel, stride, padding)
    x = torch.randn(4, 6, 16, 16, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=layout)
    got, expected = _values_and_grads(tuned, x, autocast), _values_and_grads(plain, x, autocast)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-4, atol=1e-4)
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), got, expected):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{name}: {m}")


def test_torch_formulation_is_torch_exactly(monkeypatch):
    monkeypatch.setattr(fast_conv, "_choices", _Always(False))
    tuned, plain = _conv_pair(3, 1, 1)
    x = channels_last(torch.randn(2, 6, 10, 10))
    for a, b in zip(_values_and_grads(tuned, x, False), _values_and_grads(plain, x, False)):
        assert torch.equal(a, b)


def test_first_backward_tunes_each_shape_once(monkeypatch):
    monkeypatch.setattr(fast_conv, "_choices", {})
    tuned, _ = _conv_pair(5, 2, 2, bias=False)
    for _ in range(2):
        tuned(channels_last(torch.randn(2, 6, 16, 16))).sum().backward()
    assert list(fast_conv._choices) == [((2, 6, 16, 16), (8, 6, 5, 5), 2, 2, torch.float32)]


def test_without_gradients_or_inside_reference_it_is_plain_conv2d(monkeypatch):
    monkeypatch.setattr(fast_conv, "_choices", {})
    tuned, _ = _conv_pair(3, 1, 1)
    x = channels_last(torch.randn(2, 6, 8, 8))
    with torch.no_grad():
        tuned(x)
    with reference_convolutions():
        tuned(x).sum().backward()
    assert fast_conv._choices == {}
    with pytest.raises(ValueError):
        TunedConv2d(6, 8, 3, groups=2)


@pytest.mark.parametrize("use_patches", [True, False])
def test_model_step_counts_the_same_flops_and_gradients(use_patches, monkeypatch):
    monkeypatch.setattr(fast_conv, "_choices", _Always(use_patches))
    torch.manual_seed(0)
    model = IdentityModel(config_for(64, "df", 0.125))
    a, b = (channels_last(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(s))) for s in (3, 4))
    grads, flops = [], []
    for context in (reference_convolutions, torch.enable_grad):
        model.zero_grad()
        counter = FlopCounterMode(display=False)
        with counter, context():
            (rgb_a, mask_a), (rgb_b, mask_b) = model(a, b)
            (rgb_a.square().mean() + rgb_b.mean() + mask_a.mean() + mask_b.square().mean()).backward()
        flops.append(counter.get_total_flops())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert flops[0] == flops[1]
    for name, expected in grads[0].items():
        torch.testing.assert_close(grads[1][name], expected, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
