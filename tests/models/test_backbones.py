import pytest
import torch

from selfsup.errors import ConfigurationError
from selfsup.methods import SwAV
from selfsup.models import build_backbone, projection_mlp
from selfsup.models.backbones import has_small_image_stem


def test_torchvision_resnet_with_small_image_stem_keeps_resolution() -> None:
    model = build_backbone("resnet18", small_image_stem=True)
    assert model.num_features == 512 and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity) and has_small_image_stem(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_timm_model_by_name() -> None:
    model = build_backbone("test_resnet", image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)


@pytest.mark.parametrize(
    "name, image_size, small",
    [("resnet18", 32, True), ("resnet18", 96, False), ("resnet26", 64, True), ("convnext_atto", 32, False),
     ("efficientnet_b0", 32, False), ("test_vit", 32, False)],
)  # fmt: skip
def test_auto_stem_goes_to_resnets_at_small_sizes_and_leaves_other_architectures_alone(
    name: str, image_size: int, small: bool
) -> None:
    model = build_backbone(name, "auto", image_size)
    assert has_small_image_stem(model) == small
    assert model(torch.zeros(2, 3, image_size, image_size)).shape == (2, model.num_features)
    assert has_small_image_stem(build_backbone(name, None, image_size)) == small  # None: earlier checkpoints' auto


def test_backbone_arguments_pass_through_so_a_vit_takes_32_px_images() -> None:
    with pytest.raises(ConfigurationError, match=r"cannot take 32 px images.*backbone_kwargs '\{img_size: 32"):
        build_backbone("vit_tiny_patch16_224", image_size=32)
    model = build_backbone("vit_tiny_patch16_224", image_size=32, img_size=32, patch_size=4, drop_path_rate=0.1)
    assert model.patch_embed.num_patches == 64 and model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 192)


def test_a_vit_refuses_multi_crops_smaller_views_until_built_with_dynamic_img_size() -> None:
    """SwAV's 16 px local crops of 32 px images met a ViT built for 32 px at the first training step, as timm's
    assertion; the method now refuses them when it is built, naming the option that fixes it."""
    vit = dict(backbone="vit_tiny_patch16_224", image_size=32, views=[{"num_views": 2}, {"relative_size": 0.5}])
    with pytest.raises(ConfigurationError, match=r"cannot take the method's 16 px views .* dynamic_img_size: true"):
        SwAV(**vit, backbone_kwargs={"img_size": 32, "patch_size": 4})
    dynamic = SwAV(**vit, backbone_kwargs={"img_size": 32, "patch_size": 4, "dynamic_img_size": True})
    assert dynamic.backbone(torch.randn(2, 3, 16, 16)).shape == (2, 192)


def test_an_argument_the_backbone_does_not_take_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="backbone_kwargs .*do not fit 'resnet18'.*img_size"):
        build_backbone("resnet18", img_size=32)


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(ConfigurationError, match="Unknown backbone 'resnet81'.*resnet18"):
        build_backbone("resnet81")


def test_small_image_stem_on_a_non_resnet_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="small_image_stem auto"):
        build_backbone("test_vit", small_image_stem=True)


def test_projection_mlp_layers() -> None:
    head = projection_mlp(8, 16, 4, num_layers=3, batch_norm_last=True)
    assert head(torch.randn(5, 8)).shape == (5, 4)
    assert sum(isinstance(m, torch.nn.Linear) for m in head) == 3
