"""LARS and the warmup-cosine learning-rate factor shared by every method."""

import math

import torch
from torch import Tensor


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


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warmup to 1 over `warmup_steps`, then cosine decay to 0 at `total_steps`.

    Linear warmup for large-batch training ("Accurate, Large Minibatch SGD", Goyal et al. 2017, Sec. 2.2),
    cosine decay without restarts ("SGDR", Loshchilov and Hutter, ICLR 2017), as in SimCLR.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
