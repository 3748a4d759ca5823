"""DINO: a student matches the centred, sharpened output of its momentum teacher on the other global crops
("Emerging Properties in Self-Supervised Vision Transformers", Caron et al., ICCV 2021); loss in
`selfsup.losses.dino`, head in `selfsup.models.heads`."""

from typing import Any

import torch
from torch import Tensor

from selfsup.augment import ViewRecipe, multicrop_views
from selfsup.errors import at_least, check_options, positive, within
from selfsup.losses import dino_center_update, dino_loss_terms
from selfsup.methods.base import MomentumMethod
from selfsup.models import DINOHead
from selfsup.runs import Metric


class DINO(MomentumMethod):
    """DINO: a student matches the centred, sharpened output of its momentum teacher across multi-crop views
    ("Emerging Properties in Self-Supervised Vision Transformers", Caron et al., ICCV 2021, Algorithm 1, Sec. 3.1).

    Expects at least two views per image; the first recipe's views are the global crops, the only ones the teacher
    sees. Logs `train/teacher_entropy`, `train/teacher_student_kl` (the paper's collapse study) and `train/tau`."""

    VIEWS_PER_IMAGE = (2, None)  # each crop is matched to another global crop
    ENCODERS = {"online": "backbone", "momentum": "teacher_backbone"}

    def __init__(
        self,
        output_dim: int = 4096,
        projector_hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_batch_norm: bool = False,
        norm_last_layer: bool = True,
        freeze_last_layer_epochs: int = 1,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_epochs: int = 30,
        center_momentum: float = 0.9,
        views: tuple[ViewRecipe, ...] = multicrop_views(),
        base_lr: float = 0.3,
        weight_decay: float = 1e-6,
        tau_base: float = 0.996,
        tau_final: float = 1.0,
        **kwargs,
    ) -> None:
        """
        Args:
            output_dim: K, the scores of the head (ImageNet: 65536; 4096 suits 60,000 images, as in solo-learn's CIFAR).
            projector_hidden_dim: hidden width of the head's MLP.
            bottleneck_dim: width of the l2-normalised bottleneck before the last layer.
            head_batch_norm: batch norm after the head's hidden layers (off in the paper).
            norm_last_layer: fix the norm of the last layer's weight rows to 1 (the paper's default).
            freeze_last_layer_epochs: epochs during which the last layer gets no gradient (paper: 1).
            student_temperature: tau_s (paper: 0.1).
            teacher_temperature: tau_t after the warmup (paper: 0.07).
            warmup_teacher_temperature: tau_t in the first epoch (paper: 0.04).
            warmup_teacher_temperature_epochs: epochs of linear tau_t warmup (paper: 30; 0: none).
            center_momentum: m of the center's moving average (paper: 0.9).
            views: the crops; the first recipe's views are the global ones (multi-crop: 2 global + 4 local crops).
            base_lr: learning rate per 256 images (solo-learn's CIFAR setting for DINO on a ResNet-18, with LARS).
            weight_decay: solo-learn's 1e-6 for LARS (the paper's ViTs: AdamW, 0.04 to 0.4).
            tau_base: teacher momentum at the start (paper: 0.996).
            tau_final: teacher momentum at the end (paper: 1.0 on a cosine schedule).
        """
        temperatures = dict(student_temperature=student_temperature, teacher_temperature=teacher_temperature,
                            warmup_teacher_temperature=warmup_teacher_temperature)  # fmt: skip
        dims = dict(output_dim=output_dim, projector_hidden_dim=projector_hidden_dim, bottleneck_dim=bottleneck_dim)
        epochs = dict(freeze_last_layer_epochs=freeze_last_layer_epochs,
                      warmup_teacher_temperature_epochs=warmup_teacher_temperature_epochs)  # fmt: skip
        check_options(
            positive(**temperatures) + at_least(1, **dims) + at_least(0, **epochs)
            + within(0, 1, center_momentum=center_momentum),
            "--model.init_args",
        )  # fmt: skip
        super().__init__(views=views, base_lr=base_lr, weight_decay=weight_decay, tau_base=tau_base,
                         tau_final=tau_final, **kwargs)  # fmt: skip
        self.num_global_crops = self.multiview.recipes[0].num_views
        self.head = DINOHead(self.feature_dim, projector_hidden_dim, bottleneck_dim, output_dim, head_batch_norm,
                             norm_last_layer)  # fmt: skip
        self.teacher_backbone = self.momentum_copy(self.backbone)
        self.teacher_head = self.momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(output_dim))  # (K,) C, in checkpoints
        # tau_t as a tensor, so that a compiled step reads each epoch's value without recompiling; set from the epoch
        first_temperature = torch.tensor(self.teacher_temperature_at(0))
        self.register_buffer("current_teacher_temperature", first_temperature, persistent=False)

    def teacher_temperature_at(self, epoch: int) -> float:
        """tau_t in `epoch`: linear from the warmup value at epoch 0 to the final one at the end of the warmup. A
        function of the epoch, as in the paper, because Lightning restores the epoch exactly on any number of
        devices, whereas a fraction of the run moves when a resumed run is given more epochs."""
        hp = self.hparams
        done = min(1.0, epoch / hp.warmup_teacher_temperature_epochs) if hp.warmup_teacher_temperature_epochs else 1.0
        return hp.warmup_teacher_temperature + done * (hp.teacher_temperature - hp.warmup_teacher_temperature)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.current_teacher_temperature.fill_(self.teacher_temperature_at(self.current_epoch))

    def on_after_backward(self) -> None:
        if self.current_epoch < self.hparams.freeze_last_layer_epochs:
            for parameter in self.head.last_layer.parameters():
                parameter.grad = None  # the optimizer skips it: no update, no weight decay

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        batch, num_global = features[0].shape[0], self.num_global_crops
        student = self.head(torch.cat(features)).split(batch)  # (B, K) per crop
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:num_global]))).split(batch)
        terms = dino_loss_terms(list(student), list(teacher), self.center, hp.student_temperature,
                                self.current_teacher_temperature)  # fmt: skip
        self.center.copy_(dino_center_update(self.center, list(teacher), hp.center_momentum))  # after the loss
        metrics = {Metric.TEACHER_ENTROPY: terms.teacher_entropy, Metric.TEACHER_STUDENT_KL: terms.kl_divergence}
        return terms.loss, metrics
