"""The shared `Method`: everything self-supervised methods have in common, so a method file holds only its heads and
its loss.

Per training step: uint8 images arrive on the device -> `on_after_batch_transfer` turns them into views
(`augment.MultiView`, seeded per rank and epoch) -> the backbone embeds every view (views of one size in one
forward pass, channels_last) -> the subclass's `ssl_loss` -> plus the online linear probe's loss on detached
features; `training_step` logs the losses and the metrics `ssl_loss` returns, outside that computation, so that
`torch.compile` of `compute_losses` meets no logging call (each one was a graph break). Validation embeds clean
images: the labelled training set as a kNN bank, then the test set, which both the kNN monitor (`val/knn_top1`)
and the online probe (`val/online_linear_top1`) score; both live in `selfsup.evaluation.online` and keep each
rank's features on that rank. Throughput and wall-clock time are logged by `selfsup.loggers.TrainingClock`.

What the data decides (batch size, image size, classes, normalisation) is taken from the data in `setup` unless
given (`selfsup.data.values`), and every loader's first batch is checked against the batch contract
(`selfsup.data.batches`), so a plain `pl.Trainer` on any DataLoader trains what `selfsup fit` would.
"""

import inspect
import itertools
import warnings
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from selfsup.augment import CleanView, MultiView, ViewRecipe, batch_view_bytes, simclr_views, view_seed
from selfsup.data.batches import check_batch, images_and_labels
from selfsup.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from selfsup.data.placement import check_fits_in_memory
from selfsup.data.values import FROM_DATA, data_values, resolve
from selfsup.distributed import gather
from selfsup.errors import ConfigurationError, at_least, below, check_options, positive, within
from selfsup.evaluation.online import KnnMonitor, OnlineProbe
from selfsup.models import build_backbone
from selfsup.models.backbones import check_view_sizes
from selfsup.models.momentum import cosine_momentum, ema_update, momentum_copy
from selfsup.optim import LARS, WarmupCosineSchedule, optimizer_steps_per_epoch, weight_decay_groups
from selfsup.resume import (
    align_resumed_epoch,
    global_random_state,
    restart_epoch_iterator,
    restore_global_random_state,
)
from selfsup.runs import Metric, RunRecord, method_name, plain, run_name_of_logger, run_seed

# The batch hooks are the method's on purpose: it owns its batch contract and its augmentation, whatever the data.
warnings.filterwarnings("ignore", message="You have overridden `on_(before|after)_batch_transfer` in `LightningModule`")

VIEW_GENERATOR_KEY = "selfsup_view_generators"  # checkpoint key: rank -> {epoch, generator state}
GLOBAL_RANDOM_KEY = "selfsup_global_random_state"  # checkpoint key: rank -> torch's global random state
# Until `setup` knows the data, a method built without an image size has a backbone for this size (the stock stem
# of torchvision and timm models) and views normalised with ImageNet's statistics; `setup` rebuilds them.
PROVISIONAL_IMAGE_SIZE = 224


