"""Representation diagnostics: is the embedding aligned, spread out, and using its dimensions?

- Alignment and uniformity, "Understanding Contrastive Representation Learning through Alignment and
  Uniformity on the Hypersphere" (Wang and Isola, ICML 2020), Sec. 4.1: on L2-normalized features,
  L_align = E ||f(x) - f(y)||^alpha over positive pairs (alpha = 2), and
  L_uniform = log E exp(-t ||f(x) - f(y)||^2) over all pairs (t = 2). Lower is better for both. They are defined
  once, in `selfsup.losses.alignment_uniformity`, which the `alignuniform` method trains with.
- Tolerance, "Understanding the Behaviour of Contrastive Loss" (Wang and Liu, CVPR 2021): the mean
  cosine similarity of pairs of different images of the same class, T = E[f(x)^T f(y) | l(x) = l(y)]. Uniformity
  pushes every pair apart, same-class pairs too; tolerance says how close those stay. The paper finds a small
  temperature gives uniform features with low tolerance, and calls the trade-off the uniformity-tolerance dilemma.
- Effective rank, "The effective rank: a measure of effective dimensionality" (Roy and Vetterli, EUSIPCO
  2007), eq. (2): exp of the entropy of the normalized eigenvalues of the features' covariance. It is 1 when
  the features vary along one direction only and D when they vary equally in D; dimensional collapse
  ("Understanding Dimensional Collapse in Contrastive Self-supervised Learning", Jing et al., ICLR 2022)
  shows up as a low value.
- Mean cosine similarity of positive pairs (two views of one image) and negative pairs (different images),
  and their histograms.

`DiagnosticsCallback` computes them during training from the step's own views.
"""

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.alignment_uniformity import alignment, uniformity
from selfsup.optim import ended_optimizer_step

HISTOGRAM_BINS = 40  # over cosine similarity in [-1, 1]


def tolerance(z: Tensor, labels: Tensor) -> Tensor:
    """Wang and Liu's tolerance of features z (N, D): the mean cosine similarity over the pairs of distinct rows
    with the same label; rows labelled -1 (unknown) are in no pair. NaN where no two rows share a label."""
    z = F.normalize(z.float(), dim=1)
    same_class = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    same_class.fill_diagonal_(False)
    return (z @ z.T)[same_class].mean()


def effective_rank(z: Tensor) -> Tensor:
    """Roy and Vetterli's effective rank of the covariance of z (N, D); 0 for constant features."""
    centered = z.double() - z.double().mean(dim=0)
    eigenvalues = torch.linalg.svdvals(centered).pow(2)  # proportional to the covariance's eigenvalues
    if eigenvalues.sum() <= 1e-12 * max(1.0, z.double().abs().max().item() ** 2):
        return torch.zeros((), dtype=torch.float64)
    p = eigenvalues / eigenvalues.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def pair_similarities(z_a: Tensor, z_b: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine similarities of the positive pairs (N,) and of every negative pair (z_a[i], z_b[j]), i != j."""
    similarity = F.normalize(z_a.float(), dim=1) @ F.normalize(z_b.float(), dim=1).T
    off_diagonal = ~torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    return similarity.diagonal(), similarity[off_diagonal]


def representation_diagnostics(
    z_a: Tensor, z_b: Tensor, labels: Tensor | None = None, histograms: bool = False
) -> dict[str, Any]:
    """All diagnostics of features (N, D) of two views of the same N images, as plain numbers (and, with
    `histograms`, positive and negative similarity counts over HISTOGRAM_BINS bins of [-1, 1]). With the images'
    labels (N,), also the tolerance, over the first view's features: two views of one image are no pair of it."""
    positive, negative = pair_similarities(z_a, z_b)
    result: dict[str, Any] = {
        "alignment": alignment(z_a, z_b).item(),
        "uniformity": uniformity(torch.cat([z_a, z_b])).item(),
        **({"tolerance": tolerance(z_a, labels).item()} if labels is not None else {}),
        "effective_rank": effective_rank(z_a).item(),
        "positive_similarity": positive.mean().item(),
        "negative_similarity": negative.mean().item(),
    }
    if histograms:
        for name, values in (("positive_histogram", positive), ("negative_histogram", negative)):
            result[name] = torch.histc(values.cpu(), bins=HISTOGRAM_BINS, min=-1.0, max=1.0).tolist()
    return result


class DiagnosticsCallback(pl.Callback):
    """Logs the diagnostics of the backbone features (`diag/...`) every `every_n_steps` optimizer steps (once per
    step, also when gradients accumulate over several batches).

    It embeds the first `max_samples` images of the step's first two views once more, without gradient and in
    eval mode (so batch-norm statistics are left as they were). Add it with
    `--trainer.callbacks+=selfsup.evaluation.DiagnosticsCallback`.
    """

    def __init__(self, every_n_steps: int = 100, max_samples: int = 512) -> None:
        self.every_n_steps = every_n_steps
        self.max_samples = max_samples

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not ended_optimizer_step(trainer, batch_idx) or trainer.global_step % self.every_n_steps != 0:
            return
        views, labels = batch
        backbone = pl_module.backbone
        training = backbone.training
        backbone.eval()
        z_a, z_b = (backbone(view[: self.max_samples]) for view in views[:2])
        backbone.train(training)
        labels = labels[: self.max_samples] if pl_module.labelled else None
        values = representation_diagnostics(z_a, z_b, labels)
        pl_module.log_dict({f"diag/{name}": value for name, value in values.items()}, batch_size=z_a.shape[0])
