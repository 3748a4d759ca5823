import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from selfsup.evaluation import knn_predict, knn_sweep
from tests.conftest import free_port


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


def _sharded_worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    queries, query_labels, bank, labels = sharded_problem()
    shard = slice(0, 151) if rank == 0 else slice(151, None)  # unequal shards, each smaller than the largest k
    rows = knn_sweep(queries, query_labels, bank[shard], labels[shard], 5, ks=(10, 200), sharded=True)
    results.put((rank, rows))
    dist.destroy_process_group()


def test_bank_sharded_over_two_ranks_equals_one_process() -> None:
    queries, query_labels, bank, labels = sharded_problem()
    expected = knn_sweep(queries, query_labels, bank, labels, 5, ks=(10, 200))
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_sharded_worker, args=(free_port(), results), nprocs=2, join=True)
    for _, rows in sorted(results.get() for _ in range(2)):
        assert rows == expected


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
