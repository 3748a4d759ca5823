"""`train.py export` and the backbone every fit leaves beside last.ckpt: weights in timm's or torchvision's own key
format that stock models load (strict, except the classifier) and that compute the trained backbone's features."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file

from selfsup.augment import CleanView
from selfsup.cli import main
from selfsup.evaluation.checkpoint import load_pretrained
from selfsup.export import BackboneCard, load_backbone, write_backbone
from selfsup.models import build_backbone
from tests.test_train_cli import REPO, tiny_folder_args
from tests.test_user_errors import one_line_error

VIT_32 = "{img_size: 32, patch_size: 4}"


def fit(method: str, root: Path, folder: Path, *args: str):
    return main([
        "fit", "--config", str(REPO / "configs" / f"{method}.yaml"), "--wandb", "false",
        "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
        *tiny_folder_args(folder), "--data.image_size", "32", *args,
    ])  # fmt: skip


def pasted_load_line(folder: Path, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """The model that the card's `load` line builds when run beside the weights in a fresh namespace (nothing
    imported, NUM_CLASSES set), as a user pastes it: the line must carry its own imports."""
    card = json.loads((folder / "backbone.json").read_text())
    monkeypatch.chdir(folder)
    namespace = {"NUM_CLASSES": 10}
    exec(card["load"], namespace)  # the line this suite wrote, as the README tells users to run it
    return namespace["model"].eval()


def test_torchvision_resnet_loads_into_a_stock_torchvision_model_with_the_trained_features(
    tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = fit("simclr", tmp_path, image_folder, "--model.init_args.small_image_stem", "false")
    folder = tmp_path / "simclr" / "version_0" / "checkpoints"
    card = json.loads((folder / "backbone.json").read_text())
    assert card["library"] == "torchvision" and card["backbone"] == "resnet18" and card["loads_into_stock_model"]
    assert (card["image_size"], card["epochs"], card["run_name"], card["method"]) == (32, 1, "simclr-v0", "simclr")
    assert card["mean"] == list(cli.datamodule.mean) and card["std"] == list(cli.datamodule.std)

    model = torchvision.models.resnet18(num_classes=10)
    incompatible = model.load_state_dict(load_file(folder / "backbone.safetensors"), strict=False)
    assert sorted(incompatible.missing_keys) == ["fc.bias", "fc.weight"] and not incompatible.unexpected_keys
    model.fc = torch.nn.Identity()
    images = torch.rand(4, 3, 32, 32)
    trained = cli.model.backbone.eval()
    torch.testing.assert_close(model.eval()(images), trained(images))  # the trained one runs channels_last
    pasted = pasted_load_line(folder, monkeypatch)
    pasted.fc = torch.nn.Identity()
    torch.testing.assert_close(pasted(images), trained(images))
    umask = os.umask(0)
    os.umask(umask)
    assert (folder / "backbone.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # colleagues can read it

    main(["export", "--ckpt_path", str(folder / "last.ckpt"), "--out", str(tmp_path / "again.safetensors"),
          "--pth", "true"])  # fmt: skip
    from_checkpoint = load_file(tmp_path / "again.safetensors")
    assert from_checkpoint.keys() == load_file(folder / "backbone.safetensors").keys()
    state = torch.load(tmp_path / "again.pth", weights_only=True)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(from_checkpoint[key], value, rtol=0, atol=0)
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_timm_vit_at_32_px_loads_into_timm_and_byols_target_exports_too(
    tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--model.init_args.backbone", "vit_tiny_patch16_224", "--model.init_args.backbone_kwargs", VIT_32]
    cli = fit("byol", tmp_path, image_folder, *args)
    folder = tmp_path / "byol" / "version_0" / "checkpoints"
    weights = str(folder / "backbone.safetensors")
    card = json.loads((folder / "backbone.json").read_text())
    assert card["library"] == "timm" and card["backbone_kwargs"] == {"img_size": 32, "patch_size": 4}
    images = torch.rand(4, 3, 32, 32)
    trained = cli.model.backbone.eval()(images)

    features = timm.create_model("vit_tiny_patch16_224", num_classes=0, checkpoint_path=weights, img_size=32,
                                 patch_size=4)  # fmt: skip
    torch.testing.assert_close(features.eval()(images), trained)
    classifier = timm.create_model("vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=weights),
                                   num_classes=10, img_size=32, patch_size=4).eval()  # fmt: skip
    torch.testing.assert_close(classifier.forward_head(classifier.forward_features(images), pre_logits=True), trained)
    assert classifier(images).shape == (4, 10)
    pasted = pasted_load_line(folder, monkeypatch)
    torch.testing.assert_close(pasted.forward_head(pasted.forward_features(images), pre_logits=True), trained)

    _, written = main(["export", "--ckpt_path", str(folder / "last.ckpt"), "--encoder", "momentum"])
    assert written[0] == folder / "momentum_backbone.safetensors"
    target = load_backbone(written[0])
    torch.testing.assert_close(target(images), cli.model.target_backbone.eval()(images))
    assert json.loads(written[1].read_text())["encoder"] == "momentum"


def test_small_image_stem_resnet_says_it_is_not_stock_and_loads_through_selfsup(
    tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit("mocov2", tmp_path, image_folder, "--model.init_args.queue_size", "64")
    checkpoint = tmp_path / "mocov2" / "version_0" / "checkpoints" / "last.ckpt"
    main(["export", "--ckpt_path", str(checkpoint), "--out", str(tmp_path / "out" / "moco.safetensors")])
    printed = capsys.readouterr().out
    assert (
        "does not load into a stock torchvision resnet18" in printed and "load_backbone('moco.safetensors')" in printed
    )
    card = json.loads((tmp_path / "out" / "moco.json").read_text())
    assert card["small_image_stem"] and not card["loads_into_stock_model"]
    with pytest.raises(RuntimeError, match="size mismatch for conv1.weight"):
        torchvision.models.resnet18().load_state_dict(load_file(tmp_path / "out" / "moco.safetensors"), strict=False)
    images = torch.rand(4, 3, 32, 32)
    reference = load_pretrained(checkpoint).backbone
    torch.testing.assert_close(load_backbone(tmp_path / "out" / "moco.safetensors")(images), reference(images))
    torch.testing.assert_close(pasted_load_line(checkpoint.parent, monkeypatch)(images), reference(images))

    export = ["export", "--ckpt_path", str(checkpoint)]
    assert "must end in .safetensors" in one_line_error([*export, "--out", str(tmp_path / "moco.pt")], capsys)
    simclr = ["export", "--ckpt_path", str(_simclr_checkpoint_without_export(tmp_path, image_folder))]
    assert "no momentum encoder (it has: online)" in one_line_error([*simclr, "--encoder", "momentum"], capsys)


def _simclr_checkpoint_without_export(root: Path, folder: Path) -> Path:
    fit("simclr", root, folder, "--model.init_args.backbone", "test_resnet", "--export_backbone", "false")
    checkpoints = root / "simclr" / "version_0" / "checkpoints"
    assert [path.name for path in checkpoints.iterdir()] == ["last.ckpt"]  # --export_backbone false: no backbone
    return checkpoints / "last.ckpt"


@pytest.mark.parametrize("small_image_stem", [True, False], ids=["small_stem", "stock_resnet"])
def test_the_cards_preprocessing_feeds_gray_images_to_the_backbone_as_evaluation_does(
    small_image_stem: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fashion-MNIST as torchvision gives it (28 px gray PIL images) through the card's `preprocess` line into the
    model its `load` line builds, both pasted as the README tells users to. Normalising the gray image with the
    card's per-RGB-channel mean, as the card used to say, failed with a broadcast error; the backbone takes RGB."""
    mean, std = [0.286] * 3, [0.353] * 3  # Fashion-MNIST's, per RGB channel
    backbone = build_backbone("resnet18", small_image_stem, image_size=32).eval()
    hparams = {"backbone": "resnet18", "image_size": 32, "image_mean": mean, "image_std": std}
    card = BackboneCard.of(backbone, hparams, "backbone.safetensors", method="simclr", encoder="online",
                           run_name="simclr-v0", dataset="fashion_mnist", epochs=1, global_step=1)  # fmt: skip
    write_backbone(backbone, card, tmp_path / "backbone.safetensors")
    written = json.loads((tmp_path / "backbone.json").read_text())
    assert written["in_channels"] == 3 and BackboneCard.read(tmp_path / "backbone.json") == card

    monkeypatch.chdir(tmp_path)
    namespace = {"NUM_CLASSES": 10}
    exec(written["preprocess"], namespace)  # the lines this suite wrote, as a user pastes them
    exec(written["load"], namespace)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    batch = torch.stack([namespace["preprocess"](Image.fromarray(image, mode="L")) for image in pixels])
    evaluated = CleanView(32, mean, std)(torch.from_numpy(pixels)[:, None])  # what selfsup's evaluation feeds it
    torch.testing.assert_close(batch, evaluated, rtol=0, atol=1.5 / 255 / std[0])  # uint8 rounding after resizing
    model = namespace["model"].eval()
    with torch.no_grad():
        assert model(batch).shape == (4, 512 if small_image_stem else 10)
