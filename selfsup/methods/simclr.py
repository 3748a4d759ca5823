"""SimCLR: two views of each image are pulled together and pushed away from every other view in the global
batch ("A Simple Framework for Contrastive Learning of Visual Representations", Chen et al., ICML 2020).

With `neighbours` on, each view's positive is replaced by nearest neighbours from a support set of earlier
embeddings, which is NNCLR (`selfsup.methods.nnclr`)."""

import torch
from torch import Tensor, nn

from selfsup.errors import at_least, check_options, positive
from selfsup.losses import InfoNCELoss, cross_view_info_nce
from selfsup.losses.cacr import AttractionRepulsion
from selfsup.losses.debiased import DebiasedNegatives
from selfsup.losses.info_nce import negatives_conflicts
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.models.feature_transformation import FeatureTransformation, transformation_conflicts
from selfsup.models.hard_negative_mixing import HardNegativeMixing
from selfsup.models.neighbours import NearestNeighbours


class SimCLR(Method):
    """SimCLR: NT-Xent between two views of each image, with every other view of the global batch as a negative
    ("A Simple Framework for Contrastive Learning of Visual Representations", Chen et al., ICML 2020, eq. 1).

    Expects exactly two views per image (`views`); the projector is an MLP on the backbone's features.
    `decoupled=True` gives DCL (Yeh et al., ECCV 2022) and `mixing` adds MoCHi's synthetic negatives from the
    in-batch negatives; `negatives` debiases InfoNCE and samples hard negatives, `cacr` trains CACR instead;
    `transformation` extrapolates positive pairs and interpolates negatives (FT, Zhu et al., ICCV 2021). Logs
    `train/hard_negative_sim` (and the synthetic negatives' metrics with mixing or interpolation on,
    `train/positive_sim_drop` with extrapolation on, the other variants' with theirs).
    `neighbours` replaces each positive by its nearest neighbours in a support set (NNCLR's eq. 2: the neighbours of
    one view against the other view's predictions) and logs `train/nn_accuracy` instead.
    The other options (backbone, optimizer, data values) are `Method`'s."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        temperature: float = 0.2,
        decoupled: bool = False,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 256,
        projector_num_layers: int = 2,
        predictor_hidden_dim: int = 0,
        mixing: HardNegativeMixing = HardNegativeMixing(),
        neighbours: NearestNeighbours = NearestNeighbours(),
        negatives: DebiasedNegatives = DebiasedNegatives(),
        cacr: AttractionRepulsion = AttractionRepulsion(),
        transformation: FeatureTransformation = FeatureTransformation(),
        **kwargs,
    ) -> None:
        """
        Args:
            temperature: softmax temperature of NT-Xent (0.2 suits small images, as in solo-learn's CIFAR setup).
            decoupled: use the decoupled contrastive loss (DCL, Yeh et al. 2022): no positive in the denominator.
            projector_hidden_dim: width of the projection MLP's hidden layer.
            projector_output_dim: dimension of the embeddings the loss compares.
            projector_num_layers: linear layers of the projection MLP (SimCLR: 2; NNCLR: 3).
            predictor_hidden_dim: hidden width of a 2-layer predictor on the embeddings, which the neighbours are
                contrasted with (NNCLR: 4096); 0: no predictor. Only with neighbours.
            mixing: hard negative mixing over the in-batch negatives (MoCHi; off by default).
            neighbours: nearest-neighbour positives from a support set (NNCLR; off by default).
            negatives: the debiased estimator of the negative term (tau_plus, Chuang et al. 2020) and hard negative
                sampling on top of it (beta, Robinson et al. 2021); off by default.
            cacr: contrastive attraction and repulsion in place of InfoNCE (Zheng et al. 2021); off by default.
            transformation: positive extrapolation and negative interpolation in feature space (FT; off by default).
        """
        mixing, neighbours = HardNegativeMixing.from_dict(mixing), NearestNeighbours.from_dict(neighbours)
        transformation = FeatureTransformation.from_dict(transformation)
        dims = dict(projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        problems = positive(temperature=temperature) + at_least(1, **dims, projector_num_layers=projector_num_layers)
        problems += at_least(0, predictor_hidden_dim=predictor_hidden_dim)
        if predictor_hidden_dim and not neighbours.support_size:
            problems.append("predictor_hidden_dim needs neighbours (a predictor predicts the neighbours): set "
                            "neighbours.support_size, or predictor_hidden_dim 0")  # fmt: skip
        if mixing.num_hard and neighbours.support_size:
            problems.append("mixing and neighbours do not combine: switch one off (mixing.num_hard 0 or "
                            "neighbours.support_size 0)")  # fmt: skip
        problems += transformation_conflicts(transformation, mixing, neighbours.support_size)
        negatives, cacr = DebiasedNegatives.from_dict(negatives), AttractionRepulsion.from_dict(cacr)
        problems += negatives_conflicts(
            negatives, cacr, decoupled, mixing.num_hard > 0, neighbours.support_size > 0, transformation.enabled
        )
        check_options(problems, "--model.init_args")
        super().__init__(**kwargs)
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, num_layers=projector_num_layers
        )
        self.predictor = (
            projection_mlp(projector_output_dim, predictor_hidden_dim, projector_output_dim)
            if predictor_hidden_dim
            else nn.Identity()
        )
        self.criterion = InfoNCELoss(temperature, decoupled, negatives, cacr)
        self.mixing = mixing
        self.transformation = transformation
        self.support_set = neighbours.support_set(projector_output_dim)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        embeddings = self.projector(torch.cat(features))  # (2N, D); one BN over both views
        if self.support_set is None:
            z_a, z_b = embeddings.chunk(2)
            epoch = self.current_epoch
            return self.criterion.loss_and_hardness(
                z_a, z_b, self.mixing.at_epoch(epoch), self.transformation.at_epoch(epoch)
            )
        predictions = self.predictor(embeddings).chunk(2)
        # NNCLR eq. 2, symmetrised (Sec. 3): each view's neighbours against the other view's predictions
        neighbours, metrics = self.support_set.swap(list(embeddings.chunk(2)), labels if self.labelled else None)
        hp = self.hparams
        loss = (
            cross_view_info_nce(neighbours[0], predictions[1], hp.temperature, hp.decoupled)
            + cross_view_info_nce(neighbours[1], predictions[0], hp.temperature, hp.decoupled)
        ) / 2
        return loss, metrics
