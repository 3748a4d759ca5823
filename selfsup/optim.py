"""LARS and the warmup-cosine learning-rate schedule shared by every method, defined on training progress.

The schedule is a function of progress, the fraction of the run trained, from 0 to 1, not of a step count. A run
plans its optimizer steps and gives each the same share of progress. Resumed on another number of devices (or
with another accumulation) a run takes another number of steps, with drop_last not even in proportion, so it
re-plans: the progress left is shared evenly among the steps it will really take, as counted from Lightning's
restored loops. The curve then continues from where the checkpoint stopped and its last step ends exactly at
progress 1; a run resumed with the same plan continues it bit for bit, and one continued for more epochs resumes
at the epochs it trained. The peak rate follows the linear scaling rule of the global batch in use.
"""

import math
from fnmatch import fnmatch
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling.

    "Large Batch Training of Convolutional Networks" (You et al., 2017), Algorithm 1: each parameter's update
    is rescaled by the trust ratio  eta * ||w|| / ||g + wd * w||, so every layer moves by a similar relative
    amount whatever the batch size. As in SimCLR and BYOL, parameter groups marked `lars_exclude` (biases,
    normalisation layers, the online probe) skip the rescaling.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.02,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad.add(param, alpha=group["weight_decay"])
                if not group.get("lars_exclude", False):
                    param_norm, update_norm = param.norm(), update.norm()
                    trust = group["trust_coefficient"] * param_norm / update_norm
                    update = update * torch.where((param_norm > 0) & (update_norm > 0), trust, 1.0)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def weight_decay_groups(
    model: nn.Module, exclude: tuple[str, ...] = (), constant_lr: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The trained parameters of `model` (less its submodules named in `exclude`) in two groups, by timm's rule
    (`timm.optim.param_groups_weight_decay`): biases and every parameter of at most one dimension (normalisation
    layers) get neither weight decay nor LARS scaling, and neither do the parameters a module declares exempt
    with timm's `no_weight_decay()` (a ViT's position embedding and class token); every other weight decays.

    Unlike timm's function, a weight decay of 0 keeps the groups apart, so LARS still scales the weights. Each
    submodule named in `constant_lr` gets its own two groups, `<name>` and `<name>_no_weight_decay`, marked
    `constant_lr`: `WarmupCosineSchedule` keeps them at their peak rate (SimSiam's predictor)."""
    unknown = set(constant_lr) - {name for name, _ in model.named_children()}
    if unknown:
        raise ValueError(f"constant_lr names no submodule of {type(model).__name__}: {sorted(unknown)}")
    exempt_patterns = [
        f"{prefix}.{pattern}" if prefix else pattern
        for prefix, module in model.named_modules()
        if callable(getattr(module, "no_weight_decay", None))
        for pattern in module.no_weight_decay()
    ]
    owners = ("", *constant_lr)  # "": the parameters that follow the schedule
    decayed: dict[str, list[nn.Parameter]] = {owner: [] for owner in owners}
    exempt: dict[str, list[nn.Parameter]] = {owner: [] for owner in owners}
    for name, param in model.named_parameters():
        top = name.split(".", 1)[0]
        if not param.requires_grad or top in exclude:
            continue
        owner = top if top in constant_lr else ""
        if param.ndim <= 1 or name.endswith(".bias") or any(fnmatch(name, p) for p in exempt_patterns):
            exempt[owner].append(param)
        else:
            decayed[owner].append(param)
    groups = [
        {"name": "weights", "params": decayed[""]},
        {"name": "no_weight_decay", "params": exempt[""], "weight_decay": 0.0, "lars_exclude": True},
    ]
    for owner in constant_lr:
        groups += [
            {"name": owner, "params": decayed[owner], "constant_lr": True},
            {"name": f"{owner}_no_weight_decay", "params": exempt[owner], "weight_decay": 0.0, "lars_exclude": True,
             "constant_lr": True},
        ]  # fmt: skip
    return groups


def ended_optimizer_step(trainer: Any, batch_idx: int) -> bool:
    """Whether training batch `batch_idx` of the epoch ended with an optimizer step: the last of each group of
    `accumulate_grad_batches`, or the epoch's last batch (where Lightning steps on a partial group)."""
    last = batch_idx + 1 == trainer.num_training_batches
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or last


def optimizer_steps_per_epoch(trainer: Any) -> int | float:
    """Optimizer steps of a whole epoch: one after every `accumulate_grad_batches` batches, and one on the epoch's
    last batch, where Lightning steps on a partial group (at least 1; infinite for data of unknown length). A run
    limited by `max_steps` alone has not loaded its training data when it configures its optimizers: it is loaded
    here, as Lightning's own `estimated_stepping_batches` does for a run limited by epochs."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    if trainer.num_training_batches == math.inf:
        return math.inf
    return max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))


def optimizer_steps_left(trainer: Any) -> int:
    """The optimizer steps Lightning still takes in this fit, read off its loops' progress: the rest of the epoch in
    progress (a step after every `accumulate_grad_batches` batches and on the epoch's last batch), then whole epochs
    up to `max_epochs`, and no more than `max_steps` allows.

    Right after Lightning restored its loops from a checkpoint, an epoch in progress is one that started but whose
    batches did not all train, and the batches the checkpoint trained of it are done. As an epoch starts (in
    `on_train_epoch_start`) it is not counted as started yet, so all its batches are left.
    """
    epochs = trainer.fit_loop.epoch_progress.current
    batches, accumulate = trainer.num_training_batches, trainer.accumulate_grad_batches
    steps = math.inf
    if trainer.max_epochs != -1:
        steps_per_epoch = optimizer_steps_per_epoch(trainer)
        in_progress = epochs.started > epochs.processed
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready if in_progress else 0
        rest_of_epoch = steps_per_epoch - done // accumulate if in_progress and done < batches else 0
        first_whole_epoch = epochs.processed + 1 if in_progress else epochs.processed
        steps = rest_of_epoch + max(0, trainer.max_epochs - first_whole_epoch) * steps_per_epoch
    if trainer.max_steps != -1:
        steps = min(steps, trainer.max_steps - trainer.global_step)
    return max(0, int(steps))


def warmup_cosine(seen: float, warmup: float, total: float, step_size: float = 1) -> float:
    """Learning-rate factor of the step that starts after `seen` units of training (steps, samples or progress) and
    trains `step_size` more: linear warmup to 1 over the first `warmup` units, then cosine decay to 0 at `total`.

    Linear warmup for large-batch training ("Accurate, Large Minibatch SGD", Goyal et al. 2017, Sec. 2.2),
    cosine decay without restarts ("SGDR", Loshchilov and Hutter, ICLR 2017), as in SimCLR.
    """
    if seen < warmup:
        return min(1.0, (seen + step_size) / warmup)
    progress = min(1.0, (seen - warmup) / max(step_size, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule(LRScheduler):
    """`warmup_cosine` over training progress, stepped once per optimizer step.

    A plan shares `progress_left` evenly among `plan_steps` optimizer steps; `last_epoch` counts the steps taken on
    it. A fresh run plans all the steps Lightning estimates from progress 0, warmup ending at the progress of its
    last warmup step. The checkpoint holds the plan, the position on it, where warmup ends (as progress) and the
    run's length (`max_epochs`, `max_steps`, and the epochs that makes). The run that loads it counts the steps it
    will really take (`optimizer_steps_left` of its trainer) and, where that is not what the plan had left (another
    number of devices or accumulation, with drop_last), re-plans (`replan`). A run given another length continues
    at the same number of epochs trained instead: progress and warmup are rescaled to its epochs first, so a
    finished run continued for more epochs resumes within the cosine rather than at its end. The peak rates come
    from the loading run, so the rate scales with its global batch, and its first step already uses the rate of
    its own position. Parameter groups marked `constant_lr` (`weight_decay_groups`) stay at their peak rate
    throughout, neither warmed up nor decayed, wherever the run resumes.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, trainer: Any, warmup_steps: int, global_batch: int) -> None:
        self.trainer = trainer
        self.plan_steps = max(1, int(trainer.estimated_stepping_batches))  # a fit of no batches plans one step
        self.progress_left = 1.0  # progress left at the plan's start
        self.warmup_end = warmup_steps / self.plan_steps
        self.run_length = [trainer.max_epochs, trainer.max_steps]
        self.planned_epochs = self.plan_steps / optimizer_steps_per_epoch(trainer)
        self.planned_samples = self.plan_steps * global_batch  # reads checkpoints of the samples-seen schedule
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        super().__init__(optimizer)

    def _progress_left_after(self, steps: int) -> float:
        """Progress left after `steps` of the plan's steps: exactly 0 after its last."""
        return self.progress_left * max(0, self.plan_steps - steps) / self.plan_steps

    @property
    def progress(self) -> float:
        """Fraction of the run trained before the next step, in [0, 1]."""
        return 1.0 - self._progress_left_after(self.last_epoch)

    def get_lr(self) -> list[float]:
        """Each group's peak rate times the schedule's factor; groups marked `constant_lr` keep their peak rate."""
        step_size = self.progress_left / self.plan_steps
        factor = warmup_cosine(self.progress, self.warmup_end, 1.0, step_size)
        return [
            peak if group.get("constant_lr") else peak * factor
            for peak, group in zip(self.peak_lrs, self.optimizer.param_groups, strict=True)
        ]

    def replan(self) -> None:
        """Share the progress left among the optimizer steps the trainer still takes, unless the plan has that many
        left (a resume on the same hardware continues the plan bit for bit) or no step is left to train."""
        steps = optimizer_steps_left(self.trainer)
        if steps < 1 or steps == self.plan_steps - self.last_epoch:
            return
        self.progress_left, self.plan_steps, self.last_epoch = self._progress_left_after(self.last_epoch), steps, 0
        self._set_rates()

    def _set_rates(self) -> None:
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "warmup_end": self.warmup_end,
            "run_length": self.run_length,
            "planned_epochs": self.planned_epochs,
            "plan_progress_left": self.progress_left,
            "plan_steps": self.plan_steps,
            "plan_steps_taken": self.last_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The checkpoint's plan and position, then re-planned for the steps this run takes."""
        if state_dict.get("run_length") == self.run_length:
            self.warmup_end = state_dict["warmup_end"]
            self.progress_left, self.plan_steps = state_dict["plan_progress_left"], state_dict["plan_steps"]
            self.last_epoch = state_dict["plan_steps_taken"]
        else:
            progress, self.warmup_end = self._position_in_this_run(state_dict)
            self.progress_left, self.plan_steps, self.last_epoch = 1.0 - min(1.0, progress), 1, 0
        self._set_rates()
        self.replan()

    def _position_in_this_run(self, state_dict: dict[str, Any]) -> tuple[float, float]:
        """(progress, warmup end) of a checkpoint of another run length, in this run's terms: the epochs it trained
        and warmed up over this run's epochs. Checkpoints of the earlier schedules give their position only: samples
        seen (`samples_seen`) or LambdaLR's steps taken (`last_epoch`), over this run's plan (exact when resumed on
        the same hardware); warmup is then this run's."""
        if "run_length" in state_dict:
            scale = state_dict["planned_epochs"] / self.planned_epochs if self.planned_epochs else 1.0
            return state_dict["progress"] * scale, state_dict["warmup_end"] * scale
        if "samples_seen" in state_dict:
            return state_dict["samples_seen"] / self.planned_samples, self.warmup_end
        return state_dict.get("last_epoch", 0) / self.plan_steps, self.warmup_end
