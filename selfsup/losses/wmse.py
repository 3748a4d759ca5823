"""W-MSE: the mean squared error between positives whose embeddings were whitened over sub-batches.

"Whitening for Self-Supervised Representation Learning" (Ermolov, Siarohin, Sangineto and Sebe, ICML 2021), Sec. 3.
Eq. (1) asks for positives close to each other under the constraint that every view's embeddings have identity
covariance. W-MSE meets the constraint by construction: each view's embeddings v are whitened,

    Whitening(v) = W_V (v - mu_V),   W_V^T W_V = Sigma_V^{-1},

with mu_V and Sigma_V = sum_k (v_k - mu_V)(v_k - mu_V)^T / (K - 1) the mean and unbiased covariance of the K
embeddings V the whitening is computed over, and W_V = L^{-1} from the Cholesky decomposition Sigma_V = L L^T (so
W_V Sigma_V W_V^T = I). The loss is then the MSE between the L2-normalised whitened embeddings z of positives,
averaged over the d(d - 1) / 2 pairs of an image's d views and over the N images:

    dist(z_i, z_j) = || z_i / |z_i| - z_j / |z_j| ||^2 = 2 - 2 cos(z_i, z_j),
    L = 2 / (N d (d - 1)) sum over positive pairs of dist(z_i, z_j).

Batch slicing (Sec. 3): the whitening matrix is estimated on sub-batches of `w_size` images, each view
separately, and the whole computation is repeated `w_iter` times on new random splits of the batch, the loss being
the mean over the repetitions. A sub-batch's covariance has rank at most w_size - 1, so Cholesky needs w_size to
exceed the embedding dimension D (the paper's CIFAR setting: D = 64, w_size = 128).

What the paper leaves open follows the official code (github.com/htdt/self-supervised, `methods/w_mse.py`,
`methods/whitening.py`, `methods/norm_mse.py`):
- every view of an image is whitened on the same sub-batch of images (one random permutation of the batch per
  repetition, cut into consecutive sub-batches of `w_size`, `torch.randperm(bs).view(-1, w_size)`), so the
  positives of a pair sit in matching rows of matching sub-batches;
- the covariance is shrunk towards the identity as (1 - eps) Sigma + eps I before the decomposition, with eps = 0
  (its `--w_eps` default): no shrinkage;
- the loss of a pair is 2 - 2 x (mean cosine), the average over the pairs and the repetitions;
- the gradient flows through the whitening matrix (no detach), and no running statistics are kept
  (`track_running_stats=False`).

The whitening lives here rather than in `selfsup/models/`: it has no parameters and no state, it is the loss's own
normalisation, and the loss is its only user.

Under DDP each rank whitens its own batch in sub-batches: nothing is gathered. (The official code trains in one
process, with DataParallel, so its sub-batches are drawn from the whole batch.) A sub-batch is a random set of
w_size images either way, since the sampler deals the images to the ranks at random; only sub-batches that would
straddle two ranks are never drawn. DDP's mean of the ranks' gradients is the gradient of the mean of their
losses, which is the loss one process computes on the whole batch whitening each rank's sub-batches (tested on 2
gloo ranks, tests/losses/test_wmse.py).
"""

from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigurationError

W_SIZE = 128  # the paper's sub-batch size for CIFAR-10/100 (embedding dimension 64)


class WMSETerms(NamedTuple):
    """The W-MSE loss and how far its whitening is from exact, for the method to log."""

    loss: Tensor  # () the mean over pairs and repetitions of 2 - 2 x the mean cosine of positives
    whitening_error: Tensor  # () the largest |Cov(whitened sub-batch) - I| entry, detached: float32's error


def sub_batch_orders(
    batch_size: int, w_iter: int = 1, generator: torch.Generator | None = None, device: torch.device | None = None
) -> Tensor:
    """(w_iter, batch_size): one random permutation of the batch's rows per repetition; each run of w_size
    consecutive entries is a sub-batch. Drawn from `generator`, or from torch's global random state (which a
    checkpoint records, so a resumed run draws what the uninterrupted one did)."""
    return torch.stack([torch.randperm(batch_size, generator=generator, device=device) for _ in range(w_iter)])


