import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from selfsup.evaluation import knn_predict, knn_sweep
from selfsup.evaluation.online import KnnMonitor
from tests.conftest import RANKS, free_port, start_ranks


def brute_force_knn(queries, bank, labels, num_classes, k, temperature):
    predictions = []
    for query in F.normalize(queries, dim=1):
        similarity = F.normalize(bank, dim=1) @ query
        order = sorted(range(len(bank)), key=lambda i: -similarity[i].item())[:k]
        votes = [0.0] * num_classes
        for i in order:
            votes[labels[i]] += torch.exp(similarity[i] / temperature).item()
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(predictions)


def test_matches_brute_force_reference_exactly() -> None:
    torch.manual_seed(0)
    queries, bank, labels = torch.randn(40, 6), torch.randn(120, 6), torch.randint(0, 4, (120,))
    for k, temperature in ((1, 0.1), (10, 0.07), (50, 0.5)):
        expected = brute_force_knn(queries, bank, labels, 4, k, temperature)
        assert torch.equal(knn_predict(queries, bank, labels, 4, k, temperature, max_elements=7 * 120), expected)


def test_unlabelled_bank_entries_never_vote_and_k_is_capped() -> None:
    bank = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    labels = torch.tensor([-1, 1, 0])
    assert knn_predict(torch.tensor([[1.0, 0.0]]), bank, labels, 2, k=1).tolist() == [1]
    assert knn_predict(torch.tensor([[0.0, 1.0]]), bank, labels, 2, k=200).tolist() == [0]


def test_sweep_matches_brute_force_for_every_k_and_temperature() -> None:
    torch.manual_seed(1)
    queries, bank, labels = torch.randn(30, 5), torch.randn(90, 5), torch.randint(0, 3, (90,))
    query_labels = torch.randint(0, 3, (30,))
    query_labels[0] = -1  # padding: not scored
    rows = knn_sweep(queries, query_labels, bank, labels, 3, ks=(1, 7, 40), temperatures=(0.02, 0.5))
    assert [(r["k"], r["temperature"]) for r in rows] == [(k, t) for k in (1, 7, 40) for t in (0.02, 0.5)]
    for row in rows:
        expected = brute_force_knn(queries[1:], bank, labels, 3, row["k"], row["temperature"])
        assert row["top1"] == pytest.approx((expected == query_labels[1:]).float().mean().item())


def sharded_problem() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(2)
    queries, bank = torch.randn(50, 8, generator=generator), torch.randn(301, 8, generator=generator)
    labels = torch.randint(0, 5, (301,), generator=generator)
    labels[::17] = -1  # padding and unlabelled entries are in the bank too
    return queries, torch.randint(0, 5, (50,), generator=generator), bank, labels


def interleaved_shard(x: torch.Tensor, rank: int, pad_value: float = -1) -> torch.Tensor:
    """Rank `rank`'s share of 2 ranks as `ShardedBatchSampler` deals evaluation data: every second row, padded at the
    end (labels -1) so that both ranks hold the same number of rows."""
    padded = torch.cat([x, torch.full((x.shape[0] % 2, *x.shape[1:]), pad_value, dtype=x.dtype)])
    return padded[rank::2]


def _sharded_worker(rank: int, port: int, results) -> None:
    import selfsup.evaluation.knn as knn

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    queries, query_labels, bank, labels = sharded_problem()
    largest_gather = []
    gather = knn.gather
    knn.gather = lambda x: largest_gather.append(x.numel()) or gather(x)
    # the sweep: unequal contiguous shards, each smaller than the largest k; queries split unevenly too
    shard, mine = (slice(0, 151), slice(0, 20)) if rank == 0 else (slice(151, None), slice(20, None))
    sweep = knn_sweep(queries[mine], query_labels[mine], bank[shard], labels[shard], 5, ks=(10, 200), sharded=True)
    # a search chunk smaller than a shard: one query per round and per merge, the same number of merges on both ranks
    tiny = knn_sweep(queries[mine], query_labels[mine], bank[shard], labels[shard], 5, (10, 200), (0.1,), True, 100)
    # the monitor: the validation loaders' interleaved, padded shards, searched in rounds of 2 queries per rank
    largest_gather.clear()
    monitor = KnnMonitor(5, k=20, temperature=0.1, max_elements=2 * 151 * 2)
    monitor.add_bank(interleaved_shard(bank, rank, 0), interleaved_shard(labels, rank))
    monitor.add_queries(interleaved_shard(queries, rank, 0), interleaved_shard(query_labels, rank))
    results.put((rank, sweep, tiny, monitor.compute(), monitor.held_rows, max(largest_gather)))
    dist.destroy_process_group()


def test_sharded_sweep_and_monitor_over_two_ranks_equal_one_process_and_hold_only_their_shards() -> None:
    """Each rank holds half the bank and half the queries, and never gathers more than a search chunk (here 80
    numbers, a fraction of one rank's 151 x 8 bank shard; on main the monitor gathered the whole bank)."""
    queries, query_labels, bank, labels = sharded_problem()
    expected_sweep = knn_sweep(queries, query_labels, bank, labels, 5, ks=(10, 200))
    expected_monitor = KnnMonitor(5, k=20, temperature=0.1)
    expected_monitor.add_bank(bank, labels)
    expected_monitor.add_queries(queries, query_labels)
    results = RANKS.SimpleQueue()
    start_ranks(_sharded_worker, (free_port(), results), join=True)
    for _, sweep, tiny, accuracy, held_rows, largest_gather in sorted(results.get() for _ in range(2)):
        assert sweep == expected_sweep
        assert tiny == [row for row in expected_sweep if row["temperature"] == 0.1]
        assert accuracy == expected_monitor.compute()
        assert held_rows == 151 + 25  # its bank shard (padded) and its query shard
        assert largest_gather <= 4 * 20  # a round's 4 queries x k=20 candidates


def test_exactly_k_neighbours_vote() -> None:
    """The third neighbour would flip the vote of the first two: with k=2 it must not count (with k=3 it does), in
    a single prediction as in the sweep."""
    query = torch.tensor([[1.0, 0.0]])
    angles = torch.tensor([0.45, 0.65, 0.8, 3.0])  # similarities cos(angle): 0.90, 0.80, 0.70, -0.99
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 1, 1, 0])
    assert knn_predict(query, bank, labels, 2, k=2, temperature=1.0).tolist() == [0]
    assert knn_predict(query, bank, labels, 2, k=3, temperature=1.0).tolist() == [1]
    rows = knn_sweep(query, torch.tensor([0]), bank, labels, 2, ks=(2, 3), temperatures=(1.0,))
    assert [row["top1"] for row in rows] == [1.0, 0.0]
