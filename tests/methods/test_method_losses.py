"""Each method's loss, from its own heads' outputs, against a float64 reference written from its paper's equation:
the positives come from the views the paper pairs, gradient flows only where the paper sends it (never into keys,
targets, neighbours or codes), and a queue is read before this batch is written into it."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.methods import BYOL, METHODS, NNCLR, MoCoV2, MoCoV3, SimSiam, SwAV
from selfsup.methods.base import Method, MomentumMethod
from selfsup.runs import Metric
from tests.losses.test_byol import reference_normalized_mse
from tests.losses.test_moco import reference_moco
from tests.losses.test_mocov3 import reference_ctr
from tests.losses.test_simsiam import reference_negative_cosine
from tests.losses.test_swav import reference_sinkhorn

SMALL = dict(
    backbone="selfsup_test_tiny", small_image_stem=False, image_size=16, num_classes=3, projector_hidden_dim=32
)
TWO_VIEWS = [{"num_views": 2}]
MULTI_CROP = [{"num_views": 2}, {"num_views": 2, "relative_size": 0.5}]  # 2 global crops, 2 local ones
BATCH = 6


def build(method_class: type[Method], **options) -> Method:
    """A small method with seeded weights (the SMALL options, overridden by `options`)."""
    torch.manual_seed(0)
    return method_class(**{**SMALL, **options})


def drift_momentum_copies(method: MomentumMethod) -> None:
    """Move the momentum copies away from the online modules they were copied from, as training does: a loss that
    took the online network for the momentum one would then differ."""
    with torch.no_grad():
        for _, copy in method._momentum_pairs:
            for parameter in copy.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))


def step_inputs(method: Method) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Views of a fixed batch, their backbone features as leaves (the gradients compared are theirs), labels."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (BATCH, 1, 20, 20), dtype=torch.uint8, generator=generator)
    views = method.multiview(images, generator)
    features = [feature.detach().requires_grad_() for feature in method.embed(views)]
    return views, features, torch.arange(BATCH) % 3


def assert_same_loss_and_gradient(loss: Tensor, expected: Tensor, features: list[Tensor]) -> None:
    torch.testing.assert_close(loss, expected.float())
    gradients = torch.autograd.grad(loss, features, allow_unused=True)  # None: a view the loss does not train on
    expected_gradients = torch.autograd.grad(expected, features, allow_unused=True)
    for gradient, expected_gradient in zip(gradients, expected_gradients, strict=True):
        assert (gradient is None) == (expected_gradient is None)
        if gradient is not None:
            torch.testing.assert_close(gradient, expected_gradient, rtol=1e-4, atol=1e-6)


def test_moco_contrasts_each_query_with_the_other_views_key_and_the_queue_before_this_batch() -> None:
    """MoCo eq. (1), symmetrised (MoCo v2): the negatives are the queue as it was before this batch, the keys come
    from the momentum encoder without gradient, and only after the loss do they replace the oldest queue entries.
    Keys enqueued first would make each query's positive one of its own negatives."""
    method = build(MoCoV2, views=TWO_VIEWS, queue_size=16, projector_output_dim=8, temperature=0.1)
    drift_momentum_copies(method)
    views, features, labels = step_inputs(method)
    queue = method.queue.keys.clone()
    loss, _ = method.ssl_loss(features, views, labels)

    queries = [F.normalize(method.projector(feature), dim=1) for feature in features]
    with torch.no_grad():
        keys = [F.normalize(method.key_projector(method.key_backbone(view)), dim=1) for view in views]
    expected = (reference_moco(queries[0], keys[1], queue, 0.1) + reference_moco(queries[1], keys[0], queue, 0.1)) / 2
    assert_same_loss_and_gradient(loss, expected, features)
    written = torch.cat([keys[1], keys[0]])  # the positives of the first view's queries, then the second's
    torch.testing.assert_close(method.queue.keys, torch.cat([written, queue[2 * BATCH :]]))


