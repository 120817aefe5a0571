"""Separation losses (MindSpore, differentiable)."""
from src.losses.pit_si_snr import (SeparationLoss, multi_scale_pit_si_snr_loss,
                                   pairwise_scores, pairwise_si_snr, pit_si_snr_loss, si_snr)

__all__ = ["SeparationLoss", "multi_scale_pit_si_snr_loss", "pairwise_scores", "pairwise_si_snr",
           "pit_si_snr_loss", "si_snr"]
