"""The batch contract (`selfsup.data.batches`), clause by clause, through a plain `pl.Trainer`: each accepted form
trains, each broken clause stops at the first batch with a message that says what was expected."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from selfsup.data.batches import check_batch
from selfsup.errors import ConfigurationError
from selfsup.methods import SimCLR

IMAGES = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(8) % 2


def fit(train: Dataset, val: list[Dataset] | None = None, **method_options) -> SimCLR:
    """One training step of a tiny SimCLR on `train` (and validation on `val`) in batches of 4."""
    method = SimCLR(backbone="test_resnet", views=[{"num_views": 2}], projector_hidden_dim=8, **method_options)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=1)  # fmt: skip
    loaders = [DataLoader(dataset, batch_size=4) for dataset in val] if val is not None else None
    trainer.fit(method, DataLoader(train, batch_size=4), loaders)
    return method


class Mapped(Dataset):
    """Samples as mappings, as Hugging Face datasets deal them."""

    def __init__(self, keys: tuple[str, str]) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(IMAGES)

    def __getitem__(self, index: int) -> dict:
        return {self.keys[0]: IMAGES[index], self.keys[1]: LABELS[index]}


def test_float_images_must_lie_in_0_1() -> None:
    fit(TensorDataset(IMAGES.float() / 255, LABELS))  # accepted
    with pytest.raises(ConfigurationError, match=r"are torch.float32 with values in \[0, 2\d\d\]; expected uint8 images"
                       r" in \[0, 255\] or float images in \[0, 1\]. Divide them by 255"):  # fmt: skip
        fit(TensorDataset(IMAGES.float(), LABELS))


def test_images_must_be_channels_first_with_one_or_three_channels() -> None:
    with pytest.raises(ConfigurationError, match=r"have shape \(4, 16, 16, 3\), channels last; expected channels "
                       r"first, \(batch, 1 or 3, height, width\). Permute them"):  # fmt: skip
        fit(TensorDataset(IMAGES.expand(-1, 3, -1, -1).permute(0, 2, 3, 1), LABELS))
    with pytest.raises(ConfigurationError, match=r"shape \(4, 4, 16, 16\), 4 channels; expected channels first"):
        fit(TensorDataset(IMAGES.expand(-1, 4, -1, -1), LABELS))


def test_labels_must_lie_below_num_classes_or_be_unknown() -> None:
    fit(TensorDataset(IMAGES, torch.tensor([0, 1, -1, 1, 0, -1, 1, 0])), num_classes=2)  # -1: unknown, accepted
    out_of_range = list(zip(IMAGES, torch.tensor([81, 1, 2, 3, 4, 5, 6, 7]), strict=True))  # no `targets` to read
    with pytest.raises(ConfigurationError, match=r"labels of the training loader include 81, but labels must lie in "
                       r"\[0, num_classes\) = \[0, 10\) or be -1 \(unknown\). Set num_classes"):  # fmt: skip
        fit(out_of_range, num_classes=10)


def test_a_batch_is_images_alone_or_images_and_labels() -> None:
    method = fit(TensorDataset(IMAGES), num_classes=2)  # images alone: every label unknown
    assert method.hparams.num_classes == 2
    with pytest.raises(ConfigurationError, match=r"A batch of the training loader is a list of 3 items; expected "
                       r"images alone, \(images, labels\), or a mapping"):  # fmt: skip
        fit(TensorDataset(IMAGES, LABELS, LABELS))


def test_mapping_batches_need_an_image_key() -> None:
    fit(Mapped(("image", "label")), num_classes=2)
    with pytest.raises(ConfigurationError, match=r"is a mapping with keys \['pixels', 'y'\]; expected images alone, "
                       r"\(images, labels\), or a mapping with an 'image' or 'images' key"):  # fmt: skip
        fit(Mapped(("pixels", "y")), num_classes=2)


def test_validation_needs_the_bank_and_the_test_loader() -> None:
    pair = [TensorDataset(IMAGES, LABELS)] * 2
    assert fit(pair[0], pair, num_classes=2).hparams.num_classes == 2  # (bank, test): validates
    with pytest.raises(ConfigurationError, match=r"Validation needs two loaders, \[labelled training images \(the kNN "
                       r"bank\), test images\], in this order; got 1"):  # fmt: skip
        fit(pair[0], pair[:1], num_classes=2)


def test_labels_are_one_integer_per_image() -> None:
    with pytest.raises(ConfigurationError, match="labels of the training loader are torch.float32; expected a tensor"):
        check_batch(IMAGES, LABELS.float(), 2, "the training loader")
    with pytest.raises(ConfigurationError, match=r"have shape \(8, 2\); expected one class index per image"):
        check_batch(IMAGES, torch.nn.functional.one_hot(LABELS), 2, "the training loader")
