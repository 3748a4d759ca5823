"""Every loss `selfsup.losses` exports is called as lightly's and PyTorch's are: `loss = criterion(...)` gives a
0-dim tensor to call `backward` on. The hardness metrics come from a separate entry point, with the same loss."""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import selfsup.losses as losses
from selfsup.models.hard_negative_mixing import HardNegativeMixing
from selfsup.runs import Metric
from tests.losses.checks import unit

# Each exported loss, called on the embeddings `z` (6, 8) that carry the gradient.
CALLS: dict[str, Callable[[Tensor], Tensor]] = {
    "InfoNCELoss": lambda z: losses.InfoNCELoss(0.2)(z, unit(6, 1)),
    "cross_view_info_nce": lambda z: losses.cross_view_info_nce(unit(6, 1), z, 0.2),
    "dino_loss": lambda z: losses.dino_loss([z, unit(6, 1)], [unit(6, 2), unit(6, 3)], torch.zeros(8)),
    "info_nce": lambda z: losses.info_nce(z @ unit(6, 1).T, torch.arange(6)),
    "normalized_mse": lambda z: losses.normalized_mse(z, unit(6, 1)),
    "queue_info_nce": lambda z: losses.queue_info_nce(F.normalize(z, dim=1), unit(6, 1), unit(16, 2), 0.2),
    "swapped_prediction_loss": lambda z: losses.swapped_prediction_loss(
        [z, unit(6, 1)], [losses.sinkhorn_knopp(z), losses.sinkhorn_knopp(unit(6, 1))]
    ),
    "barlow_twins_loss": lambda z: losses.barlow_twins_loss(z, unit(6, 1)),
    "vicreg_loss": lambda z: losses.vicreg_loss(z, unit(6, 1)),
    "mocov3_info_nce": lambda z: losses.mocov3_info_nce(z, unit(6, 1), 0.2),
    "negative_cosine_similarity": lambda z: losses.negative_cosine_similarity(z, unit(6, 1)),
    "wmse_loss": lambda z: losses.wmse_loss([z[:, :4], unit(6, 1)[:, :4]], w_size=6),
    "supervised_contrastive_loss": lambda z: losses.supervised_contrastive_loss([z, unit(6, 1)], torch.arange(6) % 3),
    "align_uniform_loss": lambda z: losses.align_uniform_loss(z, unit(6, 1)),
    "alignment": lambda z: losses.alignment(z, unit(6, 1)),
    "uniformity": lambda z: losses.uniformity(z),
    "global_uniformity": lambda z: losses.global_uniformity(z),
    "polyview_loss": lambda z: losses.polyview_loss([z, unit(6, 1), unit(6, 2)], 0.2),
}
NOT_LOSSES = {
    "DebiasedNegatives": "the option group of InfoNCELoss and queue_info_nce (tests/losses/test_debiased.py)",
    "AttractionRepulsion": "CACR's option group of InfoNCELoss and queue_info_nce (tests/losses/test_cacr.py)",
    "debiased_info_nce": "the estimator behind InfoNCELoss(negatives=...), with its metrics (test_debiased.py)",
    "attraction_repulsion": "CACR behind InfoNCELoss(cacr=...), with its metrics (tests/losses/test_cacr.py)",
    "sinkhorn_knopp": "SwAV's codes, computed without gradient",
    "LossAndHardness": "the type the *_and_hardness entry points return",
    "queue_info_nce_and_hardness": "the methods' entry point, checked against queue_info_nce below",
    "polyview_loss_and_hardness": "the polyview method's entry point, checked against polyview_loss below",
    "dino_loss_terms": "DINO's entry point, with its collapse metrics (tests/losses/test_dino.py checks its loss)",
    "DinoLossTerms": "the type dino_loss_terms returns",
    "dino_center_update": "DINO's center, computed without gradient",
    "barlow_twins_terms": "the methods' entry point, its terms' loss checked against barlow_twins_loss in its tests",
    "vicreg_terms": "the methods' entry point, its terms' loss checked against vicreg_loss in its tests",
    "BarlowTwinsTerms": "the type barlow_twins_terms returns",
    "VICRegTerms": "the type vicreg_terms returns",
    "wmse_terms": "the method's entry point on sub-batches it drew, its loss checked against the paper in its tests",
    "WMSETerms": "the type wmse_terms returns",
    "whiten": "W-MSE's whitening transform, not a loss",
    "normalized_output_std": "SimSiam's collapse monitor, computed without gradient",
    "supervised_contrastive_loss_and_hardness": "SupCon's entry point, the loss of supervised_contrastive_loss",
    "align_uniform_terms": "AlignUniform's entry point, its terms' loss checked against align_uniform_loss",
    "AlignUniformTerms": "the type align_uniform_terms returns",
}


def test_every_export_is_either_a_loss_checked_here_or_named_as_not_one() -> None:
    assert sorted(losses.__all__) == sorted([*CALLS, *NOT_LOSSES])


@pytest.mark.parametrize("name", CALLS)
def test_calling_a_loss_returns_a_scalar_tensor_that_backpropagates(name: str) -> None:
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = CALLS[name](z)
    assert isinstance(loss, Tensor) and loss.shape == ()
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_the_hardness_entry_points_return_the_same_loss() -> None:
    """`loss_and_hardness` is what the methods train with: its loss must be the one a user gets by calling."""
    z_a, z_b, queue = unit(6, 0), unit(6, 1), unit(16, 2)
    mixing = HardNegativeMixing(num_hard=4, num_mixed=3, num_query_mixed=2)
    criterion = losses.InfoNCELoss(0.2)
    with_hardness = [
        lambda: criterion.loss_and_hardness(z_a, z_b, mixing),
        lambda: losses.queue_info_nce_and_hardness(z_a, z_b, queue, 0.2, mixing=mixing),
    ]
    plain = [lambda: criterion(z_a, z_b, mixing), lambda: losses.queue_info_nce(z_a, z_b, queue, 0.2, mixing=mixing)]
    for both, loss_only in zip(with_hardness, plain, strict=True):
        torch.manual_seed(0)  # the same mixing draws
        loss, hardness = both()
        torch.manual_seed(0)
        torch.testing.assert_close(loss, loss_only())
        assert set(hardness) == {
            Metric.HARD_NEGATIVE_SIM,
            Metric.SYNTHETIC_NEGATIVE_SIM,
            Metric.SYNTHETIC_HARDER_FRACTION,
        }


def test_the_polyview_entry_point_returns_the_same_loss() -> None:
    views = [unit(6, 0), unit(6, 1), unit(6, 2)]
    loss, hardness = losses.polyview_loss_and_hardness(views, 0.2, "arithmetic")
    torch.testing.assert_close(loss, losses.polyview_loss(views, 0.2, "arithmetic"))
    assert set(hardness) == {Metric.HARD_NEGATIVE_SIM}
