"""The support set of nearest-neighbour methods: an exhaustive lookup of the k nearest written targets, written before
the lookup (Mean Shift) or after it (NNCLR), its neighbour accuracy, and the settings' one-line errors."""

import pytest
import torch
import torch.nn.functional as F

from selfsup.errors import ConfigurationError
from selfsup.models.neighbours import NearestNeighbours, SupportSet, neighbour_accuracy
from selfsup.models.queue import EmbeddingQueue


def brute_force_nearest(target: torch.Tensor, written: torch.Tensor, k: int) -> list[int]:
    """The indices of the k written entries most cosine-similar to `target`, nearest first."""
    return sorted(range(written.shape[0]), key=lambda j: -F.cosine_similarity(target, written[j], dim=0).item())[:k]


def test_the_k_nearest_are_the_brute_force_nearest_among_written_entries_and_carry_no_gradient() -> None:
    torch.manual_seed(0)
    support = SupportSet(size=64, dim=8, num_neighbours=3)
    written = F.normalize(torch.randn(40, 8), dim=1)
    support.enqueue(written, torch.arange(40))
    targets = torch.randn(10, 8, requires_grad=True)
    found = support.nearest(targets)
    expected = [brute_force_nearest(target, written, 3) for target in targets.detach()]
    assert found.labels.tolist() == expected  # never one of the 24 random initial slots
    torch.testing.assert_close(found.embeddings, written[torch.tensor(expected)])
    assert not found.embeddings.requires_grad


def test_the_lookup_is_exact_under_bf16_autocast() -> None:
    """Mixed precision (the GPU trainer's bf16) must not change which entries are nearest: in bf16 the similarities
    of a large support set tie or swap."""
    torch.manual_seed(0)
    support = SupportSet(size=4096, dim=64, num_neighbours=5)
    support.enqueue(F.normalize(torch.randn(4096, 64), dim=1))
    targets = torch.randn(64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = support.nearest(targets).embeddings
    torch.testing.assert_close(under_autocast, support.nearest(targets).embeddings, rtol=0, atol=0)


def test_a_target_stands_in_for_the_neighbours_not_written_yet() -> None:
    support = SupportSet(size=8, dim=4, num_neighbours=3)
    targets = F.normalize(torch.randn(3, 4), dim=1)
    empty = support.nearest(targets)
    torch.testing.assert_close(empty.embeddings, targets[:, None].expand(3, 3, 4))
    assert (empty.labels == -1).all()
    support.enqueue(F.normalize(torch.randn(2, 4), dim=1), torch.tensor([5, 6]))
    partial = support.nearest(targets)
    assert sorted(partial.labels[0, :2].tolist()) == [5, 6] and partial.labels[0, 2].item() == -1
    torch.testing.assert_close(partial.embeddings[:, 2], targets)


@pytest.mark.parametrize("include_batch", [False, True])
def test_the_batch_joins_the_support_set_after_the_lookup_or_before_it(include_batch: bool) -> None:
    """NNCLR writes after the lookup, so a target is never its own neighbour; Mean Shift writes before it, so each
    target is its own nearest neighbour. Either way the first view's targets are what is written."""
    torch.manual_seed(0)
    support = SupportSet(size=32, dim=8, num_neighbours=2, include_batch=include_batch)
    support.enqueue(F.normalize(torch.randn(16, 8), dim=1), torch.full((16,), 7))
    first, second = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    neighbours, metrics = support.swap([first, second], torch.arange(4))
    is_itself = torch.isclose(neighbours[0][:, 0], first).all(dim=1)
    assert is_itself.all() if include_batch else not is_itself.any()
    torch.testing.assert_close(support.keys[16:20], first)
    assert support.filled.item() == 20  # the first view's targets only
    purity = 0.5 if include_batch else 0.0  # itself, then one of the label-7 entries; or two label-7 entries
    assert metrics["train/nn_accuracy"].item() == purity


def test_neighbour_accuracy_counts_only_known_labels_and_is_nan_without_any() -> None:
    neighbours, labels = torch.tensor([[0, 0], [1, 2], [-1, -1], [2, 2]]), torch.tensor([0, 2, 1, -1])
    assert neighbour_accuracy(neighbours, labels).item() == 0.75  # 4 known pairs: (0, 0) twice, (1, 2), (2, 2)
    assert neighbour_accuracy(torch.full((4, 2), -1), labels).isnan()  # an empty support set: nothing to score


def test_a_support_set_loads_the_state_of_the_queue_nnclr_checkpoints_hold() -> None:
    queue = EmbeddingQueue(size=6, dim=3)
    queue.enqueue(F.normalize(torch.randn(4, 3), dim=1), torch.arange(4))
    support = SupportSet(size=6, dim=3)
    support.load_state_dict(queue.state_dict())
    for name, value in queue.state_dict().items():
        torch.testing.assert_close(support.state_dict()[name], value)


def test_settings_are_checked_with_one_line_naming_the_option() -> None:
    assert NearestNeighbours().support_set(8) is None  # off by default: the targets are their own
    too_many = r"^neighbours.num_neighbours \(5\) must not exceed support_size \(4\)"
    with pytest.raises(ConfigurationError, match=too_many):
        NearestNeighbours(support_size=4, num_neighbours=5)
    with pytest.raises(ConfigurationError, match="neighbours.support_size must be at least 0, got -1"):
        NearestNeighbours(support_size=-1)
