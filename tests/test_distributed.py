"""`selfsup.distributed` on 2 gloo ranks: what a loss gets back through a gather with gradient."""

import torch
import torch.distributed as dist

from selfsup.distributed import gather_with_grad
from tests.conftest import RANKS, free_port, start_ranks

WEIGHTS = torch.arange(24.0).view(2, 2, 6).permute(2, 0, 1)  # (6, 2, 2), not contiguous in memory


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x = torch.arange(12.0).view(3, 2, 2).add(100 * rank).requires_grad_()
    (gather_with_grad(x) * WEIGHTS).sum().backward()
    results.put((rank, x.grad.tolist()))  # plain data: the rank may have exited when it is read
    dist.destroy_process_group()


def test_each_rank_gets_the_summed_gradient_of_its_own_rows_even_when_it_arrives_non_contiguous() -> None:
    """A loss weighting the gathered (6, 2, 2) tensor with a permuted view hands the gather a non-contiguous
    gradient, which gloo's reduction scrambled: each rank must get the gradient of its own 3 rows, summed over the
    2 ranks (each computed the same loss), as one process on the whole batch gives it twice."""
    results = RANKS.SimpleQueue()
    start_ranks(_worker, (free_port(), results))
    gradients = {rank: torch.tensor(gradient) for rank, gradient in (results.get() for _ in range(2))}
    expected = 2 * WEIGHTS.contiguous()
    torch.testing.assert_close(torch.cat([gradients[0], gradients[1]]), expected)
