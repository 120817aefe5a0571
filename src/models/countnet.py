"""CountNet-style speaker counter (Stöter et al., "CountNet: Estimating the number of concurrent
speakers using supervised learning", IEEE/ACM TASLP 2018, simplified): a stack of 1-D
convolutions over log-mel frames (src/features.py `log_mel`), the last three dilated (2, 4, 8)
so a frame sees about 0.3 s, then the mean and the maximum over all frames, and one linear layer
that scores each speaker count (after dropout, in training). Any number of frames."""
from mindspore import nn, ops


class CountNet(nn.Cell):
    """`features (B, frames, n_mels)` -> `(B, num_counts)` logits, one per count of model.speaker_counts."""

    def __init__(self, n_mels, channels, num_counts, dropout=0.0):
        super().__init__()
        layers, width = [], n_mels
        for out, dilation in ((channels // 2, 1), (channels // 2, 1), (channels, 2), (channels, 4), (channels, 8)):
            layers += [nn.Conv1d(width, out, 3, pad_mode="same", dilation=dilation, has_bias=True), nn.ReLU()]
            width = out
        self.convs = nn.SequentialCell(layers)
        self.dropout = nn.Dropout(p=dropout)
        self.scores = nn.Dense(2 * channels, num_counts)

    def construct(self, features):
        hidden = self.convs(features.transpose(0, 2, 1))
        return self.scores(self.dropout(ops.cat([hidden.mean(axis=2), hidden.max(axis=2)], axis=1)))