class Method(pl.LightningModule):
    """Base class of every self-supervised method; subclasses implement `ssl_loss`."""

    # (fewest, most) views per image that `ssl_loss` works with; None: no upper bound
    VIEWS_PER_IMAGE: ClassVar[tuple[int, int | None]] = (1, None)
    # encoder -> the attribute holding that backbone (`selfsup export --encoder`); momentum methods add theirs
    ENCODERS: ClassVar[dict[str, str]] = {"online": "backbone"}

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        small_image_stem: bool | Literal["auto"] = "auto",
        views: tuple[ViewRecipe, ...] = simclr_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "lars",
        base_lr: float = 0.4,
        weight_decay: float = 1e-5,
        momentum: float = 0.9,
        warmup_epochs: float = 10.0,
        probe_lr: float = 0.1,
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        compile_backbone: bool = False,
        compile_augment: bool = False,
        image_size: int | None = None,
        num_classes: int | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        batch_size: int | None = None,
    ) -> None:
        """
        Args:
            backbone: a torchvision ResNet name (resnet18, resnet50, ...) or any timm model name.
            backbone_kwargs: arguments of the backbone's constructor, e.g. {img_size: 32, patch_size: 4,
                drop_path_rate: 0.1} for a timm ViT on 32 px images.
            small_image_stem: 3x3 stride-1 first convolution and no max-pool, for 28-64 px images (ResNet-style
                stems only). auto: on for a ResNet at image_size <= 64, off otherwise and for other architectures.
            views: the augmentation recipe, one entry per group of views (see `selfsup.augment.ViewRecipe`); the
                data sets the image size, the recipe only relative sizes.
            optimizer: lars (SimCLR/BYOL's choice for large batches), sgd or adamw.
            base_lr: learning rate for a global batch of 256; the actual rate scales linearly with the global
                batch (per-device batch x devices x gradient accumulation).
            weight_decay: weight decay of weights; biases, normalisation parameters and what the backbone
                declares exempt (a ViT's position embedding and class token) get none, as in timm.
            momentum: momentum of sgd and lars (adamw's beta1).
            warmup_epochs: epochs of linear learning-rate warmup before the cosine decay.
            probe_lr: learning rate of the online linear probe (not scaled by batch size).
            knn_k: neighbours that vote in the kNN monitor.
            knn_temperature: temperature of the kNN monitor's weighted vote.
            compile_backbone: compile the backbone with torch.compile (faster steps after a slower start).
            compile_augment: compile the view rendering with torch.compile (fuses it into a few kernels; on a
                GPU it speeds augmentation up, most at large image sizes).
            image_size: side of the views and of the clean evaluation images. None: from the data (a data module's
                image_size, else the first batch's side rounded up to a multiple of 8; `selfsup.data.values`).
            num_classes: classes of the dataset; below 2 there is no kNN monitor or online probe. None: from the
                data (a data module's, else the dataset's `classes` or largest label + 1; none found: 0, warned).
            image_mean: per-channel mean used to normalise views. None: the data module's, else the dataset's.
            image_std: per-channel std used to normalise views. None: the data module's, else the dataset's.
            batch_size: per-device batch size, for learning-rate scaling. None: the data module's, else the
                training loader's first batch; a value that differs from the loader's is an error.
        """
        super().__init__()
        given_sizes = dict(image_size=image_size, batch_size=batch_size)
        sizes = {name: value for name, value in given_sizes.items() if value is not None}  # None: from the data
        check_options(
            positive(base_lr=base_lr, probe_lr=probe_lr, knn_temperature=knn_temperature)
            + at_least(0, weight_decay=weight_decay, warmup_epochs=warmup_epochs, num_classes=num_classes or 0)
            + at_least(1, knn_k=knn_k, **sizes)
            + at_least(0, momentum=momentum)
            + below(1, momentum=momentum),
            "--model.init_args",
        )
        views = tuple(ViewRecipe.from_dict(v) for v in views)
        self.save_hyperparameters(frame=inspect.currentframe())  # as datamodule.py says: no frame kept in a cycle
        for key, value in self.hparams.items():  # plain data only: checkpoints load with weights_only=True
            self.hparams[key] = plain(value)

        self.backbone = self._build_backbone()
        self.feature_dim = self.backbone.num_features
        self._build_views(views)
        self._check_views_per_image()
        self._build_monitors()
        self._checked_loaders: set[str] = set()  # the loaders whose first batch met the batch contract
        self._generator: torch.Generator | None = None
        self._generator_epoch = -1
        self._resumed_views: dict[int, dict] | None = None  # rank -> {epoch, generator state} from a checkpoint
        self._resumed_random: dict[int, Tensor] | None = None  # rank -> global random state from a checkpoint

    def _build_backbone(self) -> nn.Module:
        """The backbone for the image size (a provisional one while it is unknown: see PROVISIONAL_IMAGE_SIZE, or
        the size a ViT's img_size argument names)."""
        hp = self.hparams
        kwargs = hp.backbone_kwargs or {}
        size = hp.image_size or (kwargs["img_size"] if isinstance(kwargs.get("img_size"), int) else None)
        backbone = build_backbone(hp.backbone, hp.small_image_stem, size or PROVISIONAL_IMAGE_SIZE, **kwargs)
        if size:  # multi-crop's other view sizes, once the data's size is known
            check_view_sizes(backbone, hp.backbone, {ViewRecipe.from_dict(view).size(size) for view in hp.views})
        backbone.to(memory_format=torch.channels_last)
        if hp.compile_backbone:
            backbone.compile()
        return backbone

    def _build_views(self, recipes: tuple[ViewRecipe, ...]) -> None:
        """The training views and the clean evaluation view at the image size, normalised with the data's mean and
        std (provisional ones while they are unknown)."""
        hp = self.hparams
        size = hp.image_size or PROVISIONAL_IMAGE_SIZE
        mean, std = hp.image_mean or IMAGENET_MEAN, hp.image_std or IMAGENET_STD
        self.multiview = MultiView(recipes, size, mean, std, compile=hp.compile_augment)
        self.clean_view = CleanView(size, mean, std)

    def _build_monitors(self) -> None:
        """The online probe and the kNN monitor, where there are classes to tell apart (two or more)."""
        hp = self.hparams
        self.labelled = (hp.num_classes or 0) >= 2
        if self.labelled:
            self.probe = OnlineProbe(self.feature_dim, hp.num_classes)
            self.knn_monitor = KnnMonitor(hp.num_classes, hp.knn_k, hp.knn_temperature)

    def _backbone_rebuilt(self, old: nn.Module) -> None:
        """Called after `setup` replaced the provisional backbone `old` by `self.backbone`: modules that hold
        copies of it follow (`MomentumMethod`)."""

    def _check_views_per_image(self) -> None:
        fewest, most = self.VIEWS_PER_IMAGE
        count = self.multiview.num_views
        if count < fewest or (most is not None and count > most):
            needed = f"exactly {fewest}" if fewest == most else f"at least {fewest}"
            raise ConfigurationError(
                f"{type(self).__name__} needs {needed} views per image, but the view recipes give {count}. "
                "Fix num_views in the views argument (--model.init_args.views)."
            )

    # -- what a method implements -------------------------------------------------------------------------

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The self-supervised loss from the backbone features (B, feature_dim) of each view, in view order,
        and the step's metrics to log (names from `selfsup.runs.Metric`; the caller logs them).

        The views are there for methods that also run a momentum encoder on them. The labels (-1 where
        unknown) are for diagnostics only, such as NNCLR's neighbour accuracy; no self-supervised loss may use them
        (SupCon, the labelled reference, is the one method that trains on them, and says so).
        """
        raise NotImplementedError

    def constant_lr_modules(self) -> tuple[str, ...]:
        """Names of the submodules trained at the peak learning rate throughout, neither warmed up nor decayed:
        their parameters get param groups of their own that the schedule leaves alone (SimSiam's predictor,
        Chen and He, CVPR 2021, Sec. 4.2). None by default."""
        return ()

    # -- data to views ------------------------------------------------------------------------------------

    def _view_generator(self) -> torch.Generator:
        """This rank's random generator of the current epoch's views: seeded by (seed, rank, epoch), or continuing
        the draws of a checkpoint written within the epoch by as many ranks on the same kind of device (otherwise
        the data is dealt differently anyway, and fresh draws serve). Made at the epoch's first batch, not in
        `on_train_epoch_start`, which Lightning skips when it resumes within an epoch."""
        if self._generator is None or self._generator_epoch != self.current_epoch:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(view_seed(run_seed(), self.global_rank, self.current_epoch))
            saved = (self._resumed_views or {}).get(self.global_rank)
            same_run = len(self._resumed_views or {}) == self.trainer.world_size
            same_device = saved is not None and saved["state"].numel() == self._generator.get_state().numel()
            if same_run and same_device and saved["epoch"] == self.current_epoch:  # CUDA and CPU states differ
                self._generator.set_state(saved["state"])
            self._resumed_views, self._generator_epoch = None, self.current_epoch
        return self._generator

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_views = checkpoint.get(VIEW_GENERATOR_KEY)
        self._resumed_random = checkpoint.get(GLOBAL_RANDOM_KEY)

    def _loader_name(self, dataloader_idx: int) -> str:
        """The loader of the batch at hand, as errors name it."""
        if self.trainer is not None and self.trainer.training:
            return "the training loader"
        return f"validation loader {dataloader_idx} ({'the kNN bank' if dataloader_idx == 0 else 'the test images'})"

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Every form of batch the contract accepts (images alone, a mapping, ...) as (images, labels)."""
        return images_and_labels(batch, self._loader_name(dataloader_idx))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Any, Tensor]:
        """The views of a training batch, the clean view of a validation batch; each loader's first batch is
        checked against the batch contract first (once: it reads every value, outside the compiled step)."""
        images, labels = batch
        name = self._loader_name(dataloader_idx)
        if name not in self._checked_loaders:
            check_batch(images, labels, self.hparams.num_classes, name)
            self._checked_loaders.add(name)
        if self.trainer is not None and self.trainer.training:
            return self.multiview(images, self._view_generator()), labels
        return self.clean_view(images), labels

    def embed(self, views: list[Tensor]) -> list[Tensor]:
        """Backbone features of each view; consecutive views of one size share a forward pass."""
        features: list[Tensor] = []
        for _, group in itertools.groupby(views, key=lambda view: view.shape[-2:]):
            group = list(group)
            features += self.backbone(torch.cat(group)).chunk(len(group))
        return features

    # -- training -----------------------------------------------------------------------------------------

    def compute_losses(self, views: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(self-supervised loss, online probe loss, the method's step metrics) of one batch of views: the whole
        step's computation, without logging."""
        features = self.embed(views)
        loss, metrics = self.ssl_loss(features, views, labels)
        return loss, self._probe_loss(features, labels), metrics

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, labels = batch
        loss, probe_loss, metrics = self.compute_losses(views, labels)
        batch_size = labels.shape[0]
        self.log_dict(metrics, batch_size=batch_size)
        self.log(Metric.TRAIN_LOSS, loss, prog_bar=True, batch_size=batch_size)
        if self.labelled:
            self.log(Metric.PROBE_LOSS, probe_loss, batch_size=batch_size)
        return loss + probe_loss

    def _probe_loss(self, features: list[Tensor], labels: Tensor) -> Tensor:
        """The online probe's loss on the first recipe's views (the global crops under multi-crop, the size it is
        evaluated at); 0 without classes."""
        if not self.labelled:
            return features[0].new_zeros(())
        return self.probe.loss(features[: self.multiview.recipes[0].num_views], labels)

    def setup(self, stage: str) -> None:
        """Before Lightning restores a checkpoint's weights, configures the optimizer or draws a view: the values
        left to the data are taken from it and written into the hyperparameters (checkpoints record them, so
        `load_from_checkpoint` rebuilds without data), an explicit value that contradicts the data stops the run
        (`selfsup.data.values`), and one batch of views must fit in the memory of the device this run trains on (an
        image size of 100,000 px would ask for terabytes). Not in `__init__`, where there is no data yet, and where
        asking a GPU for its memory would initialise CUDA before Lightning forks its processes."""
        self._take_values_from_the_data(stage)
        image_size, batch_size = self.hparams.image_size, self.hparams.batch_size
        if batch_size is None:  # validating a method that never trained: no training views to fit
            return
        check_fits_in_memory(
            batch_view_bytes(self.multiview.recipes, image_size, batch_size),
            f"At image size {image_size}, one batch of views ({batch_size} images x {self.multiview.num_views} views "
            f"of up to {max(self.multiview.sizes)} px, float32)",
            "choose a smaller image_size or batch_size (--data.image_size, --data.batch_size)",
            self.trainer.strategy.root_device,
        )

    def _take_values_from_the_data(self, stage: str) -> None:
        """Fill in the values left to the data and rebuild what was built provisionally from them (see `setup`)."""
        hp = self.hparams
        unset = {name for name in FROM_DATA if hp[name] is None}
        data = data_values(self.trainer, stage, statistics=bool(unset & {"image_mean", "image_std"}))
        # every rank takes rank 0's values: estimates from each rank's own batches would differ a little
        values = self.trainer.strategy.broadcast(resolve({name: hp[name] for name in FROM_DATA}, data))
        needed = [name for name in ("image_size", "image_mean", "image_std") if values[name] is None]
        needed += ["batch_size"] if stage == "fit" and values["batch_size"] is None else []
        if needed:
            raise ConfigurationError(
                f"{', '.join(needed)} cannot be taken from the data: {data.source} gave no batch. Pass "
                f"{', '.join(needed)} to {type(self).__name__}, or give it data."
            )
        if values["num_classes"] is None:
            rank_zero_warn(
                f"num_classes: {data.source} says nothing about its classes (no SelfSupDataModule; no `classes`, "
                f"`targets` or labels on its dataset), so the kNN monitor and the online probe are off. Pass "
                f"num_classes to {type(self).__name__} to turn them on."
            )
            values["num_classes"] = 0
        for name in unset:  # Lightning logs the initial hyperparameters: the values trained with, not None
            hp[name] = self._hparams_initial[name] = plain(values[name])
        if "image_size" in unset:
            old = self.backbone
            self.backbone = self._build_backbone()
            self._backbone_rebuilt(old)
        if unset & {"image_size", "image_mean", "image_std"}:
            self._build_views(self.multiview.recipes)
        if "num_classes" in unset:
            self._build_monitors()

    def on_fit_start(self) -> None:
        global_batch = self.hparams.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches
        for logger in self.loggers:  # what the comparison report and a dashboard need to know about the run
            logger.log_hyperparams({"devices": self.trainer.world_size, "global_batch": global_batch})

    def on_train_start(self) -> None:
        """A run resumed within an epoch trains the rest of that epoch as its data loader deals it (on another number
        of ranks, Lightning's restored count is in other batches) and re-plans its schedule over those steps. On as
        many ranks, each rank's global random state continues from the checkpoint's, and the loader's iterator of a
        new epoch is made from it (`restart_epoch_iterator`)."""
        served = getattr(self.trainer.datamodule, "resumed_batches", lambda: None)()
        if served is not None and align_resumed_epoch(self.trainer, served):
            self.lr_schedulers().replan()
        if self._resumed_random is not None:  # resumed from a checkpoint of this version
            if len(self._resumed_random) == self.trainer.world_size:
                restore_global_random_state(self._resumed_random[self.global_rank], self.device)
            restart_epoch_iterator(self.trainer)
        self._resumed_random = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the method, the run, the seed and the wandb run in the checkpoint (`selfsup.runs.RunRecord`), every
        rank's global random state, and every rank's view generator, so that a checkpoint written within an epoch
        resumes with the views it had left."""
        run = run_name_of_logger(self.logger)
        wandb_id = next((str(logger.version) for logger in self.loggers if isinstance(logger, WandbLogger)), None)
        RunRecord(method_name(type(self)), run, run_seed(), wandb_id).write(checkpoint)
        random_states = gather(global_random_state(self.device).to(self.device)[None]).cpu()
        checkpoint[GLOBAL_RANDOM_KEY] = {rank: state.clone() for rank, state in enumerate(random_states)}
        if self._generator is not None:
            states = gather(self._generator.get_state().to(self.device)[None]).cpu()
            # each state cloned into its own storage: set_state reads a view's storage from its start
            checkpoint[VIEW_GENERATOR_KEY] = {
                rank: {"epoch": self._generator_epoch, "state": state.clone()} for rank, state in enumerate(states)
            }

    # -- evaluation: kNN monitor and online probe ---------------------------------------------------------

    def on_validation_start(self) -> None:
        """Validation scores the kNN monitor and the online probe, which need classes and two loaders in this order:
        the labelled training images (the bank), then the test images; anything else would log no `val/*` metric."""
        loaders = self.trainer.val_dataloaders
        count = len(loaders) if isinstance(loaders, list | tuple) else int(loaders is not None)
        if count and not self.labelled:
            raise ConfigurationError(
                f"Validation scores the kNN monitor and the online probe, which need num_classes >= 2; "
                f"{type(self).__name__} has num_classes={self.hparams.num_classes}. Pass num_classes, or no "
                "validation loaders."
            )
        if count != 2:
            raise ConfigurationError(
                f"Validation needs two loaders, [labelled training images (the kNN bank), test images], in this "
                f"order; got {count}. Pass val_dataloaders=[bank_loader, test_loader], or a SelfSupDataModule."
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0: this rank's share of the labelled training images (the kNN bank); loader 1: of the test set."""
        images, labels = batch
        features = self.backbone(images).float()
        if dataloader_idx == 0:
            self.knn_monitor.add_bank(features, labels)
        else:
            self.knn_monitor.add_queries(features, labels)
            self.probe.score(features, labels)

    def on_validation_epoch_end(self) -> None:
        if self.labelled and self.knn_monitor.ready:
            self.log(Metric.KNN_TOP1, self.knn_monitor.compute(), prog_bar=True, sync_dist=True)  # equal on all ranks
            self.log(Metric.PROBE_TOP1, self.probe.accuracy.compute(), sync_dist=True)  # torchmetrics synced it
            self.probe.accuracy.reset()
        if self.labelled:
            self.knn_monitor.reset()

    # -- optimisation -------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        total_steps = int(self.trainer.estimated_stepping_batches)
        global_batch = hp.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches
        lr = hp.base_lr * global_batch / 256

        groups = weight_decay_groups(self, exclude=("probe",), constant_lr=self.constant_lr_modules())
        if self.labelled:
            groups.append({"name": "probe", "params": list(self.probe.parameters()), "lr": hp.probe_lr,
                           "weight_decay": 0.0, "lars_exclude": True})  # fmt: skip
        if hp.optimizer == "lars":
            optimizer = LARS(groups, lr=lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        elif hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=(hp.momentum, 0.999), weight_decay=hp.weight_decay)

        warmup_steps = hp.warmup_epochs * optimizer_steps_per_epoch(self.trainer)
        if warmup_steps >= total_steps:
            rank_zero_warn(
                f"warmup_epochs={hp.warmup_epochs} covers the whole run ({total_steps} steps); warming up over the "
                "first 10% of steps instead. Set warmup_epochs (--model.init_args.warmup_epochs) below the "
                "trainer's max_epochs."
            )
            warmup_steps = total_steps // 10
        schedule = WarmupCosineSchedule(optimizer, self.trainer, round(warmup_steps), global_batch)
        scheduler = {"scheduler": schedule, "interval": "step", "name": Metric.LEARNING_RATE}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_train_epoch_start(self) -> None:
        """Re-plan the schedule where the steps left differ from its plan, so that the run still ends it at its last
        step: a no-op unless an epoch ran another number of batches than Lightning's counters said at the resume
        (the rest of a mid-epoch checkpoint's epoch dealt to another number of ranks)."""
        self.lr_schedulers().replan()


class MomentumMethod(Method):
    """A method with momentum (EMA) copies of some of its modules: MoCo's key encoder, BYOL's target.

    Copies made with `momentum_copy` are updated after every optimizer step with tau following BYOL's cosine
    schedule from `tau_base` to `tau_final` (equal values hold it constant, as MoCo does); tau is logged as
    `train/tau`. The copies are part of the state dict, so checkpoints keep them.
    """

    def __init__(self, tau_base: float = 0.99, tau_final: float = 1.0, **kwargs) -> None:
        """
        Args:
            tau_base: momentum of the EMA copies at the start of training.
            tau_final: momentum at the end of training (equal to tau_base: constant).
        """
        check_options(within(0, 1, tau_base=tau_base, tau_final=tau_final), "--model.init_args")
        super().__init__(**kwargs)
        self._momentum_pairs: list[tuple[nn.Module, nn.Module]] = []

    def momentum_copy(self, module: nn.Module) -> nn.Module:
        target = momentum_copy(module)
        self._momentum_pairs.append((module, target))
        return target

    def _backbone_rebuilt(self, old: nn.Module) -> None:
        """The momentum copies of the provisional backbone become copies of the one built for the data."""
        for index, (online, target) in enumerate(self._momentum_pairs):
            if online is old:
                name = next(name for name, module in self.named_children() if module is target)
                copy = momentum_copy(self.backbone)
                setattr(self, name, copy)
                self._momentum_pairs[index] = (self.backbone, copy)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA copies follow the online modules: once per optimizer step, also when
        gradients accumulate over several batches. tau follows the learning-rate schedule's progress at the start of
        the step, so a resume on another number of devices re-plans both alike: they continue from where the
        checkpoint stopped and reach their end at the run's last step."""
        super().optimizer_step(*args, **kwargs)
        progress = self.lr_schedulers().progress
        tau = cosine_momentum(progress, self.hparams.tau_base, self.hparams.tau_final)
        for online, target in self._momentum_pairs:
            ema_update(target, online, tau)
        self.log(Metric.TAU, tau)
