"""Weighted kNN classification of frozen features: the online monitor and the offline evaluator's sweep.

The vote follows "Unsupervised Feature Learning via Non-Parametric Instance Discrimination" (Wu et al.,
CVPR 2018): each of the k most cosine-similar training features votes for its label with weight
exp(similarity / T). k=200 and T=0.1 are the usual defaults (InstDisc, solo-learn, lightly).

The neighbour search is chunked over queries so that a (chunk, bank) similarity matrix stays under a fixed
number of elements, whatever the bank's size. With `sharded=True` the queries and the bank are both split across
ranks, each rank holding its own part, and nothing is ever gathered whole: the queries travel in rounds, every
rank contributing a chunk; each rank finds the round's top k in its bank shard, the candidates of all ranks are
gathered and merged, and every rank keeps the neighbours of its own queries, those one process would find in the
whole bank. Memory per rank: its shards, plus a round of queries and its (round, shard) similarities, which the
chunk size keeps under `max_elements` whatever the number of ranks.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import all_reduce, gather, rank, world_size

KNN_KS = (10, 20, 100, 200)
KNN_TEMPERATURES = (0.02, 0.07, 0.1)


@torch.no_grad()
def top_neighbours(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    k: int,
    sharded: bool = False,
    max_elements: int = 2**27,
) -> tuple[Tensor, Tensor]:
    """Cosine similarities and labels (Q, k) of each query's k nearest labelled bank entries, most similar first.

    Bank entries labelled -1 (unlabelled or padding) are never neighbours: their similarity is -inf, which
    gives them no weight in a vote. With `sharded=True` every rank passes its own queries and its own part of
    the bank (any sizes), and gets the neighbours of its queries in the union of the bank parts.
    """
    if not sharded or world_size() == 1:
        return _search(queries, bank, bank_labels, k, max_elements)
    sizes = torch.tensor([bank.shape[0], queries.shape[0]], device=bank.device)
    largest_shard, most_queries = all_reduce(sizes, "max").tolist()
    chunk = max(1, min(most_queries, max_elements // (world_size() * max(1, largest_shard))))  # (world x chunk, shard)
    rounds = -(-most_queries // chunk)
    similarities, labels = [queries.new_zeros(0, k)], [bank_labels.new_zeros(0, k)]  # no queries: no neighbours
    for start in range(0, rounds * chunk, chunk):
        mine = queries[start : start + chunk]
        padded = F.pad(mine, (0, 0, 0, chunk - mine.shape[0]))  # every rank sends a full chunk
        round_similarity, round_labels = _search(gather(padded), bank, bank_labels, k, max_elements, largest_shard)
        own = slice(rank() * chunk, rank() * chunk + mine.shape[0])
        similarities.append(round_similarity[own])
        labels.append(round_labels[own])
    return torch.cat(similarities), torch.cat(labels)


def _search(
    queries: Tensor, bank: Tensor, bank_labels: Tensor, k: int, max_elements: int, largest_shard: int | None = None
) -> tuple[Tensor, Tensor]:
    """Top k of `queries` in `bank`, chunked over queries. With `largest_shard` (the most bank rows any rank holds),
    all ranks pass the same queries and their own bank part, chunk them alike, and merge each chunk's candidates."""
    merge_ranks = largest_shard is not None
    queries = F.normalize(queries.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    unlabelled = bank_labels < 0
    local_k = min(k, bank.shape[0])
    chunk_size = max(1, max_elements // max(1, largest_shard if merge_ranks else bank.shape[0]))
    similarities, labels = [], []
    for chunk in queries.split(chunk_size):
        similarity = (chunk @ bank.T).masked_fill(unlabelled[None, :], float("-inf"))  # (chunk, bank)
        top_similarity, top_index = similarity.topk(local_k, dim=1)
        top_labels = bank_labels[top_index]
        if merge_ranks:
            top_similarity, top_labels = _merge_ranks(top_similarity, top_labels, k)
        similarities.append(top_similarity)
        labels.append(top_labels)
    if not similarities:  # no queries (an empty shard)
        return queries.new_zeros(0, k), bank_labels.new_zeros(0, k)
    return torch.cat(similarities), torch.cat(labels)


def _merge_ranks(similarity: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The global top k from every rank's local top k (padded to k, so that all ranks gather equal shapes)."""
    missing = k - similarity.shape[1]
    if missing > 0:
        similarity = F.pad(similarity, (0, missing), value=float("-inf"))
        labels = F.pad(labels, (0, missing), value=-1)
    candidates = torch.cat(gather(similarity[None]).unbind(0), dim=1)  # (chunk, world * k), rank order
    candidate_labels = torch.cat(gather(labels[None]).unbind(0), dim=1)
    top_similarity, index = candidates.topk(k, dim=1)
    return top_similarity, candidate_labels.gather(1, index)


def weighted_vote(similarities: Tensor, labels: Tensor, num_classes: int, k: int, temperature: float) -> Tensor:
    """Predicted class (Q,) from the (Q, >= k) sorted neighbours of `top_neighbours`: the first k vote with weight
    exp(similarity / T)."""
    weights = (similarities[:, :k] / temperature).exp()  # exp(-inf) = 0: non-neighbours never vote
    votes = torch.zeros(similarities.shape[0], num_classes, device=similarities.device)
    votes.scatter_add_(1, labels[:, :k].clamp(min=0), weights)
    return votes.argmax(dim=1)


@torch.no_grad()
def knn_predict(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    max_elements: int = 2**27,
) -> Tensor:
    """Predicted class (Q,) of each query (Q, D) from a feature bank (B, D) with labels (B,); k is capped at B."""
    similarities, labels = top_neighbours(queries, bank, bank_labels, k, max_elements=max_elements)
    return weighted_vote(similarities, labels, num_classes, k, temperature)


@torch.no_grad()
def knn_sweep(
    queries: Tensor,
    query_labels: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    ks: tuple[int, ...] = KNN_KS,
    temperatures: tuple[float, ...] = KNN_TEMPERATURES,
    sharded: bool = False,
    max_elements: int = 2**27,
) -> list[dict[str, float]]:
    """Top-1 accuracy for every (k, T), from one neighbour search at the largest k.

    Queries labelled -1 are not scored. With `sharded=True` each rank passes its own queries and bank part (see
    `top_neighbours`) and every rank gets the accuracy over all ranks' queries. Returns rows {"k", "temperature",
    "top1"} in sweep order.
    """
    similarities, labels = top_neighbours(queries, bank, bank_labels, max(ks), sharded, max_elements)
    scored = query_labels >= 0
    rows = []
    for k in ks:
        for temperature in temperatures:
            predictions = weighted_vote(similarities, labels, num_classes, k, temperature)
            top1 = accuracy(predictions[scored], query_labels[scored], sharded)
            rows.append({"k": k, "temperature": temperature, "top1": top1})
    return rows


def accuracy(predictions: Tensor, targets: Tensor, sharded: bool = False) -> float:
    """Fraction of correct predictions; with `sharded=True`, over the predictions of every rank."""
    counts = torch.stack([(predictions == targets).sum(), torch.tensor(targets.numel(), device=targets.device)])
    correct, total = (all_reduce(counts) if sharded else counts).tolist()
    return correct / max(1, total)
