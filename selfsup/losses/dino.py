"""DINO's self-distillation loss and its center, over multi-crop views.

"Emerging Properties in Self-Supervised Vision Transformers" (Caron, Touvron, Misra, Jegou, Mairal, Bojanowski
and Joulin, ICCV 2021), Sec. 3.1, eq. (2) and (3), and Algorithm 1. A student and a teacher network output K
scores per crop. The teacher's scores t are centred and sharpened, the student's only sharpened:

    P_t = softmax((t - C) / tau_t),    P_s = softmax(s / tau_s),    tau_t < tau_s,

and the loss is the cross-entropy H(P_t, P_s) = -sum_k P_t^(k) log P_s^(k), averaged over the batch and over the
pairs (teacher crop i, student crop v) with v != i (eq. 3): the teacher sees only the global crops, the student
every crop, and no crop predicts itself. The teacher carries no gradient. Centring alone would push P_t to the
uniform distribution, sharpening alone to one dimension; together they avoid collapse (Sec. 5.3). The center is
an exponential moving average of the teacher's mean output over the global batch, taken after the loss (eq. 4):

    C <- m C + (1 - m) mean over the batch and the global crops of t.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import all_reduce


class DinoLossTerms(NamedTuple):
    """The DINO loss and the two numbers of the paper's collapse study (Sec. 5.3, Fig. 7), in nats."""

    loss: Tensor  # () mean cross-entropy over the (teacher crop, student crop) pairs, with gradient
    teacher_entropy: Tensor  # () detached: mean entropy of P_t (log K when uniform, 0 when one-hot)
    kl_divergence: Tensor  # () detached: mean KL(P_t || P_s) over the pairs (0 when the student copies the teacher)


def dino_loss_terms(
    student_scores: list[Tensor],
    teacher_scores: list[Tensor],
    center: Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float | Tensor = 0.04,
) -> DinoLossTerms:
    """The DINO loss of this rank's batch, with the teacher's entropy and the teacher-student KL divergence.

    Args:
        student_scores: per crop, (B, K) student outputs; the global crops first, in the teacher's order.
        teacher_scores: per global crop, (B, K) teacher outputs; teacher_scores[i] is the crop of student_scores[i].
        center: (K,) the center C, the same on every rank (`dino_center_update` keeps it so).
        student_temperature: tau_s (paper: 0.1).
        teacher_temperature: tau_t (paper: 0.04 warmed up to 0.07); a 0-dim tensor lets a compiled step change
            it without recompiling.

    The mean over this rank's B samples: on equal batches, the mean over ranks is the loss of the global batch
    and DDP's averaged gradients are its gradients. Computed in float32: tau_t = 0.04 would multiply bfloat16's
    rounding 25-fold.
    """
    log_student = [F.log_softmax(s.float() / student_temperature, dim=1) for s in student_scores]  # (B, K) each
    teacher = [F.softmax((t.detach().float() - center) / teacher_temperature, dim=1) for t in teacher_scores]
    pair_losses = [
        -(p_teacher * log_p_student).sum(dim=1).mean()
        for i, p_teacher in enumerate(teacher)
        for v, log_p_student in enumerate(log_student)
        if v != i
    ]
    loss = torch.stack(pair_losses).mean()
    with torch.no_grad():
        entropy = torch.stack([torch.special.entr(p).sum(dim=1).mean() for p in teacher]).mean()
        # KL = H(P_t, P_s) - H(P_t); every teacher crop is in as many pairs, so the pairs' mean entropy is this one
        return DinoLossTerms(loss, entropy, loss.detach() - entropy)


def dino_loss(
    student_scores: list[Tensor],
    teacher_scores: list[Tensor],
    center: Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float | Tensor = 0.04,
) -> Tensor:
    """The DINO loss alone: `dino_loss_terms(...).loss` (see there)."""
    return dino_loss_terms(student_scores, teacher_scores, center, student_temperature, teacher_temperature).loss


@torch.no_grad()
def dino_center_update(center: Tensor, teacher_scores: list[Tensor], momentum: float = 0.9) -> Tensor:
    """The next center (K,): m * center + (1 - m) * the teacher's mean output over every rank's global crops.

    This rank's sum and row count travel in one all-reduce and the sum is divided by the global count, so every
    rank gets the center one process would compute on the concatenated batch (also for unequal batches).
    """
    scores = torch.cat(teacher_scores).float()  # (G * B, K)
    total = all_reduce(torch.cat([scores.sum(dim=0), scores.new_full((1,), scores.shape[0])]))  # (K + 1,)
    return center * momentum + total[:-1] / total[-1] * (1 - momentum)
