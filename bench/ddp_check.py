"""DDP on one device: two processes in a gloo process group train SimCLR, MoCo v2 and SwAV for a few steps from
the same start on the two halves of fixed global batches, and must end identical (weights, queues, every buffer);
the same steps in one process on the whole batches must give the same losses and weight updates, within the
rounding of the precision they ran in.

On one GPU both ranks share cuda:0, which NCCL refuses (one rank per GPU), hence gloo; `selfsup.distributed`
picks NCCL on CUDA only for launchers it initialises, while here the ranks join the group themselves. The step
is `Method.compute_losses` under `DistributedDataParallel` (gradient averaging), on a GPU in bf16 autocast as
training runs and again in fp32 with TF32 off (whose 1e-3 agreement with one process is the verdict), on a CPU in
fp32: the code under test is the methods' own gathers (SimCLR's negatives), queues (MoCo's keys, SwAV's
features) and Sinkhorn sums, which must make the two ranks one global batch.

Batch norm is frozen at its initial statistics: with batch statistics each rank normalises by its own half
(unless SyncBatchNorm), so two ranks would not be one process on the global batch for a reason that is no part
of what is checked here. Frozen, every sample's features depend on that sample alone. The momentum encoders
are not updated (their EMA follows the weights, which are compared); the queues are.

    python bench/ddp_check.py              # on a GPU: both ranks on cuda:0, bf16
"""

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ProcessesFailed, emit, environment, free_port, in_processes  # noqa: E402

from selfsup.methods import METHODS, Method  # noqa: E402

WORLD_SIZE = 2
# Two ranks against one process, as the relative difference of the weight updates over the steps. bf16 keeps 8
# significant bits (a rounding of 2^-9, 0.2%, per operation), and the two ranks' convolutions and matrix products
# run on half the batch, with other kernels and other summation orders than one process's: a few steps leave
# updates that differ by about a percent. A wrong gather, queue or average changes the update by tens of percent
# (half the negatives missing, a gradient off by the world size). In fp32 the rounding is 2^-24.
UPDATE_TOLERANCE = {"bf16": 5e-2, "fp32": 1e-3}


@dataclasses.dataclass(frozen=True)
class DdpCheck:
    """What the ranks train: `steps` global batches of `batch_size` random uint8 images of `image_shape`."""

    backbone: str = "resnet18"
    small_image_stem: bool = True
    batch_size: int = 256  # global: each rank takes half
    image_shape: tuple[int, int, int] = (1, 28, 28)  # Fashion-MNIST's
    image_size: int = 32
    steps: int = 3
    methods: tuple[str, ...] = ("simclr", "mocov2", "swav")

    def options(self, method: str) -> dict:
        """The method's options: queues that fill within the steps, so that they are used and compared."""
        size = {"backbone": self.backbone, "small_image_stem": self.small_image_stem, "image_size": self.image_size,
                "num_classes": 10, "image_mean": (0.5,) * 3, "image_std": (0.25,) * 3}  # fmt: skip
        queued = {"mocov2": {"queue_size": 2 * self.batch_size},
                  "swav": {"num_prototypes": 300, "queue_size": self.batch_size, "queue_start_epoch": 0}}  # fmt: skip
        return size | queued.get(method, {})


class _Step(nn.Module):
    """The method's whole step as a forward, so that DistributedDataParallel can wrap it."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, views: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor, dict]:
        return self.method.compute_losses(views, labels)


def batches(method: Method, check: DdpCheck) -> list[tuple[list[Tensor], Tensor]]:
    """The global batches' views and labels, drawn on the CPU from fixed seeds: the same in every process."""
    generator = torch.Generator().manual_seed(0)
    drawn = []
    for _ in range(check.steps):
        images = torch.randint(0, 256, (check.batch_size, *check.image_shape), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (check.batch_size,), generator=generator)
        drawn.append((method.multiview(images, generator), labels))
    return drawn


def snapshot(method: Method) -> dict[str, Tensor]:
    """Every entry of the method's state as a float32 copy in host memory (a copy also where it lives there)."""
    return {key: value.detach().to("cpu", torch.float32, copy=True) for key, value in method.state_dict().items()}