def test_byol_regresses_each_views_prediction_on_the_other_views_target() -> None:
    """BYOL eq. (2) and its mirror: prediction of view 1 against the target network's projection of view 2, and the
    reverse; the target is a constant."""
    method = build(BYOL, views=TWO_VIEWS, projector_output_dim=8, predictor_hidden_dim=32)
    drift_momentum_copies(method)
    views, features, labels = step_inputs(method)
    loss, _ = method.ssl_loss(features, views, labels)

    predictions = method.predictor(method.projector(torch.cat(features))).chunk(2)
    with torch.no_grad():
        targets = method.target_projector(method.target_backbone(torch.cat(views))).chunk(2)
    expected = sum(reference_normalized_mse(predictions[v], targets[1 - v]) for v in (0, 1))
    assert_same_loss_and_gradient(loss, expected, features)


def test_simsiam_predicts_each_views_projection_from_the_other_view_as_a_constant() -> None:
    """SimSiam eq. (4): D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2, with p = h(z) and z = f(x); the gradient
    reaches the backbone through the predictions only, never through the projection used as the target."""
    method = build(SimSiam, views=TWO_VIEWS, projector_output_dim=8, predictor_hidden_dim=4)
    views, features, labels = step_inputs(method)
    loss, metrics = method.ssl_loss(features, views, labels)

    projections = method.projector(torch.cat(features))
    z1, z2 = projections.chunk(2)
    p1, p2 = method.predictor(projections).chunk(2)
    expected = reference_negative_cosine(p1, z2) / 2 + reference_negative_cosine(p2, z1) / 2
    assert_same_loss_and_gradient(loss, expected, features)
    unit = F.normalize(projections.detach().double(), dim=1)
    torch.testing.assert_close(metrics, {"train/output_std": unit.std(dim=0).mean().float()})


def test_mocov3_contrasts_each_views_queries_with_the_other_views_momentum_keys() -> None:
    """MoCo v3 Algorithm 1: ctr(q1, k2) + ctr(q2, k1), q = predictor(projector(backbone(x))) and k from the momentum
    backbone and projector, without gradient."""
    method = build(MoCoV3, views=TWO_VIEWS, projector_output_dim=8, predictor_hidden_dim=32, temperature=0.2)
    drift_momentum_copies(method)
    views, features, labels = step_inputs(method)
    loss, _ = method.ssl_loss(features, views, labels)

    q1, q2 = method.predictor(method.projector(torch.cat(features))).chunk(2)
    with torch.no_grad():
        k1, k2 = method.momentum_projector(method.momentum_backbone(torch.cat(views))).chunk(2)
    expected = reference_ctr(q1, k2, 0.2) + reference_ctr(q2, k1, 0.2)
    assert_same_loss_and_gradient(loss, expected, features)


def reference_cross_view(anchors: Tensor, predictions: Tensor, temperature: float) -> Tensor:
    """NNCLR eq. (2) in float64: -log(exp(nn_i . p_i / T) / sum_k exp(nn_i . p_k / T)), p unit-norm predictions of
    the other view, nn_i a constant."""
    p = F.normalize(predictions.double(), dim=1)
    losses = [
        -torch.log(torch.exp(anchor @ p[i] / temperature) / torch.exp(p @ anchor / temperature).sum())
        for i, anchor in enumerate(anchors.double())
    ]
    return torch.stack(losses).mean()


def brute_force_nearest(queries: Tensor, support: Tensor) -> Tensor:
    """Each query's most cosine-similar support entry, or the query itself where the support set is empty."""
    if support.shape[0] == 0:
        return queries
    return torch.stack([support[max(range(support.shape[0]), key=lambda j: (support[j] @ q).item())] for q in queries])


