"""LARS and the warmup-cosine learning-rate schedule shared by every method, defined on training progress.

The schedule counts samples, not optimizer steps: a run resumed on another number of devices (or with another
batch size) takes steps of another size, but the learning rate at a given fraction of the run stays the same
function of that fraction. The peak rate follows the linear scaling rule of the global batch in use.
"""

import math
from fnmatch import fnmatch
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling.

    "Large Batch Training of Convolutional Networks" (You et al., 2017), Algorithm 1: each parameter's update
    is rescaled by the trust ratio  eta * ||w|| / ||g + wd * w||, so every layer moves by a similar relative
    amount whatever the batch size. As in SimCLR and BYOL, parameter groups marked `lars_exclude` (biases,
    normalisation layers, the online probe) skip the rescaling.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.02,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad.add(param, alpha=group["weight_decay"])
                if not group.get("lars_exclude", False):
                    param_norm, update_norm = param.norm(), update.norm()
                    trust = group["trust_coefficient"] * param_norm / update_norm
                    update = update * torch.where((param_norm > 0) & (update_norm > 0), trust, 1.0)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def weight_decay_groups(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The trained parameters of `model` (less its submodules named in `exclude`) in two groups, by timm's rule
    (`timm.optim.param_groups_weight_decay`): biases and every parameter of at most one dimension (normalisation
    layers) get neither weight decay nor LARS scaling, and neither do the parameters a module declares exempt
    with timm's `no_weight_decay()` (a ViT's position embedding and class token); every other weight decays.

    Unlike timm's function, a weight decay of 0 keeps the groups apart, so LARS still scales the weights."""
    exempt_patterns = [
        f"{prefix}.{pattern}" if prefix else pattern
        for prefix, module in model.named_modules()
        if callable(getattr(module, "no_weight_decay", None))
        for pattern in module.no_weight_decay()
    ]
    decayed, exempt = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or name.split(".", 1)[0] in exclude:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or any(fnmatch(name, p) for p in exempt_patterns):
            exempt.append(param)
        else:
            decayed.append(param)
    return [
        {"name": "weights", "params": decayed},
        {"name": "no_weight_decay", "params": exempt, "weight_decay": 0.0, "lars_exclude": True},
    ]


def ended_optimizer_step(trainer: Any, batch_idx: int) -> bool:
    """Whether training batch `batch_idx` of the epoch ended with an optimizer step: the last of each group of
    `accumulate_grad_batches`, or the epoch's last batch (where Lightning steps on a partial group)."""
    last = batch_idx + 1 == trainer.num_training_batches
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or last


def warmup_cosine(seen: float, warmup: float, total: float, step_size: float = 1) -> float:
    """Learning-rate factor of the step that starts after `seen` units of training (steps or samples) and trains
    `step_size` more: linear warmup to 1 over the first `warmup` units, then cosine decay to 0 at `total`.

    Linear warmup for large-batch training ("Accurate, Large Minibatch SGD", Goyal et al. 2017, Sec. 2.2),
    cosine decay without restarts ("SGDR", Loshchilov and Hutter, ICLR 2017), as in SimCLR.
    """
    if seen < warmup:
        return min(1.0, (seen + step_size) / warmup)
    progress = min(1.0, (seen - warmup) / max(step_size, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule(LRScheduler):
    """`warmup_cosine` over the samples trained on, stepped once per optimizer step.

    Only the number of samples seen is checkpointed. The sizes (`samples_per_step`, `planned_samples`,
    `warmup_samples`) and the peak rates come from the run that loads the checkpoint, so resuming on twice the
    devices continues at the same point of the curve, with the peak scaled to the new global batch, and the
    first resumed step already uses the rate of its own position (not the one saved with the optimizer).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, samples_per_step: int, planned_samples: int,
                 warmup_samples: int) -> None:  # fmt: skip
        self.samples_per_step = samples_per_step
        self.planned_samples = planned_samples
        self.warmup_samples = warmup_samples
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        self._samples_before = 0  # samples seen before this run (a resumed checkpoint's)
        super().__init__(optimizer)

    @property
    def samples_seen(self) -> int:
        return self._samples_before + self.last_epoch * self.samples_per_step

    @property
    def progress(self) -> float:
        """Fraction of the planned samples trained on, in [0, 1]."""
        return min(1.0, self.samples_seen / self.planned_samples)

    def get_lr(self) -> list[float]:
        factor = warmup_cosine(self.samples_seen, self.warmup_samples, self.planned_samples, self.samples_per_step)
        return [peak * factor for peak in self.peak_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {"samples_seen": self.samples_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """`samples_seen`; a checkpoint of the earlier step-count schedule (LambdaLR) gives its steps taken, counted
        at this run's global batch (exact when resumed on the same hardware)."""
        seen = state_dict.get("samples_seen", state_dict.get("last_epoch", 0) * self.samples_per_step)
        self._samples_before, self.last_epoch = int(seen), 0
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = self.get_lr()
