"""Features of a frozen backbone over a whole loader, kept on the device for the evaluators."""

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    transform: Callable[[Tensor], Tensor],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """(features (N, D) float32, labels (N,)) of every batch, in loader order, on `device`.

    `transform` maps a batch of uint8 images on the device to network inputs (the clean evaluation view, or
    an augmentation). On a GPU the backbone runs under bfloat16 autocast, as in training.
    """
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    features, labels = [], []
    for images, batch_labels in loader:
        with autocast:
            inputs = transform(images.to(device, non_blocking=True))
            features.append(backbone(inputs.contiguous(memory_format=torch.channels_last)).float())
        labels.append(batch_labels.to(device))
    return torch.cat(features), torch.cat(labels)
