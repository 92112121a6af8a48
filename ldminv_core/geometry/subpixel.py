"""Nearest x2 upsampling followed by a convolution, as one convolution at the input's resolution.

After a nearest x2 upsampling, the output pixel (2i + a, 2j + b) of a k x k convolution (stride
1, padding p) reads the input pixels ``x[i + (a + kh - p) // 2, j + (b + kw - p) // 2]``: for
each of the four phases (a, b) the kernel folds onto a small neighbourhood of the low-resolution
input. So ``conv(upsample(x))`` equals one convolution of ``x`` with ``4 * C_out`` output channels
(the four phases' folded kernels, zero where a phase does not reach), followed by a pixel
shuffle. Same multiply-adds as the original, on a quarter of the positions with four times the
output channels (where oneDNN's CPU kernels run faster), and the upsampled tensor is never
made: on the demo decoder the layer's tangent takes 2-3x less time (1 thread).

Output channels are ordered (a, b, c_out), so that in channels-last memory the shuffle is one
copy of contiguous runs of ``C_out`` values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SubpixelConv", "subpixel_conv"]

_CL = torch.channels_last


class SubpixelConv:
    """``conv(nearest_upsample_x2(t))`` without bias, for tangents in channels-last memory.

    Attributes:
        weight: (4 * C_out, C_in, K, K) channels-last, the phases' folded kernels.
        padding: the low-resolution convolution's padding K // 2.
    """

    def __init__(self, weight: torch.Tensor, padding: int) -> None:
        self.weight = weight
        self.padding = padding
        self.out_channels = weight.shape[0] // 4

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """(m, C_in, h, w) -> (m, C_out, 2h, 2w), channels-last."""
        m, _, h, w = t.shape
        c = self.out_channels
        y = F.conv2d(t.contiguous(memory_format=_CL), self.weight, None, padding=self.padding)  # (m, 4c, h, w)
        phases = y.permute(0, 2, 3, 1).reshape(m, h, w, 2, 2, c)  # (m, h, w, a, b, c): a view
        out = phases.permute(0, 1, 3, 2, 4, 5).reshape(m, 2 * h, 2 * w, c)  # (m, h, a, w, b, c): one copy
        return out.permute(0, 3, 1, 2)


def subpixel_conv(conv: torch.nn.Conv2d) -> SubpixelConv | None:
    """The :class:`SubpixelConv` of nearest x2 upsampling then ``conv``, or None when ``conv`` is not
    a square, odd, stride-1, undilated, ungrouped convolution with "same" zero padding."""
    k = conv.kernel_size
    if not (k[0] == k[1] and k[0] % 2 == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding == (k[0] // 2, k[0] // 2) and conv.padding_mode == "zeros"):
        return None
    k, p = k[0], k[0] // 2
    # 1. the block offsets a phase's kernel reaches: (a + kh - p) // 2 for a in {0, 1}, kh < k
    reach = (k - 1 + 1 - p) // 2  # the largest; the smallest is -reach (odd k, p = k // 2)
    size = 2 * reach + 1
    w = conv.weight.detach()
    c_out, c_in = w.shape[:2]
    # 2. fold each phase's taps onto the block offsets
    folded = torch.zeros(2, 2, c_out, c_in, size, size, dtype=w.dtype, device=w.device)
    for a in range(2):
        for b in range(2):
            for kh in range(k):
                for kw in range(k):
                    folded[a, b, :, :, (a + kh - p) // 2 + reach, (b + kw - p) // 2 + reach] += w[:, :, kh, kw]
    return SubpixelConv(folded.reshape(4 * c_out, c_in, size, size).contiguous(memory_format=_CL), reach)
