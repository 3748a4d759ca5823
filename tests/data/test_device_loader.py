import torch

from selfsup.data import Split
from selfsup.data.device_loader import DeviceBatchLoader, ShardedBatchSampler


def epoch_indices(sampler: ShardedBatchSampler, epoch: int) -> torch.Tensor:
    sampler.set_epoch(epoch)
    return torch.cat(list(sampler))


def test_training_shards_are_disjoint_equal_and_reshuffled_each_epoch() -> None:
    ranks = [ShardedBatchSampler(103, 8, shuffle=True, drop_last=True, seed=7, rank=r, world_size=2) for r in range(2)]
    shards = [epoch_indices(s, 0) for s in ranks]
    assert [len(s) for s in ranks] == [6, 6] and [len(s) for s in shards] == [48, 48]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(epoch_indices(ranks[0], 0), shards[0])  # same epoch, same order (resume)
    assert not torch.equal(epoch_indices(ranks[0], 1), shards[0])


def test_evaluation_covers_every_sample_once_with_padding() -> None:
    ranks = [ShardedBatchSampler(11, 4, shuffle=False, drop_last=False, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in ranks] == [2, 2]
    everything = torch.cat([epoch_indices(s, 0) for s in ranks])
    assert sorted(everything[everything >= 0].tolist()) == list(range(11))
    assert (everything == -1).sum() == 1


def test_loader_yields_matching_images_and_labels_and_marks_padding() -> None:
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    split = Split(images, torch.arange(5) * 10)
    loader = DeviceBatchLoader(split, ShardedBatchSampler(5, 2, shuffle=False, drop_last=False, rank=1, world_size=2))
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    labels = torch.cat([b[1] for b in batches])
    assert labels.tolist() == [10, 30, -1]
    assert torch.cat([b[0] for b in batches])[:2, 0, 0, 0].tolist() == [1, 3]
