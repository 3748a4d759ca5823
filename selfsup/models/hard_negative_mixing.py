"""Hard negative mixing: synthetic negatives made from the hardest negatives of each query (MoCHi).

"Hard Negative Mixing for Contrastive Learning" (Kalantidis et al., NeurIPS 2020), Sec. 4. For a query q
and its negatives sorted by similarity, take the N hardest. Synthesize s negatives by mixing two of them,
h = normalize(alpha n_i + (1 - alpha) n_j) with alpha ~ U(0, 1) (eq. 3), and s' by mixing the query with one
of them, h' = normalize(beta q + (1 - beta) n_j) with beta ~ U(0, 0.5) (eq. 4), so the query's share stays
below one half and h' remains a negative. The synthetic negatives are computed without gradient: they join
that query's logits only, never the queue.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class MixedNegatives(NamedTuple):
    negatives: Tensor  # (B, s + s', D) unit-norm synthetic negatives per query, no gradient
    hardest_similarity: Tensor  # () mean similarity of each query's hardest real negative
    synthetic_similarity: Tensor  # () mean similarity of the synthetic negatives
    harder_fraction: Tensor  # () fraction of synthetic negatives harder than the query's hardest real one


@torch.no_grad()
def mix_hard_negatives(
    queries: Tensor,
    negatives: Tensor,
    num_hard: int,
    num_mixed: int,
    num_query_mixed: int,
    negative_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> MixedNegatives:
    """queries (B, D) and negatives (K, D), both unit-norm; returns the synthetic negatives of each query.

    In the paper's notation (N, s, s') = (num_hard, num_mixed, num_query_mixed). `negative_mask` (B, K) marks
    which candidates are negatives of each query: with in-batch negatives (SimCLR) a query's own embedding and
    its positive are candidates but not negatives, and are never mixed.
    """
    queries, negatives = queries.detach(), negatives.detach()
    b, device = queries.shape[0], queries.device
    similarity = queries @ negatives.T  # (B, K)
    num_negatives = negatives.shape[0]
    if negative_mask is not None:
        similarity = similarity.masked_fill(~negative_mask, float("-inf"))
        num_negatives = int(negative_mask.sum(dim=1).min())
    num_hard = min(num_hard, num_negatives)
    hard_similarity, hard_index = similarity.topk(num_hard, dim=1)  # (B, N), hardest first
    hard = negatives[hard_index]  # (B, N, D)

    def pick(count: int) -> Tensor:  # (B, count, D): hard negatives drawn uniformly per query
        index = torch.randint(0, num_hard, (b, count), generator=generator, device=device)
        return hard.gather(1, index[..., None].expand(-1, -1, hard.shape[-1]))

    alpha = torch.rand(b, num_mixed, 1, generator=generator, device=device)
    mixed = alpha * pick(num_mixed) + (1 - alpha) * pick(num_mixed)
    beta = 0.5 * torch.rand(b, num_query_mixed, 1, generator=generator, device=device)
    query_mixed = beta * queries[:, None] + (1 - beta) * pick(num_query_mixed)
    synthetic = F.normalize(torch.cat([mixed, query_mixed], dim=1), dim=2)

    synthetic_similarity = torch.einsum("bd,bsd->bs", queries, synthetic)
    hardest = hard_similarity[:, :1]
    return MixedNegatives(
        synthetic,
        hardest.mean(),
        synthetic_similarity.mean(),
        (synthetic_similarity > hardest).float().mean(),
    )