@pytest.mark.parametrize("written", [0, 10])
def test_nnclr_takes_neighbours_from_the_support_set_before_this_batch_and_as_constants(written: int) -> None:
    """NNCLR eq. (2), symmetrised (Sec. 3): view a's nearest neighbour in the support set as it was before this
    batch (among the entries written so far; none: the embedding itself) against view b's predictions, and the
    reverse. The lookup carries no gradient, and only then are view a's embeddings written."""
    support_set = {"support_size": 20}
    method = build(NNCLR, views=TWO_VIEWS, projector_output_dim=8, predictor_hidden_dim=32, neighbours=support_set)
    method.support_set.enqueue(F.normalize(torch.randn(written, 8), dim=1), torch.arange(written) % 3)
    support = method.support_set.keys[:written].clone()
    views, features, labels = step_inputs(method)
    loss, _ = method.ssl_loss(features, views, labels)

    embeddings = method.projector(torch.cat(features))
    predictions = method.predictor(embeddings).chunk(2)
    z_a, z_b = F.normalize(embeddings.detach().double(), dim=1).chunk(2)
    neighbours_a, neighbours_b = (brute_force_nearest(z, support.double()) for z in (z_a, z_b))
    expected = (
        reference_cross_view(neighbours_a, predictions[1], 0.1)
        + reference_cross_view(neighbours_b, predictions[0], 0.1)
    ) / 2
    assert_same_loss_and_gradient(loss, expected, features)
    torch.testing.assert_close(method.support_set.keys[written : written + BATCH], z_a.float())


def reference_swapped_prediction(scores: list[Tensor], codes: list[Tensor], temperature: float) -> Tensor:
    """SwAV eq. (1) with multi-crop (Sec. 3.2), float64: for each global crop i, the mean over the other crops v of
    -sum_k q_i^(k) log p_v^(k), p_v = softmax(z_v^T C / T); the codes are constants."""
    per_code = []
    for i, code in enumerate(codes):
        terms = []
        for v, crop_scores in enumerate(scores):
            if v != i:
                log_p = crop_scores / temperature - torch.logsumexp(crop_scores / temperature, dim=1, keepdim=True)
                terms.append(-(code * log_p).sum(dim=1).mean())
        per_code.append(torch.stack(terms).mean())
    return torch.stack(per_code).mean()


def test_swav_codes_come_from_the_global_crops_and_the_queue_before_this_batch_without_gradient() -> None:
    """SwAV Sec. 3.1: codes of each global crop by Sinkhorn-Knopp (Algorithm 1) over its scores, preceded by those of
    the queued embeddings of that crop as they were before this batch; the codes are targets, without gradient; each
    crop then predicts the other global crops' codes. Only afterwards is the batch written into each crop's queue."""
    method = build(SwAV, views=MULTI_CROP, projector_output_dim=8, num_prototypes=5, queue_size=12)
    for queue in method.queues:  # full, as after some training
        queue.enqueue(F.normalize(torch.randn(12, 8), dim=1))
    queues = [queue.keys.clone() for queue in method.queues]
    views, features, labels = step_inputs(method)
    loss, _ = method.ssl_loss(features, views, labels)

    embeddings = F.normalize(method.projector(torch.cat(features)), dim=1)
    prototypes = method.prototypes.weight.detach().double()
    scores = (embeddings.double() @ prototypes.T).split(BATCH)
    codes = [  # the queue's rows first, then the batch's, whose codes are the last BATCH rows
        reference_sinkhorn(torch.cat([queue.double() @ prototypes.T, crop.detach()]), 0.05, 3)[-BATCH:]
        for queue, crop in zip(queues, scores, strict=False)  # the global crops: one queue each
    ]
    assert_same_loss_and_gradient(loss, reference_swapped_prediction(list(scores), codes, 0.1), features)
    for queue, before, crop in zip(method.queues, queues, embeddings.detach().split(BATCH), strict=False):
        torch.testing.assert_close(queue.keys, torch.cat([crop, before[BATCH:]]))


def brute_force_k_nearest(targets: Tensor, bank: Tensor, k: int) -> Tensor:
    """(B, k, D): each target's k most cosine-similar bank rows, nearest first."""
    similarity = F.normalize(targets, dim=1) @ F.normalize(bank, dim=1).T
    return torch.stack([bank[row.argsort(descending=True)[:k]] for row in similarity])


