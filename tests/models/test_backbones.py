import pytest
import torch

from selfsup.errors import ConfigurationError
from selfsup.models import build_backbone, projection_mlp


def test_torchvision_resnet_with_small_image_stem_keeps_resolution() -> None:
    model, dim = build_backbone("resnet18", small_image_stem=True)
    assert dim == 512 and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_timm_model_by_name() -> None:
    model, dim = build_backbone("test_resnet")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(ConfigurationError, match="Unknown backbone 'resnet81'.*resnet18"):
        build_backbone("resnet81")


def test_small_image_stem_on_a_non_resnet_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="small_image_stem false"):
        build_backbone("test_vit", small_image_stem=True)


def test_projection_mlp_layers() -> None:
    head = projection_mlp(8, 16, 4, num_layers=3, batch_norm_last=True)
    assert head(torch.randn(5, 8)).shape == (5, 4)
    assert sum(isinstance(m, torch.nn.Linear) for m in head) == 3
