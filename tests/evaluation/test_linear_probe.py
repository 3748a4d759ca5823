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