NEIGHBOURS = {  # per method: the support set of the test below
    "nnbyol": {"support_size": 20},
    "msf": {"support_size": 20, "num_neighbours": 5, "include_batch": True},
    "nnsiam": {"support_size": 20},
    "mocov3": {"support_size": 20, "num_neighbours": 2},
}


def expected_neighbour_loss(
    name: str, method: Method, views: list[Tensor], features: list[Tensor], support: Tensor
) -> Tensor:
    """Each method's loss from its paper's equation, with its targets replaced by their nearest neighbours in
    `support` (float64); Mean Shift's bank holds this batch's targets too."""
    if name == "nnsiam":  # SimSiam eq. (4) against the neighbours of the stop-gradient projections
        projections = method.projector(torch.cat(features))
        p1, p2 = method.predictor(projections).chunk(2)
        z1, z2 = (brute_force_k_nearest(z, support, 1)[:, 0] for z in projections.detach().double().chunk(2))
        return reference_negative_cosine(p1, z2) / 2 + reference_negative_cosine(p2, z1) / 2
    predicting = features[:1] if name == "msf" else features  # Mean Shift: the strong view alone predicts
    predictions = method.predictor(method.projector(torch.cat(predicting))).double().chunk(len(predicting))
    if name == "mocov3":  # Algorithm 1, each key replaced by its 2 neighbours: the mean of ctr over them
        with torch.no_grad():
            keys = method.momentum_projector(method.momentum_backbone(torch.cat(views))).double().chunk(2)
        nearest = [brute_force_k_nearest(k, support, 2) for k in keys]
        return sum(reference_ctr(predictions[v], nearest[1 - v][:, j], 0.2) for v in (0, 1) for j in (0, 1)) / 2
    target_views = torch.cat(views) if name == "nnbyol" else views[1]  # Mean Shift needs the second view's only
    with torch.no_grad():
        targets = F.normalize(method.target_projector(method.target_backbone(target_views)).double(), dim=1)
    if name == "nnbyol":  # BYOL eq. (2) and its mirror against the neighbours of the targets
        nearest = [brute_force_k_nearest(t, support, 1)[:, 0] for t in targets.chunk(2)]
        return sum(reference_normalized_mse(predictions[v], nearest[1 - v]) for v in (0, 1))
    v = brute_force_k_nearest(targets, torch.cat([support, targets]), 5)  # (B, 5, D), each target among them
    q = F.normalize(predictions[0], dim=1)[:, None]
    return ((q - v) ** 2).sum(dim=2).mean()


@pytest.mark.parametrize("name", sorted(NEIGHBOURS))
def test_neighbour_targets_are_the_support_sets_nearest_as_constants(name: str) -> None:
    """NNBYOL, NNSiam and MoCo v3 with neighbours: each target (BYOL's momentum target, SimSiam's projection, MoCo
    v3's key) replaced by its nearest neighbours in the support set as it was before this batch, the loss the mean
    over them. Mean Shift (Sec. 3): the first view's prediction q against the k = 5 nearest neighbours v_i of the
    second view's target in the memory bank with this batch's targets written in, mean_i ||q/|q| - v_i||^2."""
    options = dict(temperature=0.2) if name == "mocov3" else {}
    method = build(METHODS[name], views=TWO_VIEWS, projector_output_dim=8, predictor_hidden_dim=32,
                   neighbours=NEIGHBOURS[name], **options)  # fmt: skip
    if isinstance(method, MomentumMethod):
        drift_momentum_copies(method)
    method.support_set.enqueue(F.normalize(torch.randn(10, 8), dim=1))
    support = method.support_set.keys[:10].double()
    views, features, labels = step_inputs(method)
    loss, metrics = method.ssl_loss(features, views, labels)
    assert_same_loss_and_gradient(loss, expected_neighbour_loss(name, method, views, features, support), features)
    assert Metric.NN_ACCURACY in metrics
