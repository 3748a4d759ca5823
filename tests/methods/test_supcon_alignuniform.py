"""SupCon and AlignUniform from their projector's outputs against the float64 references written from their papers
(tests/losses), their logged metrics, their one-line option errors, and SupCon's refusal of data without labels."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.errors import ConfigurationError, OptionsError
from selfsup.methods import AlignUniform, SupCon
from selfsup.runs import Metric
from tests.losses.test_alignment_uniformity import reference_alignment, reference_objective, reference_uniformity
from tests.losses.test_supcon import reference_supcon
from tests.methods.test_method_losses import TWO_VIEWS, assert_same_loss_and_gradient, build, step_inputs


def test_supcon_contrasts_both_views_with_the_labels_of_the_batch() -> None:
    method = build(SupCon, views=TWO_VIEWS, projector_output_dim=8, temperature=0.3)
    views, features, labels = step_inputs(method)
    loss, metrics = method.ssl_loss(features, views, labels)
    embeddings = method.projector(torch.cat(features)).double().chunk(2)
    assert_same_loss_and_gradient(loss, reference_supcon(list(embeddings), labels, 0.3), features)
    assert set(metrics) == {Metric.HARD_NEGATIVE_SIM}
    other_labels, _ = method.ssl_loss(features, views, torch.arange(len(labels)))
    assert (other_labels - loss).abs() > 1e-3, "the labels decide the positives"


def test_alignuniform_weights_uniformity_and_logs_both_terms_unweighted() -> None:
    method = build(AlignUniform, views=TWO_VIEWS, projector_output_dim=8, alpha=1.5, t=3.0, uniformity_weight=0.4)
    views, features, labels = step_inputs(method)
    loss, metrics = method.ssl_loss(features, views, labels)
    z_a, z_b = method.projector(torch.cat(features)).double().chunk(2)
    assert_same_loss_and_gradient(loss, reference_objective(z_a, z_b, 1.5, 3.0, 0.4), features)
    uniform = (reference_uniformity(z_a, 3.0) + reference_uniformity(z_b, 3.0)) / 2
    expected = {Metric.ALIGNMENT: reference_alignment(z_a, z_b, 1.5), Metric.UNIFORMITY: uniform}
    assert set(metrics) == {*expected, Metric.HARD_NEGATIVE_SIM}
    torch.testing.assert_close({name: metrics[name] for name in expected}, {k: v.float() for k, v in expected.items()})


@pytest.mark.parametrize(
    ("method_class", "options", "message"),
    [
        (SupCon, dict(temperature=0), "temperature must be greater than 0, got 0"),
        (SupCon, dict(projector_output_dim=0), "projector_output_dim must be at least 1, got 0"),
        (AlignUniform, dict(uniformity_weight=0), "uniformity_weight must be greater than 0, got 0"),
        (AlignUniform, dict(alpha=-1, t=0), "alpha must be greater than 0, got -1; t must be greater than 0, got 0"),
    ],
)
def test_invalid_options_are_named_in_one_line(method_class: type, options: dict, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as error:
        method_class(**options)
    assert "\n" not in str(error.value)


def test_supcon_refuses_to_train_on_data_without_labels() -> None:
    """A loader of images alone gives no classes (num_classes 0): the run stops in `setup` with one line."""
    method = SupCon(backbone="selfsup_test_tiny", small_image_stem=False, image_size=16)
    images = DataLoader(TensorDataset(torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)), batch_size=4)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    with pytest.warns(UserWarning, match="num_classes"), pytest.raises(ConfigurationError) as error:
        trainer.fit(method, images)
    assert str(error.value).startswith("SupCon trains on labels, but the data has none (num_classes=0)")
    assert "\n" not in str(error.value)
