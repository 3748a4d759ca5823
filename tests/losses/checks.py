"""What the loss tests share: unit-norm test embeddings, the float32-against-float64 comparison of a loss and its
gradients, and DDP's gradient reduction written out for the 2-rank tests."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def unit(rows: int, seed: int) -> Tensor:
    """`rows` random unit vectors of 8 dimensions, drawn from `seed`."""
    return F.normalize(torch.randn(rows, 8, generator=torch.Generator().manual_seed(seed)), dim=1)


def assert_close_with_gradients(loss: Tensor, expected: Tensor, inputs: list[Tensor]) -> None:
    """float32 against the float64 reference: the loss and the gradient of every input."""
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    gradients = torch.autograd.grad(loss, inputs)
    for gradient, expected_gradient in zip(gradients, torch.autograd.grad(expected, inputs), strict=True):
        torch.testing.assert_close(gradient.double(), expected_gradient.double(), rtol=1e-4, atol=1e-6)


def average_gradients_as_ddp_does(model: nn.Module) -> None:
    """DDP's reduction: each parameter's gradient summed over the ranks and divided by their number."""
    for parameter in model.parameters():
        dist.all_reduce(parameter.grad)
        parameter.grad /= dist.get_world_size()
