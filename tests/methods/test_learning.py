"""SimCLR learns on real Fashion-MNIST: after 60 steps on the CPU, kNN top-1 of the learned features clearly beats
the same network at random initialisation (measured on 2026-12-02: 53.5/50.0/49.3% -> 68.8/67.4/65.7% for seeds 0-2,
a gain of 15-17 points against the 8 asked; the fit takes about 10 s on 2 cores)."""

import pytorch_lightning as pl

from selfsup.data import SelfSupDataModule
from selfsup.methods import SimCLR
from tests.conftest import needs_fashion_mnist

TRAINER_OPTIONS = dict(
    accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
)


def knn_top1(method: SimCLR, data: SelfSupDataModule) -> float:
    return pl.Trainer(**TRAINER_OPTIONS).validate(method, datamodule=data, verbose=False)[0]["val/knn_top1"]


@needs_fashion_mnist
def test_simclr_beats_random_init_on_fashion_mnist() -> None:
    pl.seed_everything(0)
    data = SelfSupDataModule("fashion_mnist", batch_size=128, max_samples=4096)
    method = SimCLR(
        backbone="test_resnet",  # timm's tiny ResNet: fast on CPU, and its random features are weak
        small_image_stem=False,
        views=[{"num_views": 2, "crop_scale": [0.2, 1.0]}],
        warmup_epochs=0.5,
        num_classes=data.num_classes,
        image_mean=data.mean,
        image_std=data.std,
        batch_size=128,
    )
    random_init = knn_top1(method, data)
    pl.Trainer(max_steps=60, limit_val_batches=0, num_sanity_val_steps=0, **TRAINER_OPTIONS).fit(
        method, datamodule=data
    )
    learned = knn_top1(method, data)
    assert learned > random_init + 0.08, f"kNN top-1 {learned:.3f} after training vs {random_init:.3f} at random init"
