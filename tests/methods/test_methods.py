"""Every registered method trains a few steps, lowers its loss on a fixed batch, and round-trips a checkpoint."""

from pathlib import Path

import pytest
import torch

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
        loss, probe_loss = method.compute_losses(views, labels)
        assert torch.isfinite(loss) and torch.isfinite(probe_loss)
        optimizer.zero_grad()
        (loss + probe_loss).backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_checkpoint_round_trip_with_weights_only(name: str, tmp_path: Path) -> None:
    method = METHODS[name](**TINY)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, path)
    checkpoint = torch.load(path, weights_only=True)
    restored = METHODS[name](**checkpoint["hyper_parameters"])
    restored.load_state_dict(checkpoint["state_dict"])
    for key, value in method.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value)


def test_simclr_with_hard_negative_mixing_trains() -> None:
    torch.manual_seed(0)
    method = METHODS["simclr"](**TINY, mixing=HardNegativeMixing(num_hard=8, num_mixed=8, num_query_mixed=4))
    images, labels = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8), torch.randint(0, 3, (16,))
    views = [v.clone() for v in method.multiview(images, torch.Generator().manual_seed(0))]
    loss, _ = method.compute_losses(views, labels)
    loss.backward()
    assert torch.isfinite(loss) and method.projector[0].weight.grad is not None
