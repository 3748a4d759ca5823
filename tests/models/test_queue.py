import pytest
import torch
import torch.distributed as dist

from selfsup.errors import ConfigurationError
from selfsup.models.queue import EmbeddingQueue
from tests.conftest import RANKS, free_port, start_ranks


def test_fifo_order_and_wrap_around() -> None:
    queue = EmbeddingQueue(size=5, dim=2)
    first = torch.arange(6.0).view(3, 2)
    queue.enqueue(first, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(queue.keys[:3], first)
    assert queue.pointer.item() == 3
    second = -torch.arange(6.0).view(3, 2) - 1
    queue.enqueue(second, torch.tensor([3, 4, 5]))
    torch.testing.assert_close(queue.keys[3:], second[:2])  # slots 3, 4
    torch.testing.assert_close(queue.keys[0], second[2])  # wrapped into slot 0, the oldest
    assert queue.labels.tolist() == [5, 1, 2, 3, 4] and queue.pointer.item() == 1


def test_batch_larger_than_queue_keeps_the_newest_keys() -> None:
    queue = EmbeddingQueue(size=3, dim=1)
    queue.enqueue(torch.arange(7.0)[:, None])
    assert sorted(queue.keys.squeeze(1).tolist()) == [4.0, 5.0, 6.0]


def test_state_round_trip() -> None:
    queue = EmbeddingQueue(size=4, dim=3)
    queue.enqueue(torch.randn(3, 3), torch.tensor([7, 8, 9]))
    restored = EmbeddingQueue(size=4, dim=3)
    restored.load_state_dict(queue.state_dict())
    for name, value in queue.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value)


def _ddp_worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    queue = EmbeddingQueue(size=7, dim=2)
    for step in range(3):  # 3 steps x 2 ranks x 2 keys = 12 keys: wraps around a queue of 7
        keys = torch.full((2, 2), float(10 * step + rank))
        queue.enqueue(keys, torch.full((2,), 10 * step + rank))
    results.put((rank, queue.state_dict()["keys"].tolist(), queue.labels.tolist(), queue.pointer.item()))
    dist.destroy_process_group()


def test_two_ranks_hold_identical_queues_equal_to_single_process_and_resumable_anywhere() -> None:
    results = RANKS.SimpleQueue()
    start_ranks(_ddp_worker, (free_port(), results), join=True)
    (_, keys0, labels0, pointer0), (_, keys1, labels1, pointer1) = sorted(results.get() for _ in range(2))
    assert keys0 == keys1 and labels0 == labels1 and pointer0 == pointer1

    single = EmbeddingQueue(size=7, dim=2)
    for step in range(3):  # one process enqueuing the concatenated batch, rank 0's keys first
        single.enqueue(torch.cat([torch.full((2, 2), float(10 * step + r)) for r in range(2)]))
    assert single.keys.tolist() == keys0 and single.pointer.item() == pointer0

    resumed = EmbeddingQueue(size=7, dim=2)  # a checkpoint from 2 ranks loads into 1 (or any number)
    resumed.load_state_dict(
        {"keys": torch.tensor(keys0), "labels": torch.tensor(labels0), "pointer": torch.tensor(pointer0)}
    )
    assert resumed.keys.tolist() == keys0


def test_rejects_empty_queue() -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        EmbeddingQueue(size=0, dim=4)


def test_filled_counts_written_slots_up_to_the_size() -> None:
    queue = EmbeddingQueue(size=5, dim=2)
    counts = []
    for _ in range(3):
        queue.enqueue(torch.randn(2, 2))
        counts.append((queue.filled.item(), queue.is_full))
    assert counts == [(2, False), (4, False), (5, True)]
    legacy = EmbeddingQueue(size=5, dim=2)  # a MoCo checkpoint from before `filled` existed: its queue was full
    legacy.load_state_dict({k: v for k, v in queue.state_dict().items() if k != "filled"})
    assert legacy.is_full
