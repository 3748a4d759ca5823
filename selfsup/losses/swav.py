"""SwAV's online codes and swapped prediction loss.

"Unsupervised Learning of Visual Features by Contrasting Cluster Assignments" (Caron et al., NeurIPS 2020).
Each crop's normalized embedding z is scored against K unit-norm prototypes, z^T c_k. Codes Q come from the
global crops' scores by Sinkhorn-Knopp (Sec. 3.1, eq. 3): the soft assignment closest to exp(z^T C / eps)
whose prototypes share the B samples equally, which rules out the trivial solution of one cluster for all.
Every crop then predicts the code of every other (global) crop of its image (eq. 1, extended to multi-crop
in Sec. 3.2).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import all_reduce


@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 3, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Codes (B, K) of this rank's B samples from their prototype scores (B, K); each row sums to 1.

    The transport plan is over the samples of every rank: the total mass, the per-prototype (row) sums and the
    sample count are all-reduced, so the equipartition holds over the global batch, exactly as one process on
    the concatenated batch would compute it (the official implementation does the same; reducing only the
    total enforces equipartition per GPU). Computed in `dtype` outside autocast, since exp(scores / 0.05)
    overflows half precision. Subtracting the global maximum first changes nothing after normalisation and
    keeps the exponentials finite for any scores.
    """
    with torch.autocast(scores.device.type, enabled=False):
        logits = scores.detach().to(dtype) / epsilon
        plan = torch.exp(logits - all_reduce(logits.max(), "max")).T  # (K, B), the paper's Q
        num_prototypes = plan.shape[0]
        num_samples = all_reduce(torch.tensor(plan.shape[1], dtype=dtype, device=plan.device))
        plan /= all_reduce(plan.sum())
        for _ in range(iterations):
            plan /= all_reduce(plan.sum(dim=1, keepdim=True)) * num_prototypes  # each prototype: mass 1/K
            plan /= plan.sum(dim=0, keepdim=True) * num_samples  # each sample: mass 1/B
        return (plan * num_samples).T


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], temperature: float = 0.1) -> Tensor:
    """Mean cross-entropy between the codes of each global crop and the predictions of every other crop.

    Args:
        scores: per crop, (B, K) similarities of its embeddings to the prototypes; global crops first.
        codes: per global crop, (B, K) target codes (Sinkhorn output, no gradient); codes[i] belongs to
            scores[i].
        temperature: softmax temperature of the predictions p = softmax(z^T C / temperature).

    For each global crop i: the mean over crops v != i of -sum_k q_i^(k) log p_v^(k), averaged over the batch;
    then the mean over global crops (eq. 1 and Sec. 3.2).
    """
    log_predictions = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros((), dtype=torch.float32)
    for i, code in enumerate(codes):
        others = [p for v, p in enumerate(log_predictions) if v != i]
        total = total + sum(-(code * p).sum(dim=1).mean() for p in others) / len(others)
    return total / len(codes)