def whiten(x: Tensor, eps: float = 0.0) -> Tensor:
    """Cholesky whitening of (..., m, D): each (m, D) set of m embeddings becomes W (v - mu) for each of its rows,
    with W = L^{-1} and L L^T = (1 - eps) Sigma + eps I, Sigma the unbiased covariance of the set. Solving the
    triangular system L z = v - mu gives W (v - mu) without forming the inverse."""
    dim = x.shape[-1]
    centered = x - x.mean(dim=-2, keepdim=True)  # (..., m, D)
    covariance = centered.mT @ centered / (x.shape[-2] - 1)  # (..., D, D), Sigma_V
    identity = torch.eye(dim, dtype=x.dtype, device=x.device)
    regularised = (1 - eps) * covariance + eps * identity
    if torch.compiler.is_compiling():  # a compiled step keeps one graph: PyTorch's own error if it fails
        cholesky = torch.linalg.cholesky(regularised)
    else:
        try:
            cholesky = torch.linalg.cholesky(regularised)  # (..., D, D), lower triangular
        except torch.linalg.LinAlgError:  # a singular covariance: embeddings collapsed onto fewer dimensions
            raise ConfigurationError(
                f"W-MSE cannot whiten a sub-batch: its embeddings' covariance is singular (eps {eps}), as when they "
                "collapse. Raise --model.init_args.w_eps (e.g. 1e-4) or lower the learning rate."
            ) from None
    return torch.linalg.solve_triangular(cholesky, centered.mT, upper=False).mT  # (..., m, D)


def _check_shapes(views: Sequence[Tensor], w_size: int, orders: Tensor) -> None:
    if len(views) < 2:
        raise ConfigurationError(
            f"W-MSE compares the views of each image in pairs: it needs 2 or more, got {len(views)}."
        )
    batch, dim = views[0].shape
    if any(view.shape != views[0].shape for view in views):
        raise ConfigurationError(f"W-MSE needs every view's embeddings of one shape, got {[v.shape for v in views]}.")
    if w_size <= dim:
        raise ConfigurationError(
            f"w_size={w_size} must exceed the embedding dimension {dim}: a sub-batch's covariance has rank at most "
            "w_size - 1, and Cholesky whitening needs it full. Raise w_size or lower the embedding dimension."
        )
    if batch % w_size:
        raise ConfigurationError(
            f"W-MSE whitens the batch in sub-batches of w_size={w_size} images, which the batch of {batch} is not a "
            "multiple of. Choose a batch size that is a multiple of w_size (and drop a smaller last batch)."
        )
    if orders.ndim != 2 or orders.shape[1] != batch:
        raise ConfigurationError(f"orders must be (w_iter, {batch}) permutations of the batch, got {orders.shape}.")


def wmse_terms(views: Sequence[Tensor], w_size: int, orders: Tensor, eps: float = 0.0) -> WMSETerms:
    """The loss of Sec. 3 for `views`, the (N, D) embeddings of each of an image's d >= 2 views (row n of every view
    the same image), whitened in the sub-batches `orders` gives: (w_iter, N) permutations of the rows, cut into
    runs of `w_size` (`sub_batch_orders`). In float32 outside autocast: a Cholesky decomposition in bfloat16 would
    keep three digits."""
    _check_shapes(views, w_size, orders)
    batch, dim = views[0].shape
    repetitions = orders.shape[0]
    with torch.autocast(views[0].device.type, enabled=False):
        stacked = torch.stack([view.float() for view in views])  # (d, N, D)
        sub_batches = stacked[:, orders].reshape(len(views), repetitions, batch // w_size, w_size, dim)
        whitened = whiten(sub_batches, eps)  # (d, w_iter, N / w_size, w_size, D), each sub-batch of each view
        unit = F.normalize(whitened, dim=-1).reshape(len(views), repetitions, batch, dim)
        pair_losses = [2 - 2 * (unit[i] * unit[j]).sum(dim=-1).mean() for i, j in combinations(range(len(views)), 2)]
        loss = torch.stack(pair_losses).mean()
        with torch.no_grad():
            centered = whitened - whitened.mean(dim=-2, keepdim=True)
            covariance = centered.mT @ centered / (w_size - 1)  # I but for float32's error (and eps's shrinkage)
            error = (covariance - torch.eye(dim, device=covariance.device)).abs().amax()
        return WMSETerms(loss, error)


def wmse_loss(
    views: Sequence[Tensor],
    w_size: int = W_SIZE,
    w_iter: int = 1,
    eps: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The W-MSE loss () of `views`, the (N, D) embeddings of each of an image's d >= 2 views, whitened over
    `w_iter` random splits of the batch into sub-batches of `w_size` drawn from `generator` (default: torch's global
    random state)."""
    orders = sub_batch_orders(views[0].shape[0], w_iter, generator, views[0].device)
    return wmse_terms(views, w_size, orders, eps).loss
