"""MoCo's, BYOL's and MoCo v3's losses on 2 gloo ranks equal the single-process losses on the concatenated batch
(MoCo v3's parameter gradients after DDP's averaging and gathered keys too: tests/losses/test_mocov3.py), and the
MoCo queue after the step is the same. (The heads' BatchNorm statistics differ per rank unless SyncBatchNorm is
on, as configs/mocov2.yaml does on GPUs, so the comparison starts from projections.)"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from selfsup.losses import normalized_mse, queue_info_nce
from selfsup.models.hard_negative_mixing import HardNegativeMixing
from selfsup.models.queue import EmbeddingQueue
from tests.conftest import RANKS, free_port, start_ranks
from tests.losses.test_mocov3 import check_two_ranks, share_of_this_rank

# MoCHi's pieces, without the method: the ranks import neither Lightning nor the backbones (seconds per process)
MIXING = HardNegativeMixing(num_hard=10)


def batch() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    queries, keys = (F.normalize(torch.randn(8, 128), dim=1) for _ in range(2))
    predictions, targets = torch.randn(8, 32), torch.randn(8, 32)
    return queries, keys, predictions, targets


def step(queue: EmbeddingQueue, queries, keys, predictions, targets) -> tuple[float, float]:
    moco = queue_info_nce(queries, keys, queue.keys.clone(), 0.2, mixing=MIXING)
    queue.enqueue(keys)
    return moco.item(), normalized_mse(predictions, targets).item()


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    queue = EmbeddingQueue(50, 128)  # mixing on: its top-N uses the shared queue, so it must agree across ranks too
    mine = slice(4 * rank, 4 * rank + 4)
    losses = step(queue, *(t[mine] for t in batch()))
    results.put((rank, losses, queue.keys.tolist(), share_of_this_rank()))
    dist.destroy_process_group()


def test_moco_byol_and_mocov3_losses_and_queue_match_single_process() -> None:
    single = EmbeddingQueue(50, 128)
    expected = step(single, *batch())
    results = RANKS.SimpleQueue()
    workers = start_ranks(_worker, (free_port(), results), join=False)
    ranks = sorted(results.get() for _ in range(2))  # read before joining: a full pipe would block the workers
    workers.join()
    for index in range(2):  # MoCo, BYOL: the mean of the two ranks' losses is the single-process loss
        assert abs(sum(r[1][index] for r in ranks) / 2 - expected[index]) < 1e-5
    assert ranks[0][2] == ranks[1][2]
    torch.testing.assert_close(torch.tensor(ranks[0][2]), single.keys)
    check_two_ranks([r[3] for r in ranks])
