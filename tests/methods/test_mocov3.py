"""MoCo v3's random fixed patch projection (Chen, Xie and He, Sec. 4.2): a ViT's patch embedding keeps its random
initialisation, in the online and the momentum backbone, gets no gradient and no place in the optimizer; a backbone
without a patch embedding is a one-line error."""

import pytest
import torch

from selfsup.errors import ConfigurationError
from selfsup.methods import MoCoV3
from selfsup.optim import weight_decay_groups
from tests.methods.test_method_losses import TWO_VIEWS

SMALL = dict(image_size=32, num_classes=3, views=TWO_VIEWS, projector_hidden_dim=16, predictor_hidden_dim=16)


def test_random_patch_projection_freezes_the_vits_patch_embedding() -> None:
    torch.manual_seed(0)
    method = MoCoV3(backbone="test_vit", random_patch_projection=True, **SMALL)
    patch_embedding = dict(method.backbone.patch_embed.named_parameters())
    assert patch_embedding and not any(p.requires_grad for p in method.momentum_backbone.patch_embed.parameters())
    images = torch.randint(0, 256, (4, 1, 36, 36), dtype=torch.uint8)
    views = method.multiview(images, torch.Generator().manual_seed(0))
    loss, probe_loss, _ = method.compute_losses(views, torch.arange(4) % 3)
    (loss + probe_loss).backward()
    assert all(p.grad is None and not p.requires_grad for p in patch_embedding.values())
    assert method.backbone.blocks[0].attn.qkv.weight.grad is not None
    optimized = {id(p) for group in weight_decay_groups(method) for p in group["params"]}
    assert not optimized & {id(p) for p in patch_embedding.values()}
    assert all(p.requires_grad for p in MoCoV3(backbone="test_vit", **SMALL).backbone.patch_embed.parameters())


def test_random_patch_projection_without_a_patch_embedding_is_a_one_line_error() -> None:
    with pytest.raises(ConfigurationError, match="random_patch_projection freezes a ViT's patch embedding") as error:
        MoCoV3(backbone="test_resnet", random_patch_projection=True, **SMALL)
    assert "\n" not in str(error.value) and "--model.init_args.random_patch_projection false" in str(error.value)