def train(name: str, check: DdpCheck, device: torch.device, rank: int, world_size: int, precision: str) -> dict:
    """Train `name` for the check's steps on this rank's share of each batch, in `precision` (bf16 autocast, or
    fp32): its losses and its final state."""
    torch.manual_seed(0)
    method = METHODS[name](batch_size=check.batch_size // world_size, **check.options(name))
    global_batches = batches(method, check)
    method.to(device)
    for module in method.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()  # frozen statistics: see the module's docstring
    step = _Step(method)
    if world_size > 1:
        step = DistributedDataParallel(step, broadcast_buffers=False)  # the queues must agree by themselves
    # plain SGD: the update is the gradient's (LARS would rescale each layer's by its norm, and a layer with a
    # gradient near zero would turn its rounding into a full-size update)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    share = slice(rank * check.batch_size // world_size, (rank + 1) * check.batch_size // world_size)
    start = snapshot(method)
    losses = []
    for views, labels in global_batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, probe_loss, _ = step([view[share].to(device) for view in views], labels[share].to(device))
        optimizer.zero_grad(set_to_none=True)
        (loss + probe_loss).backward()
        optimizer.step()
        losses.append(loss.item())
    end = snapshot(method)
    trained = {name for name, parameter in method.named_parameters() if parameter.requires_grad}
    return {"losses": losses, "start": start, "end": end, "trained": trained}


def largest_rank_difference(state: dict[str, Tensor]) -> float:
    """The largest absolute difference of any entry of `state` between this rank and rank 0."""
    largest = 0.0
    for value in state.values():
        theirs = value.clone()
        dist.broadcast(theirs, src=0)
        if value.numel():  # NaN where either rank has one: never "agree"
            largest = max(largest, (value - theirs).abs().nan_to_num(float("inf")).max().item())
    return largest


def update_difference(ranks: dict, alone: dict) -> float:
    """|update of the ranks - update of one process| / |update of one process| over the trained weights."""
    ranks_update = torch.cat([(ranks["end"][k] - ranks["start"][k]).flatten() for k in sorted(alone["trained"])])
    alone_update = torch.cat([(alone["end"][k] - alone["start"][k]).flatten() for k in sorted(alone["trained"])])
    return ((ranks_update - alone_update).norm() / alone_update.norm()).item()


def runs(check: DdpCheck, cuda: bool) -> list[tuple[str, str]]:
    """(method, precision) of each run: on a GPU in bf16 as training runs, and in fp32 (TF32 off), where one process
    and two ranks must agree to 1e-3, a verdict that bf16's rounding cannot blur."""
    return [(name, precision) for precision in (("bf16", "fp32") if cuda else ("fp32",)) for name in check.methods]


def agreement(rank_losses: dict[str, tuple[float, Tensor]]) -> dict[str, dict]:
    """Each method's largest difference between the ranks, and whether they agree."""
    return {name: {"ranks_largest_difference": difference, "ranks_agree": difference == 0.0}
            for name, (difference, _) in rank_losses.items()}  # fmt: skip


def rank_main(rank: int, world_size: int, port: int, check: DdpCheck, cuda: bool) -> Iterator[dict]:
    """One rank: train every method under DDP and measure how far this rank is from rank 0; rank 0 then leaves the
    group and trains the same steps alone on the whole batches. Rank 0 yields the comparison as it grows (each
    method's agreement, then its match with one process); its last value is the whole."""
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    trained, rank_losses = {}, {}
    for name, precision in runs(check, cuda):
        key = f"{name} {precision}"
        trained[key] = train(name, check, device, rank, world_size, precision)
        differences = torch.tensor([largest_rank_difference(trained[key]["end"])])
        dist.all_reduce(differences, op=dist.ReduceOp.MAX)
        losses = [torch.tensor(trained[key]["losses"]) for _ in range(world_size)]
        dist.all_gather(losses, torch.tensor(trained[key]["losses"]))
        rank_losses[key] = (differences.item(), torch.stack(losses))
        if rank == 0:  # the ranks' agreement so far, kept if the check is ended at its budget
            yield agreement(rank_losses)
    dist.destroy_process_group()
    if rank != 0:
        return
    results = {}
    for name, precision in runs(check, cuda):
        key = f"{name} {precision}"
        alone = train(name, check, device, 0, 1, precision)
        difference, losses = rank_losses[key]
        update = update_difference(trained[key], alone)
        loss_gap = (losses.mean(dim=0) - torch.tensor(alone["losses"])).abs().max().item()
        results[key] = {
            "ranks_largest_difference": difference,  # weights, queues, every buffer: 0 when the ranks agree
            "rank_losses": losses.tolist(),
            "one_process_losses": alone["losses"],
            "mean_rank_loss_vs_one_process": loss_gap,
            "update_vs_one_process": update,
            "ranks_agree": difference == 0.0,
            "matches_one_process": update <= UPDATE_TOLERANCE[precision],
        }
        yield agreement(rank_losses) | results


def measure(check: DdpCheck, timeout_s: float) -> dict:
    """The check on this machine's device: two ranks, then one process, within `timeout_s`; what it measured before
    an error or its limit, with the error."""
    cuda = torch.cuda.is_available()
    try:
        results, error = in_processes(rank_main, (free_port(), check, cuda), WORLD_SIZE, timeout_s)[0], None
    except ProcessesFailed as failed:
        results, error = failed.partial or {}, str(failed)
    planned = [f"{name} {precision}" for name, precision in runs(check, cuda)]
    complete = error is None and set(results) == set(planned)
    return ({"error": error} if error else {}) | {
        "check": "ddp_one_device",
        "world_size": WORLD_SIZE,
        "backend": "gloo",
        "device": "cuda:0 (both ranks)" if cuda else "cpu",
        "runs": planned,
        "update_tolerance": UPDATE_TOLERANCE,
        **dataclasses.asdict(check),
        "results": results,
        # the ranks agree in every run; fp32 decides whether they are one process (bf16's comparison is reported)
        "passed": complete
        and all(r["ranks_agree"] for r in results.values())
        and all(r["matches_one_process"] for key, r in results.items() if key.endswith("fp32")),
    }


if __name__ == "__main__":
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    emit({**measure(DdpCheck(), timeout_s=300), **environment(device)}, None)
