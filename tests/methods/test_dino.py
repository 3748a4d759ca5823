"""DINO as a method: the loss from its own heads (the teacher sees only the global crops, the center is read before
it is updated), the head's normalised last layer and its freezing, and the teacher temperature's warmup per epoch."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from selfsup.methods import DINO
from selfsup.models import DINOHead
from selfsup.runs import Metric
from tests.losses.test_dino import reference_dino
from tests.methods.test_method_losses import (
    MULTI_CROP,
    assert_same_loss_and_gradient,
    build,
    drift_momentum_copies,
    step_inputs,
)

SMALL_HEAD = dict(views=MULTI_CROP, output_dim=16, bottleneck_dim=8)


def test_student_sees_every_crop_and_the_teacher_only_the_global_crops_with_the_center_before_its_update() -> None:
    """Eq. (3): each of the 4 student crops against the teacher's 2 global crops but its own, P_t centred with the
    center as it was before this batch, which then moves to 0.9 C + 0.1 (the teacher's mean output)."""
    method = build(DINO, **SMALL_HEAD)
    drift_momentum_copies(method)
    method.center.copy_(torch.randn(16))
    method.current_teacher_temperature.fill_(0.05)
    center = method.center.clone()
    views, features, labels = step_inputs(method)
    loss, metrics = method.ssl_loss(features, views, labels)

    student = list(method.head(torch.cat(features)).split(6))
    with torch.no_grad():
        teacher = list(method.teacher_head(method.teacher_backbone(torch.cat(views[:2]))).split(6))
    assert_same_loss_and_gradient(loss, reference_dino(student, teacher, center, 0.1, 0.05), features)
    torch.testing.assert_close(method.center, 0.9 * center + 0.1 * torch.cat(teacher).mean(dim=0))
    assert set(metrics) == {Metric.TEACHER_ENTROPY, Metric.TEACHER_STUDENT_KL}
    assert getattr(method, DINO.ENCODERS["momentum"]) is method.teacher_backbone  # selfsup export --encoder momentum
    assert "center" in method.state_dict() and "current_teacher_temperature" not in method.state_dict()


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_head_scores_are_cosines_of_the_normalised_bottleneck_and_last_layer_rows(norm_last_layer: bool) -> None:
    """MLP -> l2-normalise -> weight-normalised linear layer without bias: v_k / |v_k|, times a trained g_k unless
    the norm is fixed (norm_last_layer), in which case g is not a parameter at all."""
    torch.manual_seed(0)
    head = DINOHead(12, hidden_dim=16, bottleneck_dim=8, output_dim=10, norm_last_layer=norm_last_layer)
    features = torch.randn(5, 12)
    if not norm_last_layer:
        head.last_layer.gain.data.uniform_(0.5, 2.0)
    bottleneck = F.normalize(head.mlp(features).double(), dim=1)
    rows = F.normalize(head.last_layer.direction.double(), dim=1)
    gain = 1.0 if norm_last_layer else head.last_layer.gain.double()
    torch.testing.assert_close(head(features), (gain * (bottleneck @ rows.T)).float())
    names = [name for name, _ in head.last_layer.named_parameters()]
    assert names == (["direction"] if norm_last_layer else ["direction", "gain"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(features).dtype == torch.float32


@pytest.mark.parametrize(("freeze_epochs", "epoch", "frozen"), [(1, 0, True), (1, 1, False), (0, 0, False)])
def test_last_layer_gets_no_gradient_during_the_first_epochs(freeze_epochs: int, epoch: int, frozen: bool) -> None:
    """After the backward pass of a frozen epoch the last layer's gradient is gone, so the optimizer neither moves
    nor decays it; the rest of the head trains."""
    method = build(DINO, **SMALL_HEAD, freeze_last_layer_epochs=freeze_epochs)
    method.trainer = SimpleNamespace(current_epoch=epoch)
    before = method.head.last_layer.direction.detach().clone()
    optimizer = torch.optim.SGD(method.head.parameters(), lr=0.5, weight_decay=0.1)
    method.head(torch.randn(6, method.feature_dim)).logsumexp(dim=1).mean().backward()
    method.on_after_backward()
    optimizer.step()
    assert (method.head.last_layer.direction.grad is None) == frozen
    assert torch.equal(method.head.last_layer.direction, before) == frozen
    assert method.head.mlp[0].weight.grad is not None


@pytest.mark.parametrize(("warmup_epochs", "epoch", "temperature"), [(30, 0, 0.04), (30, 15, 0.055), (30, 30, 0.07),
                                                                     (30, 99, 0.07), (0, 0, 0.07)])  # fmt: skip
def test_teacher_temperature_warms_up_linearly_per_epoch(warmup_epochs: int, epoch: int, temperature: float) -> None:
    method = build(DINO, **SMALL_HEAD, warmup_teacher_temperature_epochs=warmup_epochs)
    method.trainer = SimpleNamespace(current_epoch=epoch)
    method.on_train_batch_start(None, 0)
    assert method.current_teacher_temperature.item() == pytest.approx(temperature)
