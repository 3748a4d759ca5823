"""Momentum (EMA) copies of modules: MoCo's key encoder and BYOL's target network.

"Momentum Contrast for Unsupervised Visual Representation Learning" (He et al., CVPR 2020), eq. (2):
theta_k <- m theta_k + (1 - m) theta_q. BYOL ("Bootstrap Your Own Latent", Grill et al., NeurIPS 2020,
Sec. 3.2) raises the momentum from tau_base to 1 with a cosine schedule over training.
"""

import copy
import math

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of `module`: no gradient, hence no optimizer state; updated only by `ema_update`."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online for parameters; buffers (BN statistics) are copied."""
    for target_param, online_param in zip(target.parameters(), online.parameters(), strict=True):
        target_param.lerp_(online_param.detach(), 1.0 - tau)
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers(), strict=True):
        target_buffer.copy_(online_buffer)


def cosine_momentum(progress: float, tau_base: float, tau_final: float) -> float:
    """BYOL's schedule over the fraction of training done, k / K in the paper: tau_base at 0, tau_final at 1;
    constant when they are equal (MoCo)."""
    progress = min(1.0, max(0.0, progress))
    return tau_final - (tau_final - tau_base) * (math.cos(math.pi * progress) + 1) / 2
