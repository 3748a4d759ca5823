"""Feature transformation (Zhu et al., ICCV 2021, Sec. 4) against plain float64 loops written from the paper's two
transformations, in-batch (SimCLR) and against a queue (MoCo v2), with the random coefficients replayed from a
seeded generator; the edge cases; 2 gloo ranks equal one process; the combinations refused."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigurationError
from selfsup.losses import InfoNCELoss, queue_info_nce, queue_info_nce_and_hardness
from selfsup.methods import METHODS
from selfsup.models.feature_transformation import FeatureTransformation, TransformationDraw, transform_logits
from selfsup.models.hard_negative_mixing import HardNegativeMixing
from selfsup.runs import Metric
from tests.conftest import RANKS, free_port, start_ranks

FT = FeatureTransformation(positive_alpha=2.0, negative_alpha=1.6)  # the authors' ImageNet setting


def unit(x: Tensor) -> Tensor:
    return x / x.norm()


def extrapolated(query: Tensor, key: Tensor, coefficient: Tensor) -> tuple[Tensor, Tensor]:
    """Sec. 4.1: z^_q = l z_q + (1 - l) z_k+ and z^_k+ = l z_k+ + (1 - l) z_q, on the unit sphere."""
    return unit(coefficient * query + (1 - coefficient) * key), unit(coefficient * key + (1 - coefficient) * query)


def reference_simclr_ft(
    z_a: Tensor, z_b: Tensor, temperature: float, draw: TransformationDraw, decoupled: bool = False
) -> Tensor:
    """SimCLR eq. (1) as a loop over the 2N anchors, each pair (i, i + N) extrapolated with lambda_ex[i mod N], each
    candidate k replaced by unit(l_k z_k + (1 - l_k) z_partner[k]), a negative of anchor i unless one of its parts
    is anchor i or its positive."""
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    n2 = z.shape[0]
    negatives = [
        unit(draw.interpolation[k] * z[k] + (1 - draw.interpolation[k]) * z[draw.partner[k]]) for k in range(n2)
    ]
    losses = []
    for i in range(n2):
        j = (i + n2 // 2) % n2
        query, key = extrapolated(z[i], z[j], draw.extrapolation[i % (n2 // 2)])
        positive = torch.exp(query @ key / temperature)
        excluded = {i, j}
        others = [
            torch.exp(query @ negatives[k] / temperature)
            for k in range(n2)
            if k not in excluded and int(draw.partner[k]) not in excluded
        ]
        denominator = torch.stack(others).sum() + (0 if decoupled else positive)
        losses.append(-torch.log(positive / denominator))
    return torch.stack(losses).mean()


def reference_moco_ft(queries: Tensor, keys: Tensor, queue: Tensor, temperature: float, draw: TransformationDraw):
    """MoCo eq. (1) as a loop over the queries: query and key extrapolated apart (the key held constant, its query
    share keeping the query's gradient), the queue replaced by its interpolations."""
    negatives = torch.stack(
        [
            unit(draw.interpolation[k] * queue[k] + (1 - draw.interpolation[k]) * queue[draw.partner[k]])
            for k in range(len(queue))
        ]
    )
    losses = []
    for query, key, coefficient in zip(queries, keys.detach(), draw.extrapolation, strict=True):
        query, key = extrapolated(query, key, coefficient)
        positive = torch.exp(query @ key / temperature)
        losses.append(-torch.log(positive / (positive + torch.exp(negatives @ query / temperature).sum())))
    return torch.stack(losses).mean()


def replayed(
    transformation: FeatureTransformation, num_pairs: int, num_negatives: int, seed: int
) -> TransformationDraw:
    """The coefficients the loss drew from torch's global generator seeded with `seed`, in float64."""
    draw = transformation.draw(num_pairs, num_negatives, torch.device("cpu"), torch.Generator().manual_seed(seed))
    return TransformationDraw(draw.extrapolation.double(), draw.interpolation.double(), draw.partner)


@pytest.mark.parametrize("decoupled", [False, True])
def test_in_batch_value_and_gradient_match_the_paper(decoupled: bool) -> None:
    z_a = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    z_b = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    torch.manual_seed(7)
    loss = InfoNCELoss(0.2, decoupled)(z_a, z_b, transformation=FT)
    expected = reference_simclr_ft(z_a.double(), z_b.double(), 0.2, replayed(FT, 5, 10, seed=7), decoupled)
    torch.testing.assert_close(loss.double(), expected)
    for gradient, expected_gradient in zip(
        torch.autograd.grad(loss, [z_a, z_b]), torch.autograd.grad(expected, [z_a, z_b]), strict=True
    ):
        torch.testing.assert_close(gradient.double(), expected_gradient.double(), rtol=1e-4, atol=1e-6)


def test_queue_value_and_gradient_match_the_paper() -> None:
    """The gradient reaches the query through z^_q and through its share (1 - lambda_ex) of z^_k+, as in the
    authors' code; keys and queue are constants."""
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(4, 16, generator=generator), dim=1).requires_grad_()
    keys, queue = F.normalize(torch.randn(4, 16, generator=generator), dim=1), F.normalize(torch.randn(24, 16), dim=1)
    torch.manual_seed(3)
    loss = queue_info_nce(queries, keys, queue, 0.2, transformation=FT)
    expected = reference_moco_ft(queries.double(), keys.double(), queue.double(), 0.2, replayed(FT, 4, 24, seed=3))
    torch.testing.assert_close(loss.double(), expected)
    gradient, expected_gradient = torch.autograd.grad(loss, queries)[0], torch.autograd.grad(expected, queries)[0]
    torch.testing.assert_close(gradient.double(), expected_gradient.double(), rtol=1e-4, atol=1e-6)


