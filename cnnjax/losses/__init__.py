"""Losses as pure array functions: jit- and grad-safe, NaN-free on legal batches, multi-device."""

from cnnjax.losses.contrastive import nt_xent_loss
from cnnjax.losses.triplet import pairwise_distances
from cnnjax.losses.triplet import triplet_all_loss
from cnnjax.losses.triplet import triplet_hard_loss
from cnnjax.losses.triplet import triplet_semihard_loss

__all__ = [
    'nt_xent_loss',
    'pairwise_distances',
    'triplet_all_loss',
    'triplet_hard_loss',
    'triplet_semihard_loss',
]
