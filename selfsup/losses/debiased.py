"""The debiased and hard-negative estimators of InfoNCE's negative term, for in-batch and queue negatives alike.

"Debiased Contrastive Learning" (Chuang, Robinson, Lin, Torralba and Jegelka, NeurIPS 2020), Sec. 3: an anchor's
negatives are drawn from the data, so a fraction tau+ of them share its class. With N negatives u_i, M positives v_i
and logits l (similarity / temperature, `f(x)^T f(x')` in the paper, whose f has norm 1/sqrt(t)), the debiased loss
L^{N,M}_Debiased replaces the negative sum by N g, with the estimator

    g(x, {u_i}, {v_i}) = max{ (1 / tau-) ( (1/N) sum_i e^{l(u_i)} - tau+ (1/M) sum_i e^{l(v_i)} ), e^{-1/t} },

tau- = 1 - tau+, clamped at its theoretical minimum e^{-1/t} (the smallest e^{l} a unit-norm pair can give) so the
logarithm never sees a negative number. As in both papers' code (M = 1), v is the anchor's own positive.

"Contrastive Learning with Hard Negative Samples" (Robinson, Chuang, Sra and Jegelka, ICLR 2021), Sec. 3: the
negatives are drawn from q_beta(x-) ~ e^{beta f(x)^T f(x-)} p(x-) instead of p, estimated by importance sampling
from the same samples: each negative's e^{l} is weighted by w_i = e^{beta l_i} / ((1/N) sum_j e^{beta l_j}), on top of
the debiased estimator above (the hard sampling objective; `estimator == 'hard'` in the authors' code, where beta
multiplies the logit as here). With one positive its normalised weight is 1.

Edge cases the tests hold: tau+ = 0 and beta = 0 is InfoNCE; beta = 0 is the debiased loss.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import at_least, below, check_options
from selfsup.runs import Metric


@dataclass(frozen=True)
class DebiasedNegatives:
    """How InfoNCE's negative term is estimated; the defaults (0, 0) leave plain InfoNCE.

    Attributes:
        tau_plus: tau+, the class prior: the probability that a negative shares the anchor's class (Chuang et al.
            2020; their best STL-10 model uses 0.1, about one class in ten). 0: no debiasing.
        beta: the concentration of the hard negative distribution q_beta on the negatives' logits (Robinson et al.
            2021; their code's default is 1, with tau+ 0.1). 0: every negative weighs alike.
    """

    tau_plus: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        problems = at_least(0, tau_plus=self.tau_plus, beta=self.beta) + below(1, tau_plus=self.tau_plus)
        check_options(problems, "--model.init_args.negatives")

    @classmethod
    def from_dict(cls, values: "DebiasedNegatives | dict[str, float]") -> "DebiasedNegatives":
        """The settings from config values (as checkpoints store them), or `values` itself."""
        return values if isinstance(values, cls) else cls(**values)

    @property
    def active(self) -> bool:
        """Whether the estimator differs from InfoNCE's plain sum over the negatives."""
        return self.tau_plus > 0 or self.beta > 0


class DebiasedLoss(NamedTuple):
    """The debiased (hard negative) loss and what it did to the negatives."""

    loss: Tensor  # () mean over the anchors
    metrics: dict[str, Tensor]  # () each, detached, under `selfsup.runs.Metric` names


def debiased_info_nce(
    logits: Tensor,
    positive_index: Tensor,
    negative_mask: Tensor | None,
    temperature: float,
    tau_plus: float,
    beta: float = 0.0,
) -> DebiasedLoss:
    """Mean of -log( e^{l+} / (e^{l+} + N g) ) over the rows of `logits`, g the (hard negative) debiased estimator.

    Args:
        logits: (A, C) similarities of A anchors to C candidates divided by `temperature`.
        positive_index: (A,) the column of each anchor's positive.
        negative_mask: (A, C) True where a candidate is a negative of that anchor (in-batch: every view but the
            anchor and its positive); None: every column but the positive (a queue).
        temperature: t, which sets the estimator's floor e^{-1/t}.
        tau_plus: the class prior tau+, in [0, 1).
        beta: the hardness concentration, at least 0.

    The metrics: `train/debiased_clamped_fraction`, the anchors whose estimator sat on its floor; with beta > 0,
    `train/hardest_negative_weight`, the importance weight w of each anchor's hardest negative (1: uniform).
    """
    if negative_mask is None:
        negative_mask = torch.ones_like(logits, dtype=torch.bool).scatter(1, positive_index[:, None], False)
    positive = logits.gather(1, positive_index[:, None]).squeeze(1)  # (A,) l+
    negatives = logits.masked_fill(~negative_mask, float("-inf"))  # (A, C) l(u_i), -inf elsewhere
    count = negative_mask.sum(dim=1).to(logits.dtype)  # (A,) N
    metrics = {}
    if beta > 0:  # log sum_i w_i e^{l_i} = log N + logsumexp((beta + 1) l) - logsumexp(beta l)
        tilted = torch.logsumexp(beta * negatives, dim=1)
        log_negative_sum = count.log() + torch.logsumexp((beta + 1) * negatives, dim=1) - tilted
        hardest_weight = count * torch.exp(beta * negatives.amax(dim=1) - tilted)  # N e^{beta l_max} / sum e^{beta l}
        metrics[Metric.HARDEST_NEGATIVE_WEIGHT] = hardest_weight.detach().mean()
    else:
        log_negative_sum = torch.logsumexp(negatives, dim=1)
    # N g in float64, shifted by its largest term: e^{l} spans e^{2/t} between the terms, which float32 cannot hold
    # for small temperatures. Each term is at most 1 after the shift, and the floor keeps N g above 0.
    log_count = count.log()
    terms = [log_negative_sum, log_count - 1 / temperature]  # log sum_i w_i e^{l_i}, log N e^{-1/t}
    if tau_plus > 0:
        terms.append(math.log(tau_plus) + log_count + positive)  # log tau+ N e^{l+}
    terms = torch.stack(terms).double()  # (2 or 3, A)
    shift = terms.amax(dim=0).detach()
    scaled = (terms - shift).exp()
    estimate = (scaled[0] - scaled[2] if tau_plus > 0 else scaled[0]) / (1 - tau_plus)  # N g / e^shift, unclamped
    log_negative_term = shift + torch.maximum(estimate, scaled[1]).log()  # (A,) log N g
    loss = F.softplus(log_negative_term - positive.double())  # -log(e^{l+} / (e^{l+} + N g))
    metrics[Metric.DEBIASED_CLAMPED_FRACTION] = (estimate < scaled[1]).float().mean().detach()
    return DebiasedLoss(loss.mean().float(), metrics)  # float32 as cross-entropy's, also for bf16 logits
