"""W-MSE: the views' embeddings are whitened over sub-batches, and positives are pulled together by a mean squared
error ("Whitening for Self-Supervised Representation Learning", Ermolov et al., ICML 2021). No negatives, no
momentum encoder, no predictor: the whitening alone keeps the embeddings from collapsing."""

from typing import Literal

import torch
from torch import Tensor

from selfsup.augment import ViewRecipe
from selfsup.errors import ConfigurationError, at_least, below, check_options
from selfsup.losses.wmse import W_SIZE, sub_batch_orders, wmse_terms
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.runs import Metric


def wmse_views(num_views: int = 2) -> tuple[ViewRecipe, ...]:
    """The official code's views (`cfg.py`, `datasets/transforms.py`): crop scale (0.2, 1), jitter (0.4, 0.4, 0.4,
    0.1) with p=0.8, grayscale p=0.1, flip p=0.5, never blurred; `num_views` of them (W-MSE 2 or W-MSE 4)."""
    return (ViewRecipe(num_views=num_views, crop_scale=(0.2, 1.0), grayscale_prob=0.1),)


class WMSE(Method):
    """W-MSE: each view's projections whitened on sub-batches of `w_size` images (Cholesky, W Sigma W^T = I), then
    the MSE between the normalised whitened projections of every pair of an image's views ("Whitening for
    Self-Supervised Representation Learning", Ermolov et al., ICML 2021, Sec. 3; `selfsup.losses.wmse`).

    The defaults are the paper's CIFAR setting as its official code runs it: a 1024-wide 2-layer projector to 64
    dimensions, sub-batches of 128, one split, Adam at 3e-3 for 256 images with weight decay 1e-6, two views
    (W-MSE 2; `views=wmse_views(4)` for W-MSE 4, the paper's best). Each GPU whitens its own batch (see the loss's
    module), so the per-device batch must be a multiple of `w_size`. Logs `train/whitening_error`, how far the
    whitened sub-batches' covariance is from the identity in float32: it grows with the condition number of the
    covariance, so it rises as the embeddings near a collapse onto fewer dimensions."""

    VIEWS_PER_IMAGE = (2, None)

    def __init__(
        self,
        projector_hidden_dim: int = 1024,
        projector_output_dim: int = 64,
        projector_num_layers: int = 2,
        w_size: int = W_SIZE,
        w_iter: int = 1,
        w_eps: float = 0.0,
        views: tuple[ViewRecipe, ...] = wmse_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "adamw",
        base_lr: float = 3e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 2.0,
        **kwargs,
    ) -> None:
        """
        Args:
            projector_hidden_dim: hidden width of the projector (the official code's `--head_size` 1024).
            projector_output_dim: D, the dimension of the embeddings that are whitened (the paper: 64 on CIFAR,
                128 on STL-10 and Tiny ImageNet).
            projector_num_layers: linear layers of the projector, BN and ReLU between them (official: 2).
            w_size: images per whitening sub-batch, the paper's name (CIFAR: 128; STL-10, Tiny ImageNet: 256). More
                than D, so that the sub-batch covariance is invertible; a divisor of the per-device batch.
            w_iter: random splits of the batch into sub-batches, the loss averaged over them (the paper's name;
                1 on CIFAR, 4 for W-MSE 2 on STL-10 and Tiny ImageNet).
            w_eps: shrinkage of the covariance towards the identity, (1 - eps) Sigma + eps I, before Cholesky (the
                official code's `--w_eps`, 0 by default). Raise it (1e-4, say) if a decomposition fails.
            views: the augmentation recipe (the official code's; 2 views, or `wmse_views(4)`).
            optimizer: adamw: the paper's Adam, with the weight decay decoupled (at 1e-6 either way negligible).
            base_lr: learning rate per 256 images (the paper: 3e-3 on CIFAR at batch 256, 2e-3 on STL-10 and Tiny
                ImageNet), scaled linearly with the global batch as every method's is.
            weight_decay: the official code's `--adam_l2` 1e-6.
            warmup_epochs: the official code warms up over 500 steps, 2.5 CIFAR epochs at batch 256; then it drops
                the rate 5-fold 50 and 25 epochs before the end where `Method` decays it on a cosine.
        """
        check_options(
            at_least(1, projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
            + at_least(1, projector_num_layers=projector_num_layers, w_iter=w_iter)
            + at_least(0, w_eps=w_eps)
            + below(1, w_eps=w_eps)
            + ([] if w_size > projector_output_dim else [_w_size_problem(w_size, projector_output_dim)]),
            "--model.init_args",
        )
        _check_batch_size(kwargs.get("batch_size"), w_size)  # when given; `setup` checks the one from the data
        super().__init__(
            views=views, optimizer=optimizer, base_lr=base_lr, weight_decay=weight_decay,
            warmup_epochs=warmup_epochs, **kwargs,
        )  # fmt: skip
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, num_layers=projector_num_layers
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        _check_batch_size(self.hparams.batch_size, self.hparams.w_size)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        # all views through the projector at once, one set of BN statistics, as the official code
        embeddings = self.projector(torch.cat(features)).chunk(len(features))  # (N, D) each
        orders = sub_batch_orders(features[0].shape[0], hp.w_iter, device=features[0].device)  # global random state
        terms = wmse_terms(embeddings, hp.w_size, orders, hp.w_eps)
        return terms.loss, {Metric.WHITENING_ERROR: terms.whitening_error}


def _w_size_problem(w_size: int, projector_output_dim: int) -> str:
    return (
        f"w_size must exceed projector_output_dim ({projector_output_dim}), got {w_size}: a sub-batch of w_size "
        "embeddings has a covariance of rank at most w_size - 1, which Cholesky whitening needs full"
    )


def _check_batch_size(batch_size: int | None, w_size: int) -> None:
    """Each device's batch is cut into sub-batches of w_size: it must be a multiple of it."""
    if batch_size is not None and batch_size % w_size:
        raise ConfigurationError(
            f"W-MSE whitens each device's batch in sub-batches of w_size={w_size} images, so the per-device "
            f"batch must be a multiple of w_size; got {batch_size}. Set --data.batch_size to a multiple of "
            "w_size, or --model.init_args.w_size to a divisor of the batch above projector_output_dim."
        )
