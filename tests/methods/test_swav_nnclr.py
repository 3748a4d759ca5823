"""SwAV and the nearest-neighbour methods: prototype freezing, neighbour accuracy, and a step of SwAV, NNCLR and Mean
Shift on 2 gloo ranks equal to one process on the whole batch (loss, parameter gradients after DDP's averaging, queues
and support sets). The networks run in eval mode so that batch norm uses the same statistics on every rank; in
training, SyncBatchNorm gives the same guarantee on GPUs."""

import functools
import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from selfsup.methods import MSF, NNCLR, SwAV
from selfsup.methods.swav import assignment_metrics
from selfsup.runs import Metric
from tests.conftest import RANKS, free_port, start_ranks

SMALL = dict(
    backbone="selfsup_test_tiny", small_image_stem=False, image_size=16, projector_hidden_dim=32, num_classes=3
)
METHOD_OPTIONS = {
    "swav": dict(
        **SMALL,
        views=[{"num_views": 2}, {"num_views": 2, "relative_size": 0.5}],
        num_prototypes=6,
        queue_size=12,
    ),
    "nnclr": dict(**SMALL, views=[{"num_views": 2}], predictor_hidden_dim=32, neighbours={"support_size": 20}),
    # Mean Shift: this batch's targets, gathered from both ranks, join the bank before the lookup
    "msf": dict(**SMALL, views=[{"num_views": 2}], predictor_hidden_dim=32,
                neighbours={"support_size": 20, "num_neighbours": 3, "include_batch": True}),
}  # fmt: skip
METHOD_CLASSES = {"swav": SwAV, "nnclr": NNCLR, "msf": MSF}


def build(name: str) -> SwAV | NNCLR | MSF:
    torch.manual_seed(0)
    method = METHOD_CLASSES[name](**METHOD_OPTIONS[name]).eval()
    queues = method.queues if name == "swav" else [method.support_set]
    for queue in queues:  # an identical, full queue on every rank, as after some training
        queue.enqueue(F.normalize(torch.randn(queue.size, queue.keys.shape[1]), dim=1), torch.arange(queue.size) % 3)
    return method


def batch(method: SwAV | NNCLR | MSF) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 1, 20, 20), dtype=torch.uint8, generator=generator)
    return method.multiview(images, generator), torch.arange(8) % 3


def step(method: SwAV | NNCLR | MSF, views: list[torch.Tensor], labels: torch.Tensor) -> tuple:
    loss, _ = method.ssl_loss(method.embed(views), views, labels)
    loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in method.parameters() if p.grad is not None])
    queues = method.queues if isinstance(method, SwAV) else [method.support_set]
    return loss.item(), gradient, [q.keys.clone() for q in queues]


def _worker(rank: int, port: int, results) -> None:
    # both methods in one pair of processes (each start imports Lightning); their queues are filled before the
    # process group exists: no gather
    methods = {name: build(name) for name in METHOD_OPTIONS}
    batches = {name: batch(method) for name, method in methods.items()}
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    mine = slice(4 * rank, 4 * rank + 4)
    for name, method in methods.items():
        views, labels = batches[name]
        loss, gradient, queues = step(method, [v[mine] for v in views], labels[mine])
        results.put((name, rank, loss, gradient.tolist(), [q.tolist() for q in queues]))
    dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_whole_batch() -> None:
    results = RANKS.SimpleQueue()
    workers = start_ranks(_worker, (free_port(), results), join=False)
    outputs = [results.get() for _ in range(2 * len(METHOD_OPTIONS))]  # read before joining: a full pipe blocks
    workers.join()
    for name in METHOD_OPTIONS:
        single = build(name)
        expected_loss, expected_gradient, expected_queues = step(single, *batch(single))
        ranks = sorted(output[1:] for output in outputs if output[0] == name)
        named = functools.partial("{}: {}".format, name)  # a failure says which method
        assert sum(r[1] for r in ranks) / 2 == pytest.approx(expected_loss, rel=1e-5), name
        averaged = (torch.tensor(ranks[0][2]) + torch.tensor(ranks[1][2])) / 2  # what DDP applies
        torch.testing.assert_close(averaged, expected_gradient, rtol=1e-4, atol=1e-6, msg=named)
        for rank_queues in (ranks[0][3], ranks[1][3]):
            for queue, expected in zip(rank_queues, expected_queues, strict=True):
                torch.testing.assert_close(torch.tensor(queue), expected, msg=named)


def test_swav_queue_joins_sinkhorn_only_once_full() -> None:
    method = SwAV(**METHOD_OPTIONS["swav"])
    views, labels = batch(method)
    features = method.embed(views)
    method.ssl_loss(features, views, labels)  # 8 of 12 slots written: codes from the batch alone
    assert method.queues[0].filled.item() == 8 and not method.queues[0].is_full
    method.ssl_loss(features, views, labels)
    assert method.queues[0].is_full and method.queues[1].is_full


@pytest.mark.parametrize("freeze_steps, frozen", [(None, True), (5, True), (0, False)])
def test_swav_prototypes_get_no_gradient_while_frozen(freeze_steps: int | None, frozen: bool) -> None:
    method = SwAV(**{**METHOD_OPTIONS["swav"], "queue_size": 0}, freeze_prototypes_steps=freeze_steps)
    views, labels = batch(method)
    before = method.prototypes.weight.detach().clone()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5, weight_decay=0.1)
    method.ssl_loss(method.embed(views), views, labels)[0].backward()
    method.on_after_backward()  # at step 0 of epoch 0, as Lightning calls it
    optimizer.step()
    assert (method.prototypes.weight.grad is None) == frozen
    assert torch.equal(method.prototypes.weight, before) == frozen
    method.on_train_batch_start(None, 0)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(6))


def test_nnclr_logs_neighbour_accuracy_from_support_set_labels() -> None:
    method = build("nnclr")
    views, labels = batch(method)
    z = F.normalize(method.projector(torch.cat(method.embed(views)))[:8].float(), dim=1)
    neighbour_labels = method.support_set.nearest(z).labels[:, 0]
    _, metrics = method.ssl_loss(method.embed(views), views, labels)
    assert metrics[Metric.NN_ACCURACY].item() == pytest.approx((neighbour_labels == labels).float().mean().item())


def test_swav_assignment_metrics_count_used_prototypes_and_their_entropy() -> None:
    """Two global crops' codes over 4 prototypes: argmaxes 0, 0, 1 and 1, 1, 1 use 2 of 4 prototypes with
    frequencies 1/3 and 2/3, so the entropy is -(1/3 ln 1/3 + 2/3 ln 2/3)."""
    codes = [torch.eye(4)[[0, 0, 1]], torch.eye(4)[[1, 1, 1]]]
    metrics = assignment_metrics(codes)
    assert metrics[Metric.PROTOTYPE_USAGE].item() == 0.5
    expected = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert metrics[Metric.ASSIGNMENT_ENTROPY].item() == pytest.approx(expected)