def test_off_and_identity_coefficients_give_the_untransformed_loss() -> None:
    """Both alphas 0 is off (no transformation, the plain loss); lambda_ex = 1 and lambda_in = 1 leave every feature
    where it was, so the loss is the untransformed one; before start_epoch it is off."""
    assert FeatureTransformation().at_epoch(5) is None
    assert FeatureTransformation(positive_alpha=1.0, start_epoch=2).at_epoch(1) is None
    assert FeatureTransformation(negative_alpha=1.0, start_epoch=2).at_epoch(2) is not None
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(4, 8, generator=generator, dtype=torch.float64), dim=1)
    keys = F.normalize(torch.randn(4, 8, generator=generator, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(12, 8, generator=generator, dtype=torch.float64), dim=1)
    plain, hardness = queue_info_nce_and_hardness(queries, keys, queue, 0.2)
    identity = TransformationDraw(torch.ones(4), torch.ones(12), torch.randperm(12, generator=generator))
    transformed = transform_logits(queries, keys, queue, identity)
    logits = torch.cat([transformed.positive[:, None], transformed.negatives], dim=1) / 0.2
    torch.testing.assert_close(F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)), plain)
    torch.testing.assert_close(transformed.hardness[Metric.HARD_NEGATIVE_SIM], hardness[Metric.HARD_NEGATIVE_SIM])
    torch.testing.assert_close(transformed.hardness[Metric.POSITIVE_SIM_DROP], torch.zeros((), dtype=torch.float64))


def test_each_half_alone_and_what_it_logs() -> None:
    """Extrapolation alone keeps the real negatives and lowers every positive's cosine (lambda_ex >= 1 on unit
    vectors); interpolation alone keeps the positives; the synthetic-negative metrics come with interpolation."""
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    criterion = InfoNCELoss(0.2)
    plain, plain_hardness = criterion.loss_and_hardness(z_a, z_b)
    torch.manual_seed(0)
    harder, hardness = criterion.loss_and_hardness(z_a, z_b, transformation=FeatureTransformation(positive_alpha=2.0))
    assert harder > plain and hardness[Metric.POSITIVE_SIM_DROP] > 0
    assert set(hardness) == {Metric.HARD_NEGATIVE_SIM, Metric.POSITIVE_SIM_DROP}
    torch.testing.assert_close(hardness[Metric.HARD_NEGATIVE_SIM], plain_hardness[Metric.HARD_NEGATIVE_SIM])
    _, hardness = criterion.loss_and_hardness(z_a, z_b, transformation=FeatureTransformation(negative_alpha=1.0))
    assert set(hardness) == {Metric.HARD_NEGATIVE_SIM, Metric.SYNTHETIC_NEGATIVE_SIM, Metric.SYNTHETIC_HARDER_FRACTION}
    assert 0 <= hardness[Metric.SYNTHETIC_HARDER_FRACTION] <= 1
    queries, keys = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    draw = TransformationDraw(1 + torch.rand(6, generator=generator), None, None)
    transformed = transform_logits(queries, keys, queries, draw)
    assert ((queries * keys).sum(dim=1) >= transformed.positive - 1e-6).all()


