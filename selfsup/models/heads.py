"""Projection heads: the small MLPs between backbone features and a loss."""

from torch import nn

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
