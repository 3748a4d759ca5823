"""Weighted kNN classification of frozen features, the standard monitor of self-supervised training.

The vote follows "Unsupervised Feature Learning via Non-Parametric Instance Discrimination" (Wu et al.,
CVPR 2018): each of the k most cosine-similar training features votes for its label with weight
exp(similarity / T). k=200 and T=0.1 are the usual defaults (InstDisc, solo-learn, lightly).
"""

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 4096,
) -> Tensor:
    """Predicted class (Q,) of each query (Q, D) from a feature bank (B, D) with labels (B,).

    Bank entries labelled -1 (unlabelled or padding) never vote. Queries are processed in chunks, so the
    (chunk, B) similarity matrix bounds the memory; k is capped at the number of bank entries.
    """
    queries = F.normalize(queries.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    unlabelled = bank_labels < 0
    safe_labels = bank_labels.clamp(min=0)
    k = min(k, bank.shape[0])
    predictions = []
    for chunk in queries.split(chunk_size):
        similarity = chunk @ bank.T  # (chunk, B) cosine similarities
        similarity = similarity.masked_fill(unlabelled[None, :], float("-inf"))
        top_similarity, top_index = similarity.topk(k, dim=1)  # (chunk, k)
        weights = (top_similarity / temperature).exp()  # exp(-inf) = 0: unlabelled entries never vote
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, safe_labels[top_index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)