def test_the_coefficients_follow_the_paper_distributions() -> None:
    """lambda_ex = 1 + Beta(a, a) in [1, 2] with mean 1.5 and variance 1 / (4 (2a + 1)); lambda_in ~ Beta(a, a);
    the partners are a permutation; the same generator state gives the same draw."""
    draw = FT.draw(20000, 20000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert draw.extrapolation.min() >= 1 and draw.extrapolation.max() <= 2
    assert draw.extrapolation.mean().item() == pytest.approx(1.5, abs=0.01)
    assert draw.extrapolation.var().item() == pytest.approx(1 / 20, rel=0.05)
    assert draw.interpolation.var().item() == pytest.approx(1 / (4 * 4.2), rel=0.05)
    assert torch.equal(draw.partner.sort().values, torch.arange(20000))
    again = FT.draw(20000, 20000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(draw, again, strict=True))


def _ddp_worker(rank: int, world_size: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)  # the global batch
    local = slice(rank * 4, (rank + 1) * 4)
    results = []
    for decoupled in (False, True):
        mine_a, mine_b = z_a[local].clone().requires_grad_(), z_b[local].clone().requires_grad_()
        torch.manual_seed(5)  # every rank's global generator in the state of the single process's
        loss = InfoNCELoss(0.2, decoupled)(mine_a, mine_b, transformation=FT)
        (loss / world_size).backward()  # DDP averages the ranks' gradients
        results.append((loss.item(), mine_a.grad.tolist(), mine_b.grad.tolist()))
    queue.put((rank, results))
    dist.destroy_process_group()


def test_two_process_ddp_equals_single_process() -> None:
    """Each rank draws the coefficients of the global batch and takes its own: 2 ranks seeded alike draw what one
    process draws, and their mean loss and gradients are the single process's."""
    queue = RANKS.SimpleQueue()
    start_ranks(_ddp_worker, (2, free_port(), queue), join=True)
    ranks = sorted(queue.get() for _ in range(2))
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    for case, decoupled in enumerate((False, True)):
        one_a, one_b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
        torch.manual_seed(5)
        loss = InfoNCELoss(0.2, decoupled)(one_a, one_b, transformation=FT)
        loss.backward()
        assert sum(r[1][case][0] for r in ranks) / 2 == pytest.approx(loss.item(), rel=1e-5)
        torch.testing.assert_close(torch.tensor([row for r in ranks for row in r[1][case][1]]), one_a.grad)
        torch.testing.assert_close(torch.tensor([row for r in ranks for row in r[1][case][2]]), one_b.grad)


TINY = dict(backbone="selfsup_test_tiny", small_image_stem=False, image_size=16, num_classes=3)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("simclr", dict(transformation={"positive_alpha": -1}), "transformation.positive_alpha must be at least 0"),
        ("simclr", dict(transformation=FT, mixing={"num_hard": 4}), "transformation and mixing do not combine"),
        ("mochi", dict(transformation={"negative_alpha": 1.0}), "transformation and mixing do not combine"),
        ("simclr", dict(transformation=FT, neighbours={"support_size": 8}), "transformation and neighbours do not"),
    ],
)
def test_refused_in_one_line(name: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        METHODS[name](**TINY, **options)
    assert "\n" not in str(error.value)


def test_the_losses_refuse_mixing_with_a_transformation() -> None:
    """Called from Python, the losses took both and dropped the mixing without a word (the methods refuse the pair
    when they are built)."""
    z_a, z_b = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    mixing, transformation = HardNegativeMixing(4, 4, 2), FeatureTransformation(positive_alpha=2.0)
    with pytest.raises(ConfigurationError, match="transformation and mixing do not combine"):
        InfoNCELoss(0.2)(z_a, z_b, mixing=mixing, transformation=transformation)
    with pytest.raises(ConfigurationError, match="transformation and mixing do not combine"):
        queue_info_nce(
            z_a, z_b, F.normalize(torch.randn(10, 8), dim=1), 0.2, mixing=mixing, transformation=transformation
        )
