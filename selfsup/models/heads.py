"""Projection heads: the small MLPs between backbone features and a loss."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigurationError, at_least


def projection_mlp(
    input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 2, batch_norm_last: bool = False
) -> nn.Sequential:
    """Linear-BN-ReLU blocks followed by a final linear layer.

    SimCLR's head (Chen et al. 2020, Sec. 2.1) is the two-layer case; BYOL and SimSiam use a batch-normalised
    last layer or three layers, which `batch_norm_last` and `num_layers` express.
    """
    problems = at_least(1, hidden_dim=hidden_dim, output_dim=output_dim, num_layers=num_layers)
    if problems:
        raise ConfigurationError("Invalid projection head: " + "; ".join(problems) + ".")
    layers: list[nn.Module] = []
    dim = input_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, output_dim, bias=not batch_norm_last))
    if batch_norm_last:
        layers.append(nn.BatchNorm1d(output_dim, affine=False))
    return nn.Sequential(*layers)


class WeightNormalizedLinear(nn.Module):
    """A linear layer without bias whose weight rows are g_k v_k / |v_k|: weight normalisation ("Weight
    Normalization", Salimans and Kingma, NeurIPS 2016) as DINO's last layer. With `fixed_norm` every g_k is 1 and
    not trained, DINO's `norm_last_layer`, which its authors found steadies training.

    Takes (B, input_dim) and returns (B, output_dim) in float32, also under autocast: DINO divides these scores by a
    teacher temperature of 0.04, which would magnify bfloat16's rounding 25-fold."""

    def __init__(self, input_dim: int, output_dim: int, fixed_norm: bool = True) -> None:
        super().__init__()
        self.direction = nn.Parameter(F.normalize(torch.randn(output_dim, input_dim), dim=1))  # (K, D): v
        self.gain = None if fixed_norm else nn.Parameter(torch.ones(output_dim))  # (K,): g

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            weight = F.normalize(self.direction.float(), dim=1)
            if self.gain is not None:
                weight = weight * self.gain.float()[:, None]
            return x.float() @ weight.T


class DINOHead(nn.Module):
    """DINO's projection head ("Emerging Properties in Self-Supervised Vision Transformers", Caron et al., ICCV
    2021, Sec. 3.1 and Appendix): a 3-layer MLP with GELU (batch norm optional, off in the paper's ViT runs) down to a
    bottleneck, l2-normalisation, then a weight-normalised linear layer without bias to K scores.

    The bottleneck and the normalised last layer make the K scores cosines (times g), so the temperatures alone set
    how sharp the distributions are. `last_layer` is the part DINO freezes during the first epoch."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        problems = at_least(1, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, output_dim=output_dim)
        if problems:
            raise ConfigurationError("Invalid DINO head: " + "; ".join(problems) + ".")
        layers: list[nn.Module] = []
        for dim in (input_dim, hidden_dim):
            layers += [nn.Linear(dim, hidden_dim)] + ([nn.BatchNorm1d(hidden_dim)] if batch_norm else []) + [nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # the official code's initialisation, as for its ViTs
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormalizedLinear(bottleneck_dim, output_dim, fixed_norm=norm_last_layer)

    def forward(self, features: Tensor) -> Tensor:
        """Scores (B, K) in float32 of backbone features (B, input_dim)."""
        return self.last_layer(F.normalize(self.mlp(features).float(), dim=1))
