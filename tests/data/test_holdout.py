"""--data.holdout: a fixed part of the training set replaces the test set in evaluation, and never trains."""

import json
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.data import SelfSupDataModule
from selfsup.data.source import holdout_rows
from selfsup.errors import ConfigurationError
from tests.data.test_datasets import fake_fashion_mnist
from tests.test_eval_and_report import TINY_MODEL
from tests.test_train_cli import REPO


def test_holdout_rows_are_a_fixed_draw_of_labelled_rows_disjoint_from_training() -> None:
    labels = torch.arange(100) % 10
    labels[::7] = -1  # unlabelled rows are never held out: they could not be scored
    kept, held = holdout_rows(labels, 20)
    assert len(held) == 20 and (labels[held] >= 0).all()
    assert sorted(kept.tolist() + held.tolist()) == list(range(100))
    assert kept.tolist() == sorted(kept.tolist()) and held.tolist() == sorted(held.tolist())
    assert torch.equal(holdout_rows(labels, 20)[1], held)  # the same draw whatever the run's seed
    torch.manual_seed(123)
    assert torch.equal(holdout_rows(labels, 20)[1], held)
    with pytest.raises(ConfigurationError, match="--data.holdout 86 would hold out every one of the 85 labelled"):
        holdout_rows(labels, 86)


def image_keys(loader) -> set[bytes]:
    """Every image a loader yields, as bytes (padding rows of evaluation loaders, label -1, left out)."""
    return {image.numpy().tobytes() for images, labels in loader for image in images[labels >= 0]}


@pytest.mark.parametrize("kind", ["fashion_mnist-host", "fashion_mnist-gpu_shard", "image_folder", "packed"])
def test_held_out_images_are_evaluated_instead_of_the_test_set_and_never_trained_on(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind.startswith("fashion_mnist"):
        fake_fashion_mnist(tmp_path / "fmnist", train=60, test=20)
        options = dict(dataset="fashion_mnist", root=str(tmp_path / "fmnist"), placement=kind.split("-")[1])
    else:
        root = request.getfixturevalue("image_folder" if kind == "image_folder" else "packed_folder")
        options = dict(dataset=kind, root=str(root), num_workers=0, image_size=32)
    reference = SelfSupDataModule(**options, batch_size=4)
    reference.setup("fit")
    all_train, test = (image_keys(loader) for loader in reference.evaluation_loaders())
    module = SelfSupDataModule(**options, batch_size=4, holdout=12)
    module.setup("fit")
    assert module.source.num_train() == len(all_train) - 12
    trained = image_keys(module.train_dataloader())
    bank, scored = (image_keys(loader) for loader in module.evaluation_loaders())
    assert len(bank) == len(all_train) - 12 and len(scored) == 12
    assert scored.isdisjoint(trained | bank) and scored | bank == all_train
    assert scored.isdisjoint(test)  # the test set is not used at all


def test_eval_of_a_holdout_run_scores_the_held_out_images_not_the_test_set(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "fmnist", train=64, test=40)
    main([
        "fit", "--config", str(REPO / "configs" / "simclr.yaml"), "--wandb", "false", "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
        "--data.root", str(tmp_path / "fmnist"), "--data.batch_size", "16", "--data.holdout", "24", *TINY_MODEL,
    ])  # fmt: skip
    checkpoint = tmp_path / "runs" / "simclr" / "version_0" / "checkpoints" / "last.ckpt"
    main(["eval", "--ckpt_path", str(checkpoint), "--wandb", "false", "--linear_probe", "false",
          "--diagnostics", "false", "--map_points", "0"])  # fmt: skip
    results = json.loads((checkpoint.parent / "results.json").read_text())
    assert (results["scored_on"], results["num_train"], results["num_test"]) == ("holdout", 40, 24)
