"""Backbones by name: torchvision's ResNets, or any timm model, as feature extractors.

A backbone maps images (B, 3, H, W) to features (B, num_features), with no classifier, and carries timm's
`num_features` attribute whatever library built it. Its state dict keeps that library's key names, so the
exported weights load into a stock timm or torchvision model (`selfsup.export`).

The small-image stem (a 3x3 stride-1 convolution and no max-pool, as in the SimCLR paper's CIFAR-10 setting,
Appendix B.9) keeps spatial resolution for 28-64 px inputs, where the ImageNet stem would shrink a 32 px image
to 8 px at once. It exists for ResNet-style stems only; `"auto"` gives it to those at 64 px and below and
leaves every other architecture as it is.
"""

import difflib
from collections.abc import Iterable
from typing import Any, Literal

import torch
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


def build_backbone(
    name: str,
    small_image_stem: bool | Literal["auto"] | None = "auto",
    image_size: int = 224,
    **backbone_kwargs: Any,
) -> nn.Module:
    """A randomly initialised backbone without classifier; its feature dimension is `model.num_features`.

    Torchvision's ResNet names (`resnet18`, `resnet50`, ...) build torchvision's models, the reference
    architecture of most self-supervised papers; every other name goes to `timm.create_model`.
    `backbone_kwargs` go to the model's constructor (for a ViT on 32 px images: `img_size=32, patch_size=4`).
    The backbone is checked to take `image_size` px images, so a mismatch is a configuration error, not a
    failure at the first training step.
    """
    try:
        if library_of(name) == "torchvision":
            model = torchvision.models.get_model(name, weights=None, **backbone_kwargs)
            model.num_features = model.fc.in_features
            model.fc = nn.Identity()
        else:
            model = _timm_backbone(name, backbone_kwargs)
    except TypeError as error:  # an argument the constructor does not take
        raise ConfigurationError(
            f"--model.init_args.backbone_kwargs {backbone_kwargs} do not fit {name!r}: {error}"
        ) from None
    if small_image_stem in ("auto", None):  # None: what checkpoints of earlier versions hold for auto
        small_image_stem = image_size <= SMALL_IMAGE_MAX_SIZE and _has_resnet_stem(model)
    if small_image_stem:
        _use_small_image_stem(model, name)
    _check_image_size(model, name, image_size)
    return model


def freeze_patch_embedding(model: nn.Module, name: str) -> None:
    """Keep a ViT's patch embedding at its random initialisation: the random fixed patch projection of MoCo v3
    ("An Empirical Study of Training Self-Supervised Vision Transformers", Chen, Xie and He, ICCV 2021, Sec. 4.2),
    which removes the training instability that starts in the first layer. Its parameters get no gradient, so the
    optimizer leaves them out."""
    patch_embedding = getattr(model, "patch_embed", None)
    if not isinstance(patch_embedding, nn.Module):
        raise ConfigurationError(
            f"random_patch_projection freezes a ViT's patch embedding (patch_embed), and {name!r} has none. Set "
            "--model.init_args.random_patch_projection false, or choose a timm ViT backbone."
        )
    patch_embedding.requires_grad_(False)


def has_small_image_stem(model: nn.Module) -> bool:
    """Whether `model` has the small-image stem (and so cannot load into a stock ResNet)."""
    return _has_resnet_stem(model) and isinstance(model.maxpool, nn.Identity) and model.conv1.kernel_size == (3, 3)


def library_of(name: str) -> Literal["torchvision", "timm"]:
    """The library whose model class and state-dict keys a backbone of this name has."""
    return "torchvision" if name in TORCHVISION_RESNETS else "timm"


def _timm_backbone(name: str, backbone_kwargs: dict[str, Any]) -> nn.Module:
    import timm  # imported here: over a second of start-up, and wandb with it, that a torchvision ResNet never needs

    if not timm.is_model(name):
        raise _unknown_backbone(name, timm.list_models())
    return timm.create_model(name, pretrained=False, num_classes=0, **backbone_kwargs)


def _unknown_backbone(name: str, timm_names: list[str]) -> ConfigurationError:
    known = sorted(set(TORCHVISION_RESNETS) | set(timm_names))
    close = difflib.get_close_matches(name, known, n=5)
    hint = f" Did you mean one of {close}?" if close else ""
    return ConfigurationError(
        f"Unknown backbone {name!r}: it is neither a torchvision ResNet ({', '.join(TORCHVISION_RESNETS)}) "
        f"nor a timm model name.{hint} Set --model.init_args.backbone to one of those names "
        "(`python -c 'import timm; print(timm.list_models())'` lists timm's)."
    )


def _has_resnet_stem(model: nn.Module) -> bool:
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")


def _use_small_image_stem(model: nn.Module, name: str) -> None:
    """Replace a ResNet's 7x7 stride-2 stem convolution by a 3x3 stride-1 one and drop the max-pool."""
    if not _has_resnet_stem(model):
        raise ConfigurationError(
            f"small_image_stem needs a ResNet-style backbone with a single `conv1` convolution and a `maxpool`; "
            f"{name!r} has none. Set --model.init_args.small_image_stem auto (or false), or choose a ResNet backbone."
        )
    stem = model.conv1
    model.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def _check_image_size(model: nn.Module, name: str, image_size: int) -> None:
    problem = _refusal(model, image_size)
    if problem is not None:
        raise ConfigurationError(
            f"Backbone {name!r} cannot take {image_size} px images ({problem}). Pass its size arguments, e.g. "
            f"--model.init_args.backbone_kwargs '{{img_size: {image_size}, patch_size: 4}}' for a ViT, or choose "
            "another backbone or --data.image_size."
        )


def check_view_sizes(model: nn.Module, name: str, sizes: Iterable[int]) -> None:
    """The backbone built for the data's image size takes views of each of `sizes` too (multi-crop's local
    views), which a timm ViT does only when built with `dynamic_img_size`: refused here, not at the first step."""
    for size in sorted(set(sizes)):
        problem = _refusal(model, size)
        if problem is not None:
            raise ConfigurationError(
                f"Backbone {name!r} cannot take the method's {size} px views ({problem}). For a ViT, add "
                "dynamic_img_size: true to --model.init_args.backbone_kwargs; or choose views of one size."
            )


def _refusal(model: nn.Module, image_size: int) -> str | None:
    """Why the model refuses `image_size` px images, or None. One forward pass of two blank images with the weights
    swapped for meta tensors (shapes only, no computation, no memory): a ViT built for 224 px refuses 32 px images
    there, with timm's own message."""
    meta = {key: torch.empty_like(value, device="meta") for key, value in model.state_dict(keep_vars=True).items()}
    training = model.training
    try:
        torch.func.functional_call(model.eval(), meta, torch.zeros(2, 3, image_size, image_size, device="meta"))
    except (AssertionError, RuntimeError, ValueError) as error:
        return str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    finally:
        model.train(training)
    return None
