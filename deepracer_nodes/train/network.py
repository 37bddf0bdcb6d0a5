"""The policy network: a small CNN taking DeepRacer's input as it is.

Input: NHWC float32 [N, 120, 160, 1] holding RAW 0-255 grey, as every DeepRacer graph
takes it; the network divides by 255 itself. A 2x2 average pool first (the markings
are several pixels wide, and it makes training four times faster on a CPU), then four
strided 3x3 convolutions with batch normalisation down to 4x5 feature cells, which keep
WHERE the markings are (a global pooling would throw that away and with it the
steering); a small dense head gives one logit per action. forward() returns logits
for training; the exported graph appends the softmax DeepRacer heads end in.

About 0.13 M parameters (~0.5 MB as float32), under 1 ms per frame on a laptop core.
"""

from __future__ import annotations

import torch
from torch import nn

from deepracer_nodes.core import spec


def _conv(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True))


class PolicyNet(nn.Module):
    """Camera image -> logits over the discrete actions."""

    def __init__(self, num_actions: int, height: int = spec.MODEL_INPUT.height,
                 width: int = spec.MODEL_INPUT.width, dropout: float = 0.2) -> None:
        super().__init__()
        if num_actions < 2:
            raise ValueError(f'num_actions must be >= 2, got {num_actions}')
        self.height, self.width = height, width
        self.features = nn.Sequential(
            nn.AvgPool2d(2), _conv(1, 24), _conv(24, 32), _conv(32, 48), _conv(48, 64))
        with torch.no_grad():
            cells = self.features(torch.zeros(1, 1, height, width)).numel()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cells, 64), nn.ReLU(inplace=True),
            nn.Linear(64, num_actions))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [N, H, W, 1] raw 0-255 float (NHWC, DeepRacer's layout) -> logits [N, A]."""
        x = images.permute(0, 3, 1, 2) / 255.0
        return self.head(self.features(x))


class ExportedPolicy(nn.Module):
    """The graph written to model.onnx: the network followed by DeepRacer's softmax."""

    def __init__(self, net: PolicyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(images), dim=-1)
