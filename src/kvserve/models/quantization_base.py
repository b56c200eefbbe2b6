"""The base of every quantized projection (its own module so that each format's file can extend it)."""

from __future__ import annotations

import torch
from torch import nn


class QuantizedLinear(nn.Module):
    """What every quantized projection shares: the bias, and packing the leading axes of x
    into rows for a 2-D kernel. Subclasses store the weight and implement `matmul`."""

    def __init__(self, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:  # [rows, in] -> [rows, out], x's dtype
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x.reshape(-1, x.shape[-1]))
        y = y if self.bias is None else y + self.bias
        return y.view(*x.shape[:-1], -1)
