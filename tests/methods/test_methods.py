"""Every registered method lowers its loss on a fixed batch, and its step's computation compiles as one graph (its
checkpoints: tests/methods/test_resume_and_export.py)."""

import pytest
import torch
import torch._dynamo

from selfsup.methods import METHODS
from selfsup.models.hard_negative_mixing import HardNegativeMixing

TINY = dict(backbone="test_resnet", small_image_stem=False, views=[{"num_views": 2}], image_size=16, num_classes=3)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_step_reduces_loss_on_a_fixed_batch(name: str) -> None:
    torch.manual_seed(0)
    method = METHODS[name](**TINY)
    images, labels = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8), torch.randint(0, 3, (16,))
    views = [v.clone() for v in method.multiview(images, torch.Generator().manual_seed(0))]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss, probe_loss, _ = method.compute_losses(views, labels)
        assert torch.isfinite(loss) and torch.isfinite(probe_loss)
        optimizer.zero_grad()
        (loss + probe_loss).backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_simclr_with_hard_negative_mixing_trains() -> None:
    torch.manual_seed(0)
    method = METHODS["simclr"](**TINY, mixing=HardNegativeMixing(num_hard=8, num_mixed=8, num_query_mixed=4))
    images, labels = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8), torch.randint(0, 3, (16,))
    views = [v.clone() for v in method.multiview(images, torch.Generator().manual_seed(0))]
    loss, _, _ = method.compute_losses(views, labels)
    loss.backward()
    assert torch.isfinite(loss) and method.projector[0].weight.grad is not None


MIXING = HardNegativeMixing(num_hard=8, num_mixed=8, num_query_mixed=4)  # from epoch 0
ACTIVE_PATHS = {  # the options that take each method through its optional branches in the first step
    "simclr": dict(mixing=MIXING),
    "mocov2": dict(queue_size=64),
    "mochi": dict(queue_size=64, mixing=MIXING),
    "byol": {},
    "dino": dict(head_batch_norm=True, norm_last_layer=False),
    "swav": {},  # its optional queue joins Sinkhorn once full: that check is a host sync (a break)
    "nnclr": dict(neighbours={"support_size": 64}),
    "nnbyol": dict(neighbours={"support_size": 64}),
    "msf": dict(neighbours={"support_size": 64, "num_neighbours": 5, "include_batch": True}),
    "barlowtwins": {},
    "vicreg": {},
    "simsiam": {},
    "nnsiam": dict(neighbours={"support_size": 64}),
    "mocov3": dict(neighbours={"support_size": 64, "num_neighbours": 2}),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_step_computation_compiles_as_one_graph(name: str) -> None:
    """`compute_losses` (backbone, heads, loss, the method's metrics, the probe) traces into one graph with no
    graph break: a logging call, a host sync or a data-dependent shape inside it would split the compiled step
    (each of which was there: logging in every method's loss, SwAV's bincount, NNCLR's fill checks, SimCLR's
    count of in-batch negatives for mixing)."""
    method = METHODS[name](backbone="test_resnet", small_image_stem=False, image_size=16, num_classes=3,
                           batch_size=16, **ACTIVE_PATHS[name])  # fmt: skip
    images, labels = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8), torch.arange(16) % 3
    views = method.multiview(images, torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(method.compute_losses)(views, labels)
    torch._dynamo.reset()  # later tests start with no compiled frames
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
