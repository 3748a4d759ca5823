"""The offline linear probe: near-perfect on linearly separable features, chance on noise, the grid chosen on
held-out data, and the augmented protocol's features used for training."""

import pytest
import torch

from selfsup.errors import ConfigurationError
from selfsup.evaluation.linear_probe import LinearProbeConfig, train_linear_probe


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes, each a Gaussian blob around its own corner in 16 dimensions: linearly separable."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centres = 4 * torch.eye(16)[:4]
    return centres[labels] + 0.5 * torch.randn(n, 16, generator=generator), labels


@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_separable_features_are_classified_almost_perfectly(optimizer: str) -> None:
    (train, train_labels), (test, test_labels) = separable(800, 0), separable(400, 1)
    config = LinearProbeConfig(optimizer=optimizer, epochs=20, batch_size=128)
    result = train_linear_probe(train, train_labels, test, test_labels, 4, config)
    assert result.top1 > 0.98 and result.top5 == 1.0  # top-5 of 4 classes: capped at 4, always right
    assert len(result.grid) == len(config.weight_decays) * (len(config.learning_rates) if optimizer == "sgd" else 1)


def test_noise_stays_near_chance_and_unlabelled_samples_are_ignored() -> None:
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(600, 32, generator=generator), torch.randn(400, 32, generator=generator)
    train_labels, test_labels = torch.randint(0, 4, (600,), generator=generator), torch.randint(0, 4, (400,))
    train_labels[:100] = -1
    result = train_linear_probe(train, train_labels, test, test_labels, 4, LinearProbeConfig(epochs=5))
    assert result.top1 < 0.4


def test_augmented_features_are_what_the_probe_trains_on() -> None:
    (train, labels), (test, test_labels) = separable(400, 0), separable(200, 1)
    epochs_seen = []

    def noise_features(epoch: int) -> torch.Tensor:  # "augmentations" that destroy the signal
        epochs_seen.append(epoch)
        return torch.randn_like(train)

    config = LinearProbeConfig(epochs=3, augment=True, learning_rates=(0.1,), weight_decays=(0.0,))
    result = train_linear_probe(train, labels, test, test_labels, 4, config, noise_features)
    assert epochs_seen == [0, 1, 2] * 2  # grid search, then the final fit
    assert result.top1 < 0.6


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="validation_fraction"):
        LinearProbeConfig(validation_fraction=1.0)
    with pytest.raises(ConfigurationError, match="learning rate"):
        LinearProbeConfig(learning_rates=())


def test_grid_point_is_chosen_on_held_out_training_data_never_on_the_test_set() -> None:
    """Training labels lean to class 3, and test labels are all 3. The strongly decayed head ignores the features
    and always answers 3: poor on held-out data (40%) but perfect on this test set. Held-out data must choose the
    undecayed head, which scores only the test images truly of class 3."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 3] * 160)  # class 3: 40% of the training set
    centres = 4 * torch.eye(16)[:4]
    train = centres[labels] + 0.5 * torch.randn(800, 16, generator=generator)
    test, true_test_labels = separable(400, 1)
    config = LinearProbeConfig(learning_rates=(0.1,), weight_decays=(0.0, 10.0), epochs=10, batch_size=128)
    result = train_linear_probe(train, labels, test, torch.full_like(true_test_labels, 3), 4, config)
    held_out = {row["weight_decay"]: row["validation_top1"] for row in result.grid}
    assert held_out[0.0] > 0.95 and held_out[10.0] < 0.5
    assert result.weight_decay == 0.0 and result.top1 == pytest.approx(0.25, abs=0.05)


def test_features_are_standardized_whatever_their_offsets_and_scales() -> None:
    """Separable features, shifted by 1000 and scaled per dimension from 1e-3 to 1e3 (the informative dimensions
    the smallest): unstandardized SGD fails on them; the probe must still separate them."""
    (train, train_labels), (test, test_labels) = separable(800, 0), separable(400, 1)
    scales = torch.logspace(-3, 3, 16)  # dimensions 0-3 carry the classes and get the smallest scales
    config = LinearProbeConfig(epochs=10, batch_size=128)
    result = train_linear_probe(train * scales + 1000, train_labels, test * scales + 1000, test_labels, 4, config)
    assert result.top1 > 0.95


def test_test_features_are_standardized_with_the_training_statistics() -> None:
    """A test set of one class (a label shift): its own mean and std would move its features to the middle of the
    training distribution, where the classes meet. The probe, standardisation included, is fitted on training data
    alone, so a test image is classified the same whatever else the test set holds."""
    (train, train_labels), (test, test_labels) = separable(400, 0), separable(200, 1)
    one_class = test_labels == 0
    config = LinearProbeConfig(learning_rates=(0.1,), weight_decays=(0.0,), epochs=5, batch_size=128)
    result = train_linear_probe(train, train_labels, test[one_class], test_labels[one_class], 4, config)
    assert result.top1 > 0.95
