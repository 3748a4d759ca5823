"""PIL images and numpy arrays become the uint8 (C, H, W) tensors and batches the methods take
(`selfsup.data.convert`), and a torchvision-style dataset of PIL images trains in three lines."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from selfsup.data import collate_images, to_uint8_tensor
from selfsup.errors import ConfigurationError
from selfsup.methods import SimCLR

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
COLOUR = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.fromarray(GREY, "L"), GREY[None]),
        (Image.fromarray(COLOUR, "RGB"), COLOUR.transpose(2, 0, 1)),
        (GREY, GREY[None]),
        (GREY[..., None], GREY[None]),
        (COLOUR, COLOUR.transpose(2, 0, 1)),
        (np.dstack([COLOUR, np.full((6, 5), 255, np.uint8)]), COLOUR.transpose(2, 0, 1)),  # opaque RGBA
    ],
    ids=["pil-L", "pil-RGB", "numpy-HW", "numpy-HW1", "numpy-HWC", "numpy-RGBA"],
)
def test_images_become_uint8_channels_first_with_their_pixels(image: object, expected: np.ndarray) -> None:
    tensor = to_uint8_tensor(image)
    assert tensor.dtype == torch.uint8 and tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.numpy(), expected)


def test_other_pil_modes_become_the_rgb_a_viewer_shows() -> None:
    """A palette image through its palette; 16-bit grey scaled from its range, not clipped."""
    palette = Image.fromarray(GREY % 4, "L").convert("P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    expected = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)[GREY % 4].transpose(2, 0, 1)
    np.testing.assert_array_equal(to_uint8_tensor(palette).numpy(), expected)
    sixteen_bit = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert to_uint8_tensor(sixteen_bit).eq(255).all() and to_uint8_tensor(sixteen_bit).shape == (3, 2, 2)


def test_what_cannot_be_an_image_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"got float64 of shape \(6, 5\). Scale float images in \[0, 1\] with"):
        to_uint8_tensor(GREY / 255)
    with pytest.raises(ConfigurationError, match=r"shape \(3, 6, 5\).*move a leading channel axis last"):
        to_uint8_tensor(COLOUR.transpose(2, 0, 1).copy())


def test_collate_stacks_images_and_labels_and_colours_a_mixed_batch() -> None:
    images, labels = collate_images([(Image.fromarray(GREY, "L"), 3), (COLOUR, 1), (GREY, None)])
    assert images.shape == (3, 3, 6, 5) and images.dtype == torch.uint8
    np.testing.assert_array_equal(images[0].numpy(), np.stack([GREY] * 3))
    assert labels.tolist() == [3, 1, -1]
    images, labels = collate_images([GREY, GREY])  # images alone
    assert images.shape == (2, 1, 6, 5) and labels.tolist() == [-1, -1]
    with pytest.raises(ConfigurationError, match=r"different sizes \[\(5, 6\), \(6, 5\)\].*Resize\(\(size, size\)\)"):
        collate_images([GREY, GREY.T])


class PilDataset(Dataset):
    """What torchvision's FashionMNIST deals: (PIL image of mode L, int label), with `classes`."""

    classes = ["even", "odd"]

    def __init__(self, transform=None) -> None:
        self.transform = transform
        self.pixels = RNG.integers(0, 256, (8, 12, 12), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> tuple:
        image = Image.fromarray(self.pixels[index], "L")
        return (self.transform(image) if self.transform else image), index % 2


@pytest.mark.parametrize("way", ["transform", "collate_fn"])
def test_a_torchvision_style_dataset_trains_in_three_lines(way: str) -> None:
    data = PilDataset(transform=to_uint8_tensor if way == "transform" else None)
    loader = DataLoader(data, batch_size=4, collate_fn=collate_images if way == "collate_fn" else None)
    method = SimCLR(backbone="test_resnet", views=[{"num_views": 2}], projector_hidden_dim=8)
    pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(method, loader)  # fmt: skip
    assert (method.hparams.image_size, method.hparams.num_classes, method.hparams.batch_size) == (16, 2, 4)
