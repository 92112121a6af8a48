"""Nearest x2 upsampling + convolution as one low-resolution convolution (geometry.subpixel),
against ``F.interpolate`` followed by ``F.conv2d``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ldminv_core.geometry.subpixel import subpixel_conv


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("shape", [(3, 4, 5, 7), (2, 6, 1, 3)])  # (m, C_in, h, w): odd, non-square, a 1-pixel row
def test_equals_upsampling_then_the_convolution(kernel, shape):
    m, c_in, h, w = shape
    torch.manual_seed(kernel)
    conv = torch.nn.Conv2d(c_in, 5, kernel, padding=kernel // 2)
    t = torch.randn(m, c_in, h, w, dtype=torch.float64)
    conv = conv.double()
    want = F.conv2d(F.interpolate(t, scale_factor=2.0, mode="nearest"), conv.weight, None, padding=kernel // 2)
    fused = subpixel_conv(conv)
    assert fused is not None
    got = fused(t.contiguous(memory_format=torch.channels_last))
    assert got.shape == want.shape == (m, 5, 2 * h, 2 * w)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1, stride=2), dict(kernel_size=3, padding=2, dilation=2),
                                dict(kernel_size=2, padding=1), dict(kernel_size=3, padding=0),
                                dict(kernel_size=3, padding=1, padding_mode="reflect"),
                                dict(kernel_size=(3, 1), padding=(1, 0))])
def test_other_convolutions_are_left_to_the_plain_path(kw):
    conv = torch.nn.Conv2d(4, 4, **kw)
    assert subpixel_conv(conv) is None


def test_grouped_convolutions_are_left_to_the_plain_path():
    assert subpixel_conv(torch.nn.Conv2d(4, 4, 3, padding=1, groups=2)) is None
