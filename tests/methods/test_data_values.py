"""A method trained by a plain `pl.Trainer` takes its batch size, image size, classes and normalisation from the data
(`selfsup.data.values`), as train.py links them from its data module; an explicit value that contradicts the data
stops the run before the first optimizer step, with an error naming the argument."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.cli import main
from selfsup.data import SelfSupDataModule
from selfsup.data.datasets import DATASETS
from selfsup.errors import ConfigurationError
from selfsup.methods import MoCoV2, SimCLR
from tests.conftest import FASHION_MNIST, needs_fashion_mnist

TINY = dict(backbone="test_resnet", views=[{"num_views": 2}])
DATA_VALUES = ("batch_size", "image_size", "num_classes", "image_mean", "image_std")


def plain_trainer(**options) -> pl.Trainer:
    return pl.Trainer(
        **{"max_steps": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
           "enable_model_summary": False, "accelerator": "cpu", **options}
    )  # fmt: skip


def peak_learning_rate(trainer: pl.Trainer) -> float:
    return trainer.lr_scheduler_configs[0].scheduler.base_lrs[0]


def uint8_loader(count: int = 24, side: int = 20, batch_size: int = 8, classes: int = 3) -> DataLoader:
    images = torch.randint(
        0, 256, (count, 1, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    return DataLoader(TensorDataset(images, torch.arange(count) % classes), batch_size=batch_size)


@needs_fashion_mnist
def test_plain_trainer_on_a_custom_loader_trains_what_train_py_trains(tmp_path: Path) -> None:
    """Fashion-MNIST as a TensorDataset of its uint8 training images, in batches of 32: the learning rate is SimCLR's
    0.4 x 32 / 256 (not 0.4, as for the batch of 256 it assumed), the views 32 px, ten classes, and the
    normalisation the built-in dataset's, exactly as `train.py fit` on the same data and batch size."""
    train, _ = DATASETS["fashion_mnist"].read(FASHION_MNIST)
    loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=32, shuffle=True)
    method = SimCLR(**TINY)
    trainer = plain_trainer()
    trainer.fit(method, loader)

    cli = main(["fit", "--config", "configs/simclr.yaml", "--data.max_samples", "64", "--data.batch_size", "32",
                "--model.init_args.backbone", "test_resnet", "--model.init_args.views", '[{"num_views": 2}]',
                "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--wandb", "false",
                "--export_backbone", "false", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert peak_learning_rate(trainer) == pytest.approx(0.4 * 32 / 256) == peak_learning_rate(cli.trainer)
    assert {name: method.hparams[name] for name in DATA_VALUES} == {
        name: cli.model.hparams[name] for name in DATA_VALUES
    }
    assert method.hparams.image_mean == [0.286] * 3 and method.hparams.image_std == [0.353] * 3
    torch.testing.assert_close(method.multiview.mean, cli.model.multiview.mean.cpu())
    torch.testing.assert_close(method.clean_view.std, cli.model.clean_view.std.cpu())


def test_values_from_the_data_are_recorded_and_rebuild_without_data(tmp_path: Path) -> None:
    """The checkpoint holds the values the run took from the data, so `load_from_checkpoint` rebuilds the same module
    with no data; a ResNet on 16 px images gets the small-image stem, and MoCo's key encoder is a frozen copy of that
    backbone, not of the provisional one built before the data was known."""
    method = MoCoV2(backbone="resnet18", views=[{"num_views": 2}], queue_size=16, projector_hidden_dim=16)
    trainer = plain_trainer(max_steps=0)  # setup, no step
    trainer.fit(method, uint8_loader(count=8, side=14, batch_size=4))
    assert method.backbone.conv1.kernel_size == (3, 3) and method.key_backbone.conv1.kernel_size == (3, 3)
    assert not any(parameter.requires_grad for parameter in method.key_backbone.parameters())
    path = tmp_path / "method.ckpt"
    trainer.save_checkpoint(path)

    restored = MoCoV2.load_from_checkpoint(path, weights_only=True)
    assert {name: restored.hparams[name] for name in DATA_VALUES} == {
        "batch_size": 4, "image_size": 16, "num_classes": 3, "image_mean": method.hparams.image_mean,
        "image_std": method.hparams.image_std,
    }  # fmt: skip
    for key, value in method.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value)


def test_a_batch_size_that_contradicts_the_loader_stops_before_the_first_step() -> None:
    method = SimCLR(**TINY, batch_size=256)
    trainer = plain_trainer()
    message = "batch_size=256 contradicts the training loader, which deals batches of 8 images; the learning rate"
    with pytest.raises(ConfigurationError, match=message):
        trainer.fit(method, uint8_loader())
    assert trainer.global_step == 0


def test_values_that_contradict_the_data_module_name_the_argument(image_folder: Path) -> None:
    data = SelfSupDataModule("image_folder", str(image_folder), batch_size=8, image_size=16, num_workers=0)
    with pytest.raises(ConfigurationError, match=r"image_size=32 contradicts the data module, which gives 16\. Leave"):
        plain_trainer().fit(SimCLR(**TINY, image_size=32), datamodule=data)


def test_a_class_count_below_the_datasets_labels_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="num_classes=2 contradicts the training loader, whose dataset has la"):
        plain_trainer().fit(SimCLR(**TINY, num_classes=2), uint8_loader(classes=3))


def test_data_without_classes_turns_the_monitors_off_with_a_warning() -> None:
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    method = SimCLR(**TINY)
    with pytest.warns(UserWarning, match="so the kNN monitor and the online probe are off. Pass num_classes"):
        plain_trainer().fit(method, DataLoader(TensorDataset(images), batch_size=4))
    assert method.hparams.num_classes == 0 and not method.labelled


def test_option_errors_name_the_argument_from_python() -> None:
    """From Python the message names the argument; the command line names the flag (tests/test_user_errors.py)."""
    with pytest.raises(ConfigurationError, match=r"^base_lr must be greater than 0, got 0\. Fix these arguments\.$"):
        SimCLR(**TINY, base_lr=0)
