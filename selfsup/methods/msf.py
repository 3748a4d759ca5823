"""Mean Shift (MSF): the query regresses the k nearest neighbours of its target in a memory bank of earlier targets.

"Mean Shift for Self-Supervised Learning" (Koohpayegani, Tejankar and Pirsiavash, ICCV 2021), Sec. 3: BYOL's
online network and momentum target, but the loss is the mean squared distance between the normalised prediction of
a strongly augmented view and the k nearest neighbours (k = 5) of the target embedding of a weakly augmented view,
the target itself being one of them (the batch joins the memory bank before the lookup). Each step moves the
query towards the mean of its target's neighbourhood: one mean-shift step. One direction only, not symmetrised.
"""

from typing import Literal

from selfsup.augment import ViewRecipe, msf_views
from selfsup.methods.byol import BYOL
from selfsup.models.neighbours import NearestNeighbours


class MSF(BYOL):
    """Mean Shift: the strong view's prediction regresses the k = 5 nearest neighbours of the weak view's momentum
    target, itself among them ("Mean Shift for Self-Supervised Learning", Koohpayegani et al., ICCV 2021, Sec. 3).

    Takes every `BYOL` option with MSF's defaults: `neighbours` (a memory bank of 16,384 targets, k = 5, the batch
    included), one direction (`symmetric` false), the weak-strong views, SGD at 0.05 per 256 with weight decay 1e-4,
    a constant target momentum of 0.99, and heads of 2x and 1/4 the backbone's 512 features. Logs
    `train/nn_accuracy`, the fraction of the k neighbours of the sample's class (the paper's purity)."""

    def __init__(
        self,
        neighbours: NearestNeighbours = NearestNeighbours(support_size=16384, num_neighbours=5, include_batch=True),
        symmetric: bool = False,
        projector_hidden_dim: int = 1024,
        projector_output_dim: int = 128,
        predictor_hidden_dim: int = 1024,
        views: tuple[ViewRecipe, ...] = msf_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "sgd",
        base_lr: float = 0.05,
        weight_decay: float = 1e-4,
        tau_base: float = 0.99,
        tau_final: float = 0.99,
        **kwargs,
    ) -> None:
        """
        Args:
            neighbours: the memory bank (MSF's code: 128,000 on ImageNet; 16,384 suits 60k images), k = 5.
            symmetric: MSF regresses one direction, strong view to weak target.
            projector_hidden_dim: hidden width of the projector: twice the backbone's features in MSF's code
                (ResNet-18: 1024).
            projector_output_dim: a quarter of the backbone's features in MSF's code (ResNet-18: 128).
            predictor_hidden_dim: hidden width of the predictor, as the projector's.
            views: a strong view (MoCo v2's) for the query, then a weak one (crop and flip) for the target.
            optimizer: SGD, as the paper.
            base_lr: learning rate per 256 images (MSF's code: 0.05 at batch 256).
            weight_decay: the paper's 1e-4.
            tau_base: target momentum (paper: 0.99, constant).
            tau_final: equal to tau_base: constant.
        """
        super().__init__(
            neighbours=neighbours,
            symmetric=symmetric,
            projector_hidden_dim=projector_hidden_dim,
            projector_output_dim=projector_output_dim,
            predictor_hidden_dim=predictor_hidden_dim,
            views=views,
            optimizer=optimizer,
            base_lr=base_lr,
            weight_decay=weight_decay,
            tau_base=tau_base,
            tau_final=tau_final,
            **kwargs,
        )
