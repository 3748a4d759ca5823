"""MoCo v3's contrastive loss: each query against the momentum keys of the whole global batch, with no queue.

"An Empirical Study of Training Self-Supervised Vision Transformers" (Chen, Xie and He, ICCV 2021), Algorithm 1:

    ctr(q, k) = CrossEntropy(q . k_all^T / T, labels) * 2T,   L = ctr(q1, k2) + ctr(q2, k1),

with q and k l2-normalised, q a query of this rank (the predictor's output, with gradient) and k_all the keys of
every rank (the momentum encoder's output, gathered without gradient). Query i's positive is the key of the
other view of the same image, at column i + rank * N of k_all; the other images' keys are its negatives. The
factor 2T of Algorithm 1 cancels the 1/T that dividing the logits puts on the gradient.

Each rank's loss is the mean over its own N queries, so the mean over ranks equals the loss of one process on
the whole batch, and DDP's averaged gradients equal that process's gradients.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import gather, rank
from selfsup.losses.info_nce import info_nce


def mocov3_info_nce(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """ctr(q, k) of Algorithm 1: queries (N, D) of this rank against the keys (N, D) of every rank, query i's
    positive being this rank's key i; the keys carry no gradient. Keys (N, k, D), k nearest neighbours in place of
    each key (`selfsup.models.neighbours`), give the mean of ctr over the k: the j-th neighbours of every rank's keys
    are the candidates of the j-th term."""
    queries = F.normalize(queries.float(), dim=1)
    all_keys = gather(F.normalize(keys.detach().float(), dim=-1))  # (M, [k,] D), M = N * world size, in rank order
    positive = torch.arange(queries.shape[0], device=queries.device) + rank() * queries.shape[0]
    if all_keys.ndim == 2:
        return info_nce(queries @ all_keys.T / temperature, positive) * (2 * temperature)  # logits (N, M)
    logits = torch.einsum("nd,mkd->nkm", queries, all_keys) / temperature  # (N, k, M)
    positive = positive.repeat_interleave(all_keys.shape[1])
    return info_nce(logits.flatten(0, 1), positive) * (2 * temperature)
