"""Barlow Twins and VICReg under DDP on 2 gloo ranks equal one process on the concatenated batch: the loss (Barlow
Twins: the same on each rank; VICReg: the mean over ranks, its invariance term being local) and the gradients DDP
applies. One spawn covers every case: each rank projects its half of a fixed batch with the same linear layer and
averages its parameter gradients over the ranks as DDP's all-reduce does (DistributedDataParallel itself would add
over a second of start-up to each rank)."""

from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

from selfsup.distributed import gather, rank
from selfsup.losses import barlow_twins_loss, vicreg_loss
from tests.conftest import outcomes_of_ranks
from tests.losses.checks import average_gradients_as_ddp_does
from tests.losses.test_barlow_twins import reference_barlow_twins
from tests.losses.test_vicreg import reference_vicreg

WORLD_SIZE, GLOBAL_BATCH, INPUT_DIM, EMBEDDING_DIM = 2, 8, 6, 5
LOCAL_BATCH = GLOBAL_BATCH // WORLD_SIZE
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"barlowtwins": barlow_twins_loss, "vicreg": vicreg_loss}
# The same losses written from the papers' pseudo-code, for the naive gather below.
REFERENCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "barlowtwins": lambda z_a, z_b: reference_barlow_twins(z_a, z_b, 0.0051)[0],
    "vicreg": lambda z_a, z_b: reference_vicreg(z_a, z_b)[0],
}


def global_batch() -> tuple[Tensor, Tensor]:
    """The inputs of both views, (GLOBAL_BATCH, INPUT_DIM) each; rank r holds rows r * LOCAL_BATCH onwards."""
    generator = torch.Generator().manual_seed(0)
    x_a = torch.randn(GLOBAL_BATCH, INPUT_DIM, generator=generator)
    return x_a, x_a + 0.5 * torch.randn(GLOBAL_BATCH, INPUT_DIM, generator=generator)


def projector() -> nn.Linear:
    torch.manual_seed(1)  # the same weights in every process
    return nn.Linear(INPUT_DIM, EMBEDDING_DIM)


def with_other_ranks_detached(z: Tensor) -> Tensor:
    """The global batch as a gather without gradient gives it, this rank's rows still in the graph: only the gradient
    of the local samples' share reaches this rank, as with lightly's cross-correlation all-reduced without a
    backward (its issues #1920 and #1977)."""
    everyone = gather(z)
    start = rank() * LOCAL_BATCH
    return torch.cat([everyone[:start], z, everyone[start + LOCAL_BATCH :]])


def _ddp_worker(process_rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=process_rank, world_size=WORLD_SIZE)
    local = slice(process_rank * LOCAL_BATCH, (process_rank + 1) * LOCAL_BATCH)
    outcome = {}
    for name, loss_function in LOSSES.items():
        inputs = [x[local].clone().requires_grad_() for x in global_batch()]
        model = projector()
        loss = loss_function(*model(torch.cat(inputs)).chunk(2))
        loss.backward()
        average_gradients_as_ddp_does(model)
        naive_model = projector()
        z_a, z_b = naive_model(torch.cat([x[local] for x in global_batch()])).chunk(2)
        REFERENCES[name](with_other_ranks_detached(z_a), with_other_ranks_detached(z_b)).backward()
        average_gradients_as_ddp_does(naive_model)
        outcome[name] = {
            "loss": loss.item(),
            "inputs": [x.grad.tolist() for x in inputs],
            "parameters": [p.grad.tolist() for p in model.parameters()],
            "naive_parameters": [p.grad.tolist() for p in naive_model.parameters()],
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
    loss = LOSSES[name](*model(torch.cat(inputs)).chunk(2))
    loss.backward()
    return loss.detach(), [x.grad for x in inputs], [p.grad for p in model.parameters()]


def close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


def test_barlow_twins_loss_on_each_rank_equals_one_process_on_the_concatenated_batch(ranks: list[dict]) -> None:
    loss, _, _ = one_process("barlowtwins")
    for outcome in ranks:
        close(torch.tensor(outcome["barlowtwins"]["loss"]), loss)


def test_vicreg_mean_loss_over_ranks_equals_one_process_on_the_concatenated_batch(ranks: list[dict]) -> None:
    loss, _, _ = one_process("vicreg")
    per_rank = torch.tensor([outcome["vicreg"]["loss"] for outcome in ranks])
    close(per_rank.mean(), loss)
    assert per_rank[0] != per_rank[1], "the invariance term is each rank's own"


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_after_ddp_averaging_equal_one_process(name: str, ranks: list[dict]) -> None:
    """Parameters: each rank holds DDP's mean of the two ranks' gradients. Inputs: DDP would average what each rank's
    input gradient contributes to the parameters, so each rank's share of the input gradient is its gradient divided
    by the world size; put together in rank order they are the one-process gradient."""
    _, input_gradients, parameter_gradients = one_process(name)
    for outcome in ranks:
        for gradient, expected in zip(outcome[name]["parameters"], parameter_gradients, strict=True):
            close(torch.tensor(gradient), expected)
    for view, expected in enumerate(input_gradients):
        shares = torch.cat([torch.tensor(outcome[name]["inputs"][view]) / WORLD_SIZE for outcome in ranks])
        close(shares, expected)


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_is_not_one_over_world_size_too_small(name: str, ranks: list[dict]) -> None:
    """The gradient DDP applies is the one-process gradient, not 1/world_size of it; the other ranks' embeddings
    gathered without gradient (the kind of bug lightly shipped, its issues #1920 and #1977) give exactly that 1/2
    here, so this test would catch it."""
    _, _, parameter_gradients = one_process(name)
    weight_gradient = parameter_gradients[0]
    ddp = torch.tensor(ranks[0][name]["parameters"][0])
    naive = torch.tensor(ranks[0][name]["naive_parameters"][0])
    assert (ddp.norm() / weight_gradient.norm()).item() == pytest.approx(1.0, rel=1e-4)
    close(naive, weight_gradient / WORLD_SIZE)
