"""A network and the separation loss as one Cell, for gradient tests of the models."""
from mindspore import nn

from src.losses import SeparationLoss


class NetWithLoss(nn.Cell):
    """`(mixture (B, T), sources (B, C, T), lengths (B,))` -> the multi-scale PIT SI-SNR loss of `net`."""

    def __init__(self, net):
        super().__init__()
        self.net, self.loss = net, SeparationLoss()

    def construct(self, mixture, sources, lengths):
        return self.loss(self.net(mixture), sources, lengths)
