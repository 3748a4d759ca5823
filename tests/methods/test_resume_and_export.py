"""Every registered method's code (see ACTIVE_PATHS), on a plain `pl.Trainer`: a run stopped at an epoch boundary and
resumed from its checkpoint ends bit for bit where the uninterrupted run ends (weights, momentum copies, queues,
support sets, centers, prototypes, optimizer and schedule), the checkpoint loads with weights_only=True into the
method rebuilt from its hyperparameters, and its backbones export, the momentum encoder too where the method has
one."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from selfsup.data.image_folder import EpochShuffle
from selfsup.export import export
from selfsup.methods import METHODS, Method
from tests.methods.test_methods import ACTIVE_PATHS, TINY, TRACED_BACKBONE

IMAGES = torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(16) % 3


class CheckpointFirstEpoch(pl.Callback):
    """Write a checkpoint at the end of the first epoch, what a run preempted there leaves."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


class CheckpointLastBatchOfFirstEpoch(CheckpointFirstEpoch):
    """Write a checkpoint after the first epoch's last batch, before the epoch ends: what a time-based checkpoint
    (`--checkpoint_every_minutes`) leaves when its time comes at that batch."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.current_epoch == 0 and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            trainer.save_checkpoint(self.path)


def fit(name: str, callbacks: list[pl.Callback] = (), ckpt_path: Path | None = None, **loader_options) -> Method:
    """Two epochs of 2 steps on 16 images (the views and the run seeded with 0), or what is left of them; the loader
    shuffles from the global random state unless `loader_options` say otherwise."""
    pl.seed_everything(0, verbose=False)
    method = METHODS[name](**{**TINY, "backbone": TRACED_BACKBONE, **ACTIVE_PATHS[name]}, warmup_epochs=0.5)
    loader = DataLoader(TensorDataset(IMAGES, LABELS), batch_size=8, **({"shuffle": True} | loader_options))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))  # fmt: skip
    trainer.fit(method, loader, ckpt_path=ckpt_path)
    return method


@pytest.mark.parametrize("name", sorted(ACTIVE_PATHS))  # every code path: see test_methods.py
def test_a_run_resumed_at_an_epoch_boundary_equals_the_uninterrupted_run_and_exports(name: str, tmp_path: Path) -> None:
    checkpoint = tmp_path / "epoch_0.ckpt"
    uninterrupted = fit(name, callbacks=[CheckpointFirstEpoch(checkpoint)]).state_dict()
    resumed = fit(name, ckpt_path=checkpoint)
    changed = [key for key, value in resumed.state_dict().items() if not torch.equal(value, uninterrupted[key])]
    assert changed == []

    saved = torch.load(checkpoint, weights_only=True)  # plain data only: the method rebuilds from its hparams
    rebuilt = METHODS[name](**saved["hyper_parameters"])
    rebuilt.load_state_dict(saved["state_dict"])
    assert all(torch.equal(value, saved["state_dict"][key]) for key, value in rebuilt.state_dict().items())

    for encoder, attribute in resumed.ENCODERS.items():
        written = tmp_path / f"{encoder}.safetensors"
        export(str(checkpoint), out=str(written), encoder=encoder)
        prefix = f"{attribute}."
        expected = {k.removeprefix(prefix): value for k, value in saved["state_dict"].items() if k.startswith(prefix)}
        exported = load_file(written)
        assert exported.keys() and all(torch.equal(exported[key], expected[key]) for key in exported), encoder


def test_a_run_resumed_from_the_last_batch_of_an_epoch_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """Lightning resumes such a checkpoint as the start of the next epoch, but made that epoch's iterator before the
    random state was restored: the shuffle, and the hard negative mixing after it, drew other numbers."""
    checkpoint = tmp_path / "last_batch.ckpt"
    uninterrupted = fit("simclr", callbacks=[CheckpointLastBatchOfFirstEpoch(checkpoint)]).state_dict()
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2
    resumed = fit("simclr", ckpt_path=checkpoint)
    assert [key for key, value in resumed.state_dict().items() if not torch.equal(value, uninterrupted[key])] == []


def test_a_loader_with_workers_resumes_at_an_epoch_boundary_in_that_epochs_order(tmp_path: Path) -> None:
    """The image-folder training loader's setting: a sampler shuffled per (seed, epoch), read by a persistent worker.
    Its iterator takes the sampler's indices as it is made, so the epoch it is made for must be set first."""

    def loader() -> dict:  # each run its own sampler, at epoch 0, as in a new process
        sampler = EpochShuffle(TensorDataset(IMAGES, LABELS), seed=0)
        return dict(shuffle=None, sampler=sampler, num_workers=1, persistent_workers=True)

    checkpoint = tmp_path / "epoch_0.ckpt"
    uninterrupted = fit("simclr", callbacks=[CheckpointFirstEpoch(checkpoint)], **loader()).state_dict()
    resumed = fit("simclr", ckpt_path=checkpoint, **loader())
    assert [key for key, value in resumed.state_dict().items() if not torch.equal(value, uninterrupted[key])] == []
