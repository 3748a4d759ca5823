import pytest
import torch
import torch.nn.functional as F

from selfsup.errors import ConfigurationError
from selfsup.losses import queue_info_nce, queue_info_nce_and_hardness
from selfsup.models.hard_negative_mixing import HardNegativeMixing, mix_hard_negatives


def setup(b: int = 4, k: int = 12, d: int = 16):
    torch.manual_seed(0)
    return F.normalize(torch.randn(b, d), dim=1), F.normalize(torch.randn(k, d), dim=1)


def test_shapes_unit_norm_and_no_gradient() -> None:
    queries, negatives = setup()
    queries.requires_grad_(True)
    mixed = mix_hard_negatives(queries, negatives, num_hard=5, num_mixed=6, num_query_mixed=3)
    assert mixed.negatives.shape == (4, 9, 16)
    torch.testing.assert_close(mixed.negatives.norm(dim=2), torch.ones(4, 9))
    assert not mixed.negatives.requires_grad  # no gradient into the mixing or the queue
    assert 0.0 <= mixed.harder_fraction.item() <= 1.0


def test_synthetic_negatives_lie_in_the_span_of_the_hard_negatives_and_query() -> None:
    queries, negatives = setup()
    num_hard = 3
    mixed = mix_hard_negatives(queries, negatives, num_hard=num_hard, num_mixed=5, num_query_mixed=5)
    hardest = (queries @ negatives.T).topk(num_hard, dim=1).indices
    for i in range(queries.shape[0]):
        pair_basis = negatives[hardest[i]].T  # (D, N)
        query_basis = torch.cat([pair_basis, queries[i][:, None]], dim=1)
        for j, basis in ((slice(0, 5), pair_basis), (slice(5, 10), query_basis)):
            target = mixed.negatives[i, j].T
            coefficients = torch.linalg.lstsq(basis, target).solution
            torch.testing.assert_close(basis @ coefficients, target, atol=1e-5, rtol=0)


def test_query_share_of_query_mixtures_is_below_one_half() -> None:
    """With the query orthogonal to orthonormal negatives, coefficients are read off directly: beta < 0.5."""
    eye = torch.eye(8)
    queries, negatives = eye[:1], eye[1:]
    mixed = mix_hard_negatives(queries, negatives, num_hard=4, num_mixed=0, num_query_mixed=500)
    query_part = mixed.negatives[0, :, 0]
    negative_part = mixed.negatives[0, :, 1:].abs().amax(dim=1)
    assert (query_part < negative_part).all()  # beta / (1 - beta) < 1
    assert (query_part > 0).all()


def test_no_mixing_gives_plain_moco_loss_and_synthetic_negatives_make_it_harder() -> None:
    """The hardest queued key's similarity is reported with and without mixing."""
    queries, keys = setup(4, 1, 128)[0], setup(4, 1, 128)[0].flip(0)
    queue = F.normalize(torch.randn(32, 128, generator=torch.Generator().manual_seed(1)), dim=1)
    plain, hardness = queue_info_nce_and_hardness(queries, keys, queue, 0.2)
    hardest = torch.stack([max(query @ key for key in queue) for query in queries]).mean()
    torch.testing.assert_close(hardness, {"train/hard_negative_sim": hardest})
    empty = HardNegativeMixing(num_hard=8)  # nothing to mix: s = s' = 0
    torch.testing.assert_close(queue_info_nce(queries, keys, queue, 0.2, mixing=empty), plain)
    torch.manual_seed(1)
    harder, mixed = queue_info_nce_and_hardness(queries, keys, queue, 0.2, mixing=HardNegativeMixing(8, 4, 2))
    assert harder > plain
    torch.testing.assert_close(mixed["train/hard_negative_sim"], hardest)
    torch.manual_seed(1)  # the same draws
    torch.testing.assert_close(mixed, mix_hard_negatives(queries, queue, 8, 4, 2).metrics())


def test_mixing_starts_at_its_epoch_and_rejects_negative_settings() -> None:
    mixing = HardNegativeMixing(num_hard=8, num_mixed=4, start_epoch=2)
    assert mixing.at_epoch(1) is None and mixing.at_epoch(2) is mixing
    assert HardNegativeMixing().at_epoch(5) is None  # the default mixes nothing
    assert HardNegativeMixing.from_dict({"num_hard": 8, "num_mixed": 4, "start_epoch": 2}) == mixing
    with pytest.raises(ConfigurationError, match="mixing.num_mixed must be at least 0"):
        HardNegativeMixing(num_hard=8, num_mixed=-1)


def test_masked_candidates_are_never_mixed() -> None:
    """In-batch negatives: a query's own embedding (similarity 1) is a candidate but masked out."""
    queries, negatives = setup(b=1, k=6)
    candidates = torch.cat([queries, negatives])  # column 0 is the query itself
    mask = torch.ones(1, 7, dtype=torch.bool)
    mask[0, 0] = False
    mixed = mix_hard_negatives(queries, candidates, num_hard=3, num_mixed=20, num_query_mixed=0, negative_mask=mask)
    assert mixed.hardest_similarity < 0.99
    hardest = (queries @ negatives.T).topk(3, dim=1).indices[0]
    basis = negatives[hardest].T
    target = mixed.negatives[0].T
    torch.testing.assert_close(basis @ torch.linalg.lstsq(basis, target).solution, target, atol=1e-5, rtol=0)
