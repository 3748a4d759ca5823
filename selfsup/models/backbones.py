"""Backbones by name: torchvision's ResNets, or any timm model, as feature extractors.

A backbone maps images (B, 3, H, W) to features (B, feature_dim), with no classifier. The small-image stem
(a 3x3 stride-1 convolution and no max-pool, as in the SimCLR paper's CIFAR-10 setting, Appendix B.9) keeps
spatial resolution for 28-64 px inputs, where the ImageNet stem would shrink a 32 px image to 8 px at once;
by default ResNets get it at those sizes, and keep the ImageNet stem from STL-10's 96 px up.
"""

import difflib

import timm
import torchvision
from torch import nn

from selfsup.errors import ConfigurationError

TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


SMALL_IMAGE_MAX_SIZE = 64  # the largest image size at which a ResNet gets the small stem by default


def build_backbone(name: str, small_image_stem: bool | None = False, image_size: int = 224) -> tuple[nn.Module, int]:
    """Return a randomly initialised backbone and its feature dimension.

    Torchvision's ResNet names (`resnet18`, `resnet50`, ...) build torchvision's models, the reference
    architecture of most self-supervised papers; every other name goes to `timm.create_model`.
    `small_image_stem=None` chooses it: a ResNet-style stem is replaced at `image_size` <= 64, anything else
    is left as it is.
    """
    if name in TORCHVISION_RESNETS:
        model = torchvision.models.get_model(name, weights=None)
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
    elif timm.is_model(name):
        model = timm.create_model(name, pretrained=False, num_classes=0)
        feature_dim = model.num_features
    else:
        known = sorted(set(TORCHVISION_RESNETS) | set(timm.list_models()))
        close = difflib.get_close_matches(name, known, n=5)
        hint = f" Did you mean one of {close}?" if close else ""
        raise ConfigurationError(
            f"Unknown backbone {name!r}: it is neither a torchvision ResNet ({', '.join(TORCHVISION_RESNETS)}) "
            f"nor a timm model name.{hint} Set --model.init_args.backbone to one of those names "
            "(`python -c 'import timm; print(timm.list_models())'` lists timm's)."
        )
    if small_image_stem is None:
        small_image_stem = image_size <= SMALL_IMAGE_MAX_SIZE and _has_resnet_stem(model)
    if small_image_stem:
        _use_small_image_stem(model, name)
    return model, feature_dim


def _has_resnet_stem(model: nn.Module) -> bool:
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")


def _use_small_image_stem(model: nn.Module, name: str) -> None:
    """Replace a ResNet's 7x7 stride-2 stem convolution by a 3x3 stride-1 one and drop the max-pool."""
    if not _has_resnet_stem(model):
        raise ConfigurationError(
            f"small_image_stem needs a ResNet-style backbone with a single `conv1` convolution and a `maxpool`; "
            f"{name!r} has none. Set --model.init_args.small_image_stem false, or choose a ResNet backbone."
        )
    stem = model.conv1
    model.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
