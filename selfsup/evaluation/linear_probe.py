"""Offline linear probe: a linear classifier on frozen, cached features, the protocol papers report.

The features are standardized with the training mean and std (the role of the parameter-free BatchNorm in
front of the classifier in MAE's and MoCo v3's probes), so one small grid of learning rates and weight
decays suits every backbone. Every configuration of the grid trains at once on the same mini-batches, as one
stacked weight tensor with a learning rate and weight decay per configuration. The configuration that is
best on a held-out part of the training set is retrained on the whole training set and scored on the test
set (top-1 and top-5). With `augmented_features`, training features are recomputed every epoch from randomly
cropped and flipped images, as in the standard augmented protocol (He et al., "Momentum Contrast for
Unsupervised Visual Representation Learning", Sec. 4.1); held-out and test features stay clean.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigurationError


@dataclass(frozen=True)
class LinearProbeConfig:
    """Settings of the offline linear probe (defaults suit 10-100 class datasets)."""

    optimizer: Literal["sgd", "lbfgs"] = "sgd"
    learning_rates: tuple[float, ...] = (0.01, 0.1, 1.0)  # sgd only; lbfgs searches its own steps
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3)
    epochs: int = 100  # sgd epochs; lbfgs: iterations
    batch_size: int = 1024
    validation_fraction: float = 0.1  # of the training set, held out to choose the grid point
    augment: bool = False  # random resized crop + flip of the training images every epoch
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise ConfigurationError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")
        if self.epochs < 1 or self.batch_size < 1 or not self.weight_decays:
            raise ConfigurationError("the linear probe needs epochs >= 1, batch_size >= 1 and one weight decay")
        if self.optimizer == "sgd" and not self.learning_rates:
            raise ConfigurationError("the sgd probe needs at least one learning rate in learning_rates")


@dataclass
class LinearProbeResult:
    """The linear probe's test top-1 and top-5 (fractions), the chosen grid point (learning rate, None for L-BFGS,
    and weight decay) and the held-out top-1 of every grid point."""

    top1: float
    top5: float
    learning_rate: float | None
    weight_decay: float
    grid: list[dict[str, float]] = field(default_factory=list)  # held-out top-1 of every configuration


def train_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    config: LinearProbeConfig | None = None,
    augmented_features: Callable[[int], Tensor] | None = None,
) -> LinearProbeResult:
    """Choose the grid point on a held-out split, retrain it on all training features, score the test set.

    Args:
        train_features: clean features (N, D) of the training set.
        train_labels: their labels (N,); labels of -1 are left out everywhere.
        test_features: clean features (M, D) of the test set.
        test_labels: their labels (M,).
        num_classes: classes of the task.
        config: the probe's settings.
        augmented_features: with `config.augment`, epoch -> (N, D) features of freshly augmented training
            images, in the order of `train_features`.
    """
    config = config or LinearProbeConfig()
    keep = train_labels >= 0
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(int(keep.sum()), generator=generator).to(train_labels.device)
    labelled = keep.nonzero().squeeze(1)[order]
    held_out = max(1, round(config.validation_fraction * labelled.numel()))
    fit_index, validation_index = labelled[held_out:], labelled[:held_out]

    grid = [(lr, wd) for lr in _learning_rates(config) for wd in config.weight_decays]
    heads = _fit(train_features, train_labels, fit_index, grid, num_classes, config, augmented_features)
    validation_logits = heads(train_features[validation_index])  # (grid, held out, classes)
    validation = [_top_k(logits, train_labels[validation_index], 1) for logits in validation_logits]
    best = max(range(len(grid)), key=lambda i: validation[i])

    final = _fit(train_features, train_labels, labelled, [grid[best]], num_classes, config, augmented_features)
    scored = test_labels >= 0
    logits, targets = final(test_features[scored])[0], test_labels[scored]
    return LinearProbeResult(
        top1=_top_k(logits, targets, 1),
        top5=_top_k(logits, targets, min(5, num_classes)),
        learning_rate=grid[best][0],
        weight_decay=grid[best][1],
        grid=[
            {"learning_rate": lr, "weight_decay": wd, "validation_top1": acc}
            for (lr, wd), acc in zip(grid, validation, strict=True)
        ],
    )


def _learning_rates(config: LinearProbeConfig) -> tuple[float | None, ...]:
    return config.learning_rates if config.optimizer == "sgd" else (None,)


class _LinearHeads:
    """G linear classifiers over the same standardized features, stored as one (G, D, C) weight: a step of
    all of them is one batched matrix product."""

    def __init__(self, mean: Tensor, std: Tensor, num_heads: int, num_classes: int) -> None:
        self.mean, self.std = mean, std
        self.weight = torch.zeros(num_heads, mean.shape[0], num_classes, device=mean.device, requires_grad=True)
        self.bias = torch.zeros(num_heads, 1, num_classes, device=mean.device, requires_grad=True)

    def __call__(self, features: Tensor) -> Tensor:
        """Logits (G, N, C) of features (N, D)."""
        return torch.matmul((features.float() - self.mean) / self.std, self.weight) + self.bias

    def loss(self, features: Tensor, targets: Tensor, weight_decay: Tensor | None = None) -> Tensor:
        """Sum over heads of each head's mean cross-entropy (plus its L2 penalty): heads are independent, so
        one backward pass gives every head its own gradient."""
        logits = self(features)
        heads, batch, classes = logits.shape
        loss = F.cross_entropy(logits.reshape(-1, classes), targets.repeat(heads), reduction="sum") / batch
        if weight_decay is not None:
            loss = loss + (weight_decay.view(-1) * self.weight.square().sum(dim=(1, 2))).sum()
        return loss


def _fit(
    features: Tensor,
    labels: Tensor,
    index: Tensor,
    grid: list[tuple[float | None, float]],
    num_classes: int,
    config: LinearProbeConfig,
    augmented_features: Callable[[int], Tensor] | None,
) -> _LinearHeads:
    """One head per (learning rate, weight decay) of the grid, trained on features[index]."""
    clean = features[index].float()
    heads = _LinearHeads(clean.mean(dim=0), clean.std(dim=0).clamp(min=1e-6), len(grid), num_classes)
    targets = labels[index]
    if config.optimizer == "lbfgs":
        _fit_lbfgs(heads, clean, targets, [wd for _, wd in grid], config.epochs)
        return heads

    # SGD with momentum 0.9 and a cosine schedule, each head with its own rate and weight decay (torch.optim.SGD's
    # update, written out for the stacked heads; the decay applies to weights, not biases)
    learning_rate = torch.tensor([lr for lr, _ in grid], device=features.device).view(-1, 1, 1)
    weight_decay = torch.tensor([wd for _, wd in grid], device=features.device).view(-1, 1, 1)
    velocity = [torch.zeros_like(heads.weight), torch.zeros_like(heads.bias)]
    steps_per_epoch = math.ceil(index.numel() / config.batch_size)
    total, step = config.epochs * steps_per_epoch, 0
    generator = torch.Generator(device=features.device).manual_seed(config.seed)
    for epoch in range(config.epochs):
        inputs = augmented_features(epoch)[index] if config.augment and augmented_features else clean
        for batch in torch.randperm(index.numel(), device=features.device, generator=generator).split(
            config.batch_size
        ):
            weight_grad, bias_grad = torch.autograd.grad(
                heads.loss(inputs[batch], targets[batch]), [heads.weight, heads.bias]
            )
            scale = learning_rate * 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.no_grad():
                velocity[0].mul_(0.9).add_(weight_grad + weight_decay * heads.weight)
                velocity[1].mul_(0.9).add_(bias_grad)
                heads.weight.sub_(scale * velocity[0])
                heads.bias.sub_(scale * velocity[1])
            step += 1
    return heads


def _fit_lbfgs(
    heads: _LinearHeads, features: Tensor, targets: Tensor, weight_decays: list[float], iterations: int
) -> None:
    """Full-batch L-BFGS on the L2-regularised cross-entropy of all heads at once (a multinomial logistic
    regression per weight decay; the heads share no parameters, so the joint problem separates)."""
    weight_decay = torch.tensor(weight_decays, device=features.device)
    optimizer = torch.optim.LBFGS(
        [heads.weight, heads.bias], lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = heads.loss(features, targets, weight_decay)
        loss.backward()
        return loss

    optimizer.step(closure)


@torch.no_grad()
def _top_k(logits: Tensor, targets: Tensor, k: int) -> float:
    hits = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    return hits.float().mean().item()
