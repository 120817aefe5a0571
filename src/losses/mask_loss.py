"""Enhancement losses (MindSpore, differentiable): MSE on masks or on masked magnitudes,
averaged over the real frames only (frames at or past `frame_lengths` are padding)."""
import mindspore as ms
from mindspore import nn, ops

LOSSES = ("mask_mse", "magnitude_mse")


def _frame_weights(frame_lengths, batch, frames):
    """(batch, frames, 1) float32: 1 for real frames, 0 for padding."""
    positions = ops.arange(frames, dtype=ms.int32).reshape(1, frames)
    valid = positions < frame_lengths.astype(ms.int32).reshape(batch, 1)
    return valid.astype(ms.float32).reshape(batch, frames, 1)


def masked_mse(estimate, target, frame_lengths):
    """Mean of (estimate - target)^2 over the real frames and all bins; estimate/target
    `(batch, frames, bins)`, frame_lengths `(batch,)` -> scalar."""
    batch, frames, bins = estimate.shape
    weights = _frame_weights(frame_lengths, batch, frames)
    squared = ops.square(estimate - target) * weights
    count = ops.maximum(weights.sum() * bins, ops.ones((), ms.float32))
    return squared.sum() / count


class MaskMSELoss(nn.Cell):
    """`loss(mask (B, frames, F), target_mask (B, frames, F), frame_lengths (B,))` -> scalar:
    mask-approximation MSE (the target is the IRM or the clipped magnitude ratio)."""

    def construct(self, mask, target_mask, frame_lengths):
        return masked_mse(mask, target_mask, frame_lengths)


class MagnitudeMSELoss(nn.Cell):
    """`loss(mask, clean_mag, noisy_mag, frame_lengths)` -> scalar: MSE between the masked noisy
    magnitude `mask * |Y|` and the clean magnitude `|S|` (signal approximation); all
    `(B, frames, F)` except frame_lengths `(B,)`."""

    def construct(self, mask, clean_mag, noisy_mag, frame_lengths):
        return masked_mse(mask * noisy_mag, clean_mag, frame_lengths)


def build_mask_loss(kind):
    """The loss Cell named `kind` ('mask_mse' or 'magnitude_mse')."""
    if kind == "mask_mse":
        return MaskMSELoss()
    if kind == "magnitude_mse":
        return MagnitudeMSELoss()
    raise ValueError(f"unknown enhancement loss '{kind}' (choose from {', '.join(LOSSES)})")
