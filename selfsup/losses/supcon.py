"""Supervised contrastive loss: every sample of the same class is a positive. It uses the labels: the labelled upper
reference of the contrastive family, not a self-supervised loss.

"Supervised Contrastive Learning" (Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu and Krishnan, NeurIPS
2020), eq. (2), L^sup_out: over the multiviewed batch I (V views of each image), anchor i with A(i) = I \\ {i} and
positives P(i) = {p in A(i) : y_p = y_i},

    L^sup_out = sum_i -1/|P(i)| sum_{p in P(i)} log( exp(z_i . z_p / T) / sum_{a in A(i)} exp(z_i . z_a / T) ),

the 1/|P(i)| outside the log (the paper finds it trains better than L^sup_in, eq. 3, with it inside). Here the
sum over anchors is a mean, as SimCLR's loss here is (`selfsup.losses.info_nce`), so that with every label distinct
the loss is exactly NT-Xent. The official code (HobbitLong/SupContrast) also scales the loss by T / 0.07, its
"base temperature": a step-size convention the paper does not have, left out.

Every view of an image is a positive of the image's other views, so with two or more views per image no P(i) is
empty: an image whose class no other image of the global batch shares has its other views as its only positives,
which is its SimCLR term. (The official code's guard for an empty P(i), which counts such an anchor as 0, only acts
with one view per image; one view is refused here.) A label of -1 (unknown) makes its image a class of its own.

Under DDP every rank holds the same number of images: each rank's anchors are its own views, the candidates the views
of every rank, gathered with gradient (`gather_with_grad`), so the mean over ranks is the loss of one process on the
whole batch and DDP's averaged gradients are its gradients (tested on 2 ranks).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import gather, gather_with_grad, rank
from selfsup.errors import ConfigurationError
from selfsup.losses.info_nce import LossAndHardness
from selfsup.models.hard_negative_mixing import unmixed_hardness_metrics

TEMPERATURE = 0.1  # the paper's choice; the official code defaults to 0.07


def supervised_contrastive_loss_and_hardness(
    views: Sequence[Tensor], labels: Tensor, temperature: float = TEMPERATURE
) -> LossAndHardness:
    """L^sup_out of eq. (2), averaged over this rank's anchors, and the mean similarity of each anchor's hardest
    negative (the most similar view of another class).

    Args:
        views: V >= 2 tensors (N, D), the projections of V views of the same N images on this rank.
        labels: (N,) class of each image; -1 (unknown): the image is a class of its own.
        temperature: T of eq. (2).
    """
    if len(views) < 2:
        raise ConfigurationError(f"the supervised contrastive loss needs at least 2 views per image, got {len(views)}")
    if not temperature > 0:
        raise ConfigurationError(f"the supervised contrastive temperature must be greater than 0, got {temperature}")
    count, n = len(views), views[0].shape[0]
    normalized = [F.normalize(view.float(), dim=1) for view in views]
    anchors = torch.cat(normalized)  # (V N, D): view 0 of this rank's images, then view 1, ...
    candidates = torch.cat([gather_with_grad(view) for view in normalized])  # (V M, D), M = N * world size
    m = candidates.shape[0] // count
    every_label = gather(labels.to(anchors.device))  # (M,)
    image = torch.arange(m, device=anchors.device)
    classes = torch.where(every_label >= 0, every_label, -1 - image).repeat(count)  # (V M); unknown: its own
    local = image[:n] + rank() * n
    own_column = (local[None, :] + m * torch.arange(count, device=anchors.device)[:, None]).flatten()  # (V N)
    itself = torch.zeros(anchors.shape[0], candidates.shape[0], dtype=torch.bool, device=anchors.device)
    itself = itself.scatter(1, own_column[:, None], True)  # (V N, V M): the anchor, in no A(i)
    positive = (classes[own_column][:, None] == classes[None, :]) & ~itself  # (V N, V M): P(i)

    similarity = anchors @ candidates.T  # (V N, V M)
    logits = similarity.masked_fill(itself, float("-inf")) / temperature
    log_probability = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -log_probability.masked_fill(~positive, 0).sum(dim=1) / positive.sum(dim=1)
    negatives = similarity.detach().masked_fill(positive | itself, float("-inf"))
    return LossAndHardness(per_anchor.mean(), unmixed_hardness_metrics(negatives))


def supervised_contrastive_loss(views: Sequence[Tensor], labels: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """L^sup_out of eq. (2) of V >= 2 views (N, D) each of N images with labels (N,) (-1: a class of its own)."""
    return supervised_contrastive_loss_and_hardness(views, labels, temperature).loss
