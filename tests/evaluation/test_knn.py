import torch
import torch.nn.functional as F

from selfsup.evaluation import knn_predict


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
        assert torch.equal(knn_predict(queries, bank, labels, 4, k, temperature, chunk_size=7), expected)


def test_unlabelled_bank_entries_never_vote_and_k_is_capped() -> None:
    bank = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    labels = torch.tensor([-1, 1, 0])
    assert knn_predict(torch.tensor([[1.0, 0.0]]), bank, labels, 2, k=1).tolist() == [1]
    assert knn_predict(torch.tensor([[0.0, 1.0]]), bank, labels, 2, k=200).tolist() == [0]
