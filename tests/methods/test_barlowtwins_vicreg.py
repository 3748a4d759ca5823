"""Barlow Twins and VICReg from their own heads' outputs against the float64 references written from their papers'
pseudo-code: each view is projected on its own (its own BN statistics, as in both papers' code), the options weight
the terms, and the logged metrics are the unweighted terms under their `Metric` names."""

import pytest
import torch

from selfsup.errors import OptionsError
from selfsup.methods import BarlowTwins, VICReg
from selfsup.runs import Metric
from tests.losses.test_barlow_twins import reference_barlow_twins
from tests.losses.test_vicreg import reference_vicreg
from tests.methods.test_method_losses import TWO_VIEWS, assert_same_loss_and_gradient, build, step_inputs


def test_barlow_twins_weights_the_off_diagonal_term_scales_the_loss_and_logs_both_terms_unweighted() -> None:
    method = build(BarlowTwins, views=TWO_VIEWS, projector_output_dim=8, off_diagonal_weight=0.1, loss_scale=0.5)
    views, features, labels = step_inputs(method)
    loss, metrics = method.ssl_loss(features, views, labels)
    expected, on_diagonal, off_diagonal = reference_barlow_twins(*(method.projector(f) for f in features), 0.1)
    assert_same_loss_and_gradient(loss, 0.5 * expected, features)
    torch.testing.assert_close(
        metrics, {Metric.ON_DIAGONAL: on_diagonal.float(), Metric.OFF_DIAGONAL: off_diagonal.float()}
    )


def test_vicreg_weights_its_three_terms_and_logs_them_unweighted() -> None:
    weights = dict(invariance_weight=2.0, variance_weight=3.0, covariance_weight=4.0)
    method = build(VICReg, views=TWO_VIEWS, projector_output_dim=8, **weights)
    views, features, labels = step_inputs(method)
    loss, metrics = method.ssl_loss(features, views, labels)
    expected, invariance, variance, covariance = reference_vicreg(*(method.projector(f) for f in features), 2, 3, 4)
    assert_same_loss_and_gradient(loss, expected, features)
    expected_metrics = {Metric.INVARIANCE: invariance, Metric.VARIANCE: variance, Metric.COVARIANCE: covariance}
    torch.testing.assert_close(metrics, {name: value.float() for name, value in expected_metrics.items()})


@pytest.mark.parametrize(
    ("method_class", "options", "message"),
    [
        (BarlowTwins, dict(off_diagonal_weight=-0.1), "off_diagonal_weight must be at least 0, got -0.1"),
        (BarlowTwins, dict(projector_num_layers=0), "projector_num_layers must be at least 1, got 0"),
        (BarlowTwins, dict(loss_scale=0), "loss_scale must be greater than 0, got 0"),
        (VICReg, dict(variance_weight=float("nan")), "variance_weight must be at least 0, got nan"),
        (VICReg, dict(projector_output_dim=0, covariance_weight=-1), "covariance_weight must be at least 0, got -1"),
    ],
)
def test_invalid_options_are_named_in_one_line(method_class: type, options: dict, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as error:
        method_class(**options)
    assert "\n" not in str(error.value)
