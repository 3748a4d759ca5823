"""The supervised contrastive loss and the alignment-uniformity objective on 2 gloo ranks equal one process on the
concatenated batch: the mean loss over the ranks, and the gradients DDP applies. One process pair covers every case:
each rank projects its half of a fixed batch with the same linear layer and averages its parameter gradients over
the ranks as DDP's all-reduce does."""

from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

from selfsup.losses import align_uniform_terms, supervised_contrastive_loss, uniformity
from tests.conftest import outcomes_of_ranks
from tests.losses.checks import average_gradients_as_ddp_does

WORLD_SIZE, GLOBAL_BATCH, INPUT_DIM, EMBEDDING_DIM = 2, 8, 6, 5
LOCAL_BATCH = GLOBAL_BATCH // WORLD_SIZE
# classes shared across the ranks, a class on one rank only (3), unknown labels (-1)
LABELS = torch.tensor([0, 1, -1, 0, 1, 2, 0, 3])
LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "supcon": lambda z_a, z_b, labels: supervised_contrastive_loss([z_a, z_b], labels, 0.2),
    "alignuniform": lambda z_a, z_b, labels: align_uniform_terms(z_a, z_b, 2.0, 2.0).loss(0.7),
}


def global_batch() -> tuple[Tensor, Tensor]:
    """The inputs of both views, (GLOBAL_BATCH, INPUT_DIM) each; rank r holds rows r * LOCAL_BATCH onwards."""
    generator = torch.Generator().manual_seed(0)
    x_a = torch.randn(GLOBAL_BATCH, INPUT_DIM, generator=generator)
    return x_a, x_a + 0.5 * torch.randn(GLOBAL_BATCH, INPUT_DIM, generator=generator)


def projector() -> nn.Linear:
    torch.manual_seed(1)  # the same weights in every process
    return nn.Linear(INPUT_DIM, EMBEDDING_DIM)


def _ddp_worker(process_rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=process_rank, world_size=WORLD_SIZE)
    local = slice(process_rank * LOCAL_BATCH, (process_rank + 1) * LOCAL_BATCH)
    outcome = {}
    for name, loss_function in LOSSES.items():
        inputs = [x[local].clone().requires_grad_() for x in global_batch()]
        model = projector()
        z_a, z_b = model(torch.cat(inputs)).chunk(2)
        loss = loss_function(z_a, z_b, LABELS[local])
        loss.backward()
        average_gradients_as_ddp_does(model)
        outcome[name] = {
            "loss": loss.item(),
            "inputs": [x.grad.tolist() for x in inputs],
            "parameters": [p.grad.tolist() for p in model.parameters()],
            "uniformity": align_uniform_terms(z_a, z_b).uniformity.item(),
            "local_uniformity": ((uniformity(z_a) + uniformity(z_b)) / 2).item(),
        }
    results.put((process_rank, outcome))  # plain data outlives the process
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    """What each rank computed, in rank order."""
    return outcomes_of_ranks(_ddp_worker, WORLD_SIZE)


def one_process(name: str) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """(loss, input gradients, parameter gradients) of one process on the whole batch."""
    inputs = [x.requires_grad_() for x in global_batch()]
    model = projector()
    loss = LOSSES[name](*model(torch.cat(inputs)).chunk(2), LABELS)
    loss.backward()
    return loss.detach(), [x.grad for x in inputs], [p.grad for p in model.parameters()]


def close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_mean_loss_over_ranks_equals_one_process_on_the_concatenated_batch(name: str, ranks: list[dict]) -> None:
    loss, _, _ = one_process(name)
    close(torch.tensor([outcome[name]["loss"] for outcome in ranks]).mean(), loss)


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_after_ddp_averaging_equal_one_process(name: str, ranks: list[dict]) -> None:
    """Parameters: each rank holds DDP's mean of the two ranks' gradients. Inputs: each rank's share of the input
    gradient is its gradient divided by the world size; put together in rank order they are the one-process one."""
    _, input_gradients, parameter_gradients = one_process(name)
    for outcome in ranks:
        for gradient, expected in zip(outcome[name]["parameters"], parameter_gradients, strict=True):
            close(torch.tensor(gradient), expected)
    for view, expected in enumerate(input_gradients):
        shares = torch.cat([torch.tensor(outcome[name]["inputs"][view]) / WORLD_SIZE for outcome in ranks])
        close(shares, expected)


def test_uniformity_is_the_global_batch_s_on_every_rank_not_the_mean_of_each_rank_s(ranks: list[dict]) -> None:
    """The log of the mean over every pair, on each rank; the mean over ranks of each rank's own log differs."""
    z_a, z_b = projector()(torch.cat(global_batch())).detach().chunk(2)
    expected = (uniformity(z_a) + uniformity(z_b)) / 2
    for outcome in ranks:
        close(torch.tensor(outcome["alignuniform"]["uniformity"]), expected)
    naive = torch.tensor([outcome["alignuniform"]["local_uniformity"] for outcome in ranks]).mean()
    assert (naive - expected).abs() > 1e-3
