"""Hard negative mixing: synthetic negatives made from the hardest negatives of each query (MoCHi).

"Hard Negative Mixing for Contrastive Learning" (Kalantidis et al., NeurIPS 2020), Sec. 4. For a query q
and its negatives sorted by similarity, take the N hardest. Synthesize s negatives by mixing two of them,
h = normalize(alpha n_i + (1 - alpha) n_j) with alpha ~ U(0, 1) (eq. 3), and s' by mixing the query with one
of them, h' = normalize(beta q + (1 - beta) n_j) with beta ~ U(0, 0.5) (eq. 4), so the query's share stays
below one half and h' remains a negative. The synthetic negatives are computed without gradient: they join
that query's logits only, never the queue.

`HardNegativeMixing` holds the four settings once; SimCLR (in-batch negatives) and MoCo v2 (queue negatives)
take it as their `mixing` option and log the same hardness metrics; the hardest real negative's similarity is
logged without mixing too, so that runs with and without it compare.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import at_least, check_options
from selfsup.runs import Metric


class MixedNegatives(NamedTuple):
    """What mixing made for a batch of queries: the synthetic negatives and how hard they are compared with the real
    ones (MoCHi, Kalantidis et al., NeurIPS 2020, Sec. 4)."""

    negatives: Tensor  # (B, s + s', D) unit-norm synthetic negatives per query, no gradient
    hardest_similarity: Tensor  # () mean similarity of each query's hardest real negative
    synthetic_similarity: Tensor  # () mean similarity of the synthetic negatives
    harder_fraction: Tensor  # () fraction of synthetic negatives harder than the query's hardest real one

    def metrics(self) -> dict[str, Tensor]:
        """How hard the negatives are, under the metric names every mixing method logs."""
        return {
            Metric.HARD_NEGATIVE_SIM: self.hardest_similarity,
            Metric.SYNTHETIC_NEGATIVE_SIM: self.synthetic_similarity,
            Metric.SYNTHETIC_HARDER_FRACTION: self.harder_fraction,
        }


@dataclass(frozen=True)
class HardNegativeMixing:
    """MoCHi's settings, (N, s, s') in the paper's notation; the defaults mix nothing.

    Attributes:
        num_hard: N, the hardest negatives per query that mixing draws from (0: no mixing). MoCHi's best
            ImageNet-100 setting with a 16k queue is (N, s, s') = (1024, 1024, 128) (Table 2).
        num_mixed: s, synthetic negatives mixed from pairs of hard negatives (eq. 3).
        num_query_mixed: s', synthetic negatives mixed from the query and one hard negative (eq. 4).
        start_epoch: first epoch with mixing (0: from the start).
    """

    num_hard: int = 0
    num_mixed: int = 0
    num_query_mixed: int = 0
    start_epoch: int = 0

    def __post_init__(self) -> None:
        options = dict(num_hard=self.num_hard, num_mixed=self.num_mixed, num_query_mixed=self.num_query_mixed)
        check_options(at_least(0, **options, start_epoch=self.start_epoch), "--model.init_args.mixing")

    @classmethod
    def from_dict(cls, values: "HardNegativeMixing | dict[str, int]") -> "HardNegativeMixing":
        """The settings from config values (as checkpoints store them), or `values` itself."""
        return values if isinstance(values, cls) else cls(**values)

    def at_epoch(self, epoch: int) -> "HardNegativeMixing | None":
        """These settings if mixing is on in `epoch`, else None."""
        return self if self.num_hard > 0 and epoch >= self.start_epoch else None

    def __call__(
        self,
        queries: Tensor,
        negatives: Tensor,
        negative_mask: Tensor | None = None,
        negatives_per_query: int | None = None,
    ) -> MixedNegatives:
        return mix_hard_negatives(
            queries,
            negatives,
            self.num_hard,
            self.num_mixed,
            self.num_query_mixed,
            negative_mask,
            negatives_per_query=negatives_per_query,
        )


@torch.no_grad()
def mix_hard_negatives(
    queries: Tensor,
    negatives: Tensor,
    num_hard: int,
    num_mixed: int,
    num_query_mixed: int,
    negative_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    negatives_per_query: int | None = None,
) -> MixedNegatives:
    """queries (B, D) and negatives (K, D), both unit-norm; returns the synthetic negatives of each query.

    In the paper's notation (N, s, s') = (num_hard, num_mixed, num_query_mixed). `negative_mask` (B, K) marks
    which candidates are negatives of each query: with in-batch negatives (SimCLR) a query's own embedding and
    its positive are candidates but not negatives, and are never mixed. `negatives_per_query`, where every row
    of the mask keeps the same number, is that number: a caller that knows it spares a host sync (counting the
    mask's rows), which would split a compiled step.
    """
    queries, negatives = queries.detach(), negatives.detach()
    b, device = queries.shape[0], queries.device
    similarity = queries @ negatives.T  # (B, K)
    num_negatives = negatives.shape[0]
    if negative_mask is not None:
        similarity = similarity.masked_fill(~negative_mask, float("-inf"))
        num_negatives = negatives_per_query or int(negative_mask.sum(dim=1).min())
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


def unmixed_hardness_metrics(similarity: Tensor) -> dict[str, Tensor]:
    """The hardness metric of a step without mixing: the mean over queries of the most similar real negative.

    `similarity` (B, K) holds cosine similarities of queries to candidates, -inf where a candidate is not a
    negative of that query (itself, its positive). With mixing, `MixedNegatives.metrics` holds the same value.
    """
    return {Metric.HARD_NEGATIVE_SIM: similarity.detach().amax(dim=1).mean()}
