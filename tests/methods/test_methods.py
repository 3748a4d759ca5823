"""Every registered method lowers its loss on a fixed batch, and its step's computation compiles as one graph (its
checkpoints: tests/methods/test_resume_and_export.py)."""

import pytest
import torch
import torch._dynamo

from selfsup.methods import METHODS
from selfsup.models.hard_negative_mixing import HardNegativeMixing

TINY = dict(backbone="test_resnet", small_image_stem=False, views=[{"num_views": 2}], image_size=16, num_classes=3)
# What a method needs to train on these tests' 16 images at all: W-MSE whitens sub-batches of more images than its
# embedding has dimensions, and its paper's 128 images of 64 dimensions are more images than the tests have.
SMALL_BATCH = {"wmse": dict(w_size=8, projector_output_dim=4)}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_step_reduces_loss_on_a_fixed_batch(name: str) -> None:
    torch.manual_seed(0)
    method = METHODS[name](**TINY, **SMALL_BATCH.get(name, {}))
    images, labels = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8), torch.randint(0, 3, (16,))
    views = [v.clone() for v in method.multiview(images, torch.Generator().manual_seed(0))]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
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
NEIGHBOURS = dict(neighbours={"support_size": 64})
# The options that take each method's code through its optional branches in the first step. NNBYOL and NNSiam are
# BYOL and SimSiam with other defaults (`neighbours` on): BYOL and SimSiam are traced with neighbours, and the
# registry check below keeps every method whose class has code of its own in this list.
ACTIVE_PATHS = {
    "simclr": dict(mixing=MIXING),
    "mocov2": dict(queue_size=64, negatives={"tau_plus": 0.1, "beta": 1.0}),  # debiased hard negatives
    "mochi": dict(queue_size=64, mixing=MIXING),
    "byol": NEIGHBOURS,
    "dino": dict(head_batch_norm=True, norm_last_layer=False),
    "swav": {},  # its optional queue joins Sinkhorn once full: that check is a host sync (a break)
    "nnclr": NEIGHBOURS,
    "msf": dict(neighbours={"support_size": 64, "num_neighbours": 5, "include_batch": True}),
    "barlowtwins": {},
    "vicreg": {},
    "wmse": dict(**SMALL_BATCH["wmse"], w_iter=2, views=[{"num_views": 4}]),  # 2 splits, 6 pairs of views
    "simsiam": NEIGHBOURS,
    "mocov3": dict(neighbours={"support_size": 64, "num_neighbours": 2}),
    "supcon": {},
    "alignuniform": {},
    "polyview": dict(objective="arithmetic"),  # 4 views; its other objectives take the same code apart from the mean
}


def test_every_method_with_code_of_its_own_is_traced() -> None:
    """A registered method left out of ACTIVE_PATHS must be its parent's code with other defaults: a class whose
    only function is `__init__`, under a traced parent."""
    for name, method in METHODS.items():
        if name not in ACTIVE_PATHS:
            functions = {key for key, value in vars(method).items() if callable(value)}
            assert functions == {"__init__"}, f"{name} defines {sorted(functions)}: add it to ACTIVE_PATHS"
            assert method.__base__ in {METHODS[traced] for traced in ACTIVE_PATHS}, name


# The backbone the checks of a method's own code run on (tracing, resuming): `tests.conftest.TinyBackbone`. Lowering
# the loss in a few steps takes a real one (TINY's).
TRACED_BACKBONE = "selfsup_test_tiny"
# Option groups that refuse those above (each makes or weighs negatives its own way): traced on their own.
OTHER_PATHS = {
    "simclr-transformation": ("simclr", dict(transformation={"positive_alpha": 2.0, "negative_alpha": 1.6})),
    "mocov2-cacr": ("mocov2", dict(queue_size=64, cacr={"enabled": True})),
    "mocov2-transformation": (
        "mocov2",
        dict(queue_size=64, transformation={"positive_alpha": 2.0, "negative_alpha": 1.6}),
    ),
}
TRACED = {name: (name, options) for name, options in ACTIVE_PATHS.items()} | OTHER_PATHS


@pytest.mark.parametrize("case", sorted(TRACED))
def test_the_step_computation_compiles_as_one_graph(case: str) -> None:
    """`compute_losses` (backbone, heads, loss, the method's metrics, the probe) traces into one graph with no
    graph break: a logging call, a host sync or a data-dependent shape inside it would split the compiled step
    (each of which was there: logging in every method's loss, SwAV's bincount, NNCLR's fill checks, SimCLR's
    count of in-batch negatives for mixing)."""
    name, options = TRACED[case]
    method = METHODS[name](backbone=TRACED_BACKBONE, small_image_stem=False, image_size=16, num_classes=3,
                           batch_size=16, **options)  # fmt: skip
    images, labels = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8), torch.arange(16) % 3
    views = method.multiview(images, torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(method.compute_losses)(views, labels)
    torch._dynamo.reset()  # later tests start with no compiled frames
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
