"""A user-defined PyTorch module, importable by name so that `torch.save(model)` can pickle it."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Two linear layers: what a full-model `torch.save` of a user's own class looks like."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class TinyConvNet(nn.Module):
    """A convolution and a linear layer between quantization stubs, for static quantization."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(x.reshape(x.shape[0], -1)))
