"""The numbers of one GPU session, in one command that ends by itself within --minutes (9 by default: a session's
command may run 10) and writes what it measured to --out as it goes, so that a run cut short still brings back
everything that finished:

    checks.json   the checks, each entry written as soon as it ends (an error or "not reached" otherwise):
                  ddp           two gloo processes on cuda:0, bf16: SimCLR, MoCo v2, SwAV (bench/ddp_check.py)
                  speeds        every method alone, end to end, eager: the table's img/s (bench/step_speed.py)
                  placements    host (pinned copy, side stream), gpu and gpu_shard batches equal (placement_check.py)
                  compile       SimCLR and MoCo v2, eager and compiled, model-only and end to end (step_speed.py)
                  packed        packed against image_folder at 224 px, ResNet-50, a generated set (bench/packed.py)
                  (--checks names those to run: a later session of the table needs only the speeds)
    table.json    the table (bench/table.py): the runs side by side measured first, then every method that fits at
                  one number of epochs (at least 30), trained and scored; rewritten after each run
    log.txt       what happened, when

Each check has a budget (CHECK_BUDGETS) and runs in its own process, ended when its budget is spent; the table
plans from what is left. `--smoke` runs every stage at toy size on a CPU (a generated set of a few hundred images,
timm's test_resnet, two CPU gloo processes, one epoch) in about a minute: it checks the command, not the numbers.

    bash ../shared/gpu/prepare.sh       # here, once: .whl/ and .data/ for the GPU machine
    # on the GPU machine, carrying .whl and .data:
    python bench/gpu_evidence.py --out $OUT --data-root .data/FashionMNIST/raw --seed 0
    python bench/table.py collect <files_at> && python bench/table.py assemble     # here, afterwards
"""

import argparse
import collections
import dataclasses
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ddp_check  # noqa: E402
import packed  # noqa: E402
import placement_check  # noqa: E402
import step_speed  # noqa: E402
import table  # noqa: E402
from common import ProcessesFailed, environment, in_process, start_forkserver  # noqa: E402

from selfsup.atomic import check_writable, write_text  # noqa: E402
from selfsup.data.pack import pack  # noqa: E402
from selfsup.errors import ConfigurationError  # noqa: E402

# seconds on the GPU, 3.8 minutes in all; compiling (inductor, a ResNet-18 step, twice a method) takes the most
CHECK_BUDGETS = {"ddp": 35, "speeds": 45, "placements": 15, "compile": 90, "packed": 45}
FINAL_MARGIN_S = 15  # left at the end for the last writes and the processes to end
TOY_IMAGES = 256  # the smoke's training set
SMOKE_METHODS = ("simclr", "mocov2", "swav")  # the smoke's table (every method trains in tests/methods)


@dataclasses.dataclass(frozen=True)
class Size:
    """How big every stage is: a GPU session's (`gpu`), or the CPU smoke's toy size (`smoke`)."""

    fit_options: tuple[str, ...]  # the data (and for the smoke, the backbone) of every `train.py fit`
    eval_options: tuple[str, ...]  # further `train.py eval` options
    ddp: ddp_check.DdpCheck
    speed_steps: tuple[int, int]  # (timed, warm-up) steps of the speed and compile checks
    compile_backend: str
    placement: dict  # SelfSupDataModule options of the placement check
    placement_batch: int
    packed: argparse.Namespace  # bench/packed.py's options
    compile_methods: tuple[str, ...]
    concurrency: tuple[int, ...]  # runs side by side tried, in order
    probe_steps: int
    epochs: tuple[int, int]  # (fewest, most) epochs of the table
    train_images: int  # of the table's data
    overhead_s: float  # a table run's start-up and evaluation
    budget_scale: float  # of CHECK_BUDGETS

    @staticmethod
    def gpu(data_root: str | None) -> "Size":
        root = ("--data.root", data_root) if data_root else ()
        return Size(
            fit_options=root, eval_options=(), ddp=ddp_check.DdpCheck(), speed_steps=(30, 10),
            compile_backend="inductor", placement={"dataset": "fashion_mnist", "root": data_root},
            placement_batch=512,
            packed=argparse.Namespace(images=4096, size=224, backbones=["resnet50"], batch_size=256, steps=20,
                                      warmup=8, workers=14, placements=["gpu", "host"]),
            compile_methods=("simclr", "mocov2"), concurrency=(1, 2, 4), probe_steps=150,
            epochs=(table.MIN_EPOCHS, table.MAX_EPOCHS), train_images=table.TRAIN_IMAGES, overhead_s=45,
            budget_scale=1.0,
        )  # fmt: skip

    @staticmethod
    def smoke(toy: Path) -> "Size":
        data = ("--data.dataset", "packed", "--data.root", str(toy), "--data.batch_size", "32")
        tiny = ("--model.init_args.backbone", "test_resnet", "--model.init_args.small_image_stem", "false")
        return Size(
            fit_options=(*data, *tiny, "--trainer.log_every_n_steps", "1"),
            eval_options=("--linear.epochs", "2", "--diagnostics", "false"),
            ddp=ddp_check.DdpCheck("test_resnet", False, 8, (3, 16, 16), 16, 2), speed_steps=(2, 1),
            compile_backend="eager", placement={"dataset": "packed", "root": str(toy)}, placement_batch=32,
            packed=argparse.Namespace(images=32, size=16, backbones=["test_resnet"], batch_size=8, steps=2, warmup=1,
                                      workers=2, placements=["host"]),
            compile_methods=("simclr",), concurrency=(1, 2), probe_steps=3, epochs=(1, 1), train_images=TOY_IMAGES,
            overhead_s=5, budget_scale=1.5,
        )  # fmt: skip


class Evidence:
    """The --out folder: checks.json and table.json rewritten whole (atomically) after every piece, log.txt
    appended line by line."""

    def __init__(self, out: Path, started: float, seed: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.started = out, started
        self.checks: dict[str, object] = {}
        session = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.environment = environment(device()) | {"session": session, "seed": seed}

    def log(self, line: str) -> None:
        stamped = f"[{time.monotonic() - self.started:6.1f} s] {line}"
        print(stamped, flush=True)
        with open(self.out / "log.txt", "a") as log:
            log.write(stamped + "\n")

    def check(self, name: str, result: object) -> None:
        self.checks[name] = result
        self.write(table.CHECKS_FILE, {"checks": self.checks, **self.environment})

    def write(self, name: str, content: dict) -> None:
        write_text(self.out / name, json.dumps(content, indent=1) + "\n")


def run_check(
    evidence: Evidence, name: str, budget_s: float, target: Callable[..., object], *args: object, isolate: bool = True
) -> object:
    """target(*args) in its own process within `budget_s` (or here, for a target whose own processes have a time
    limit: they then start from this process's forkserver, with selfsup imported, not from a new one); its result
    (or its error) recorded as check `name`."""
    evidence.log(f"{name}: starting, budget {budget_s:.0f} s")
    start = time.monotonic()
    try:
        result = in_process(target, args, budget_s) if isolate else last(target(*args))
    except ProcessesFailed as error:
        result = (error.partial if isinstance(error.partial, dict) else {}) | {"error": str(error)}
    evidence.check(name, result)
    passed = result.get("passed") if isinstance(result, dict) else None
    evidence.log(f"{name}: {'error' if 'error' in result else 'done'} in {time.monotonic() - start:.0f} s"
                 + ("" if passed is None else f", passed: {passed}"))  # fmt: skip
    return result


def checks(
    evidence: Evidence, size: Size, methods: tuple[str, ...], which: tuple[str, ...], deadline: float
) -> dict[str, float]:
    """The checks `which` within their budgets (none past `deadline`, time.monotonic); the img/s alone of
    `methods`, for the table's plan."""

    def budget(name: str) -> float:
        return min(CHECK_BUDGETS[name] * size.budget_scale, max(0.0, deadline - time.monotonic()))

    speeds: object = {}
    if "ddp" in which:
        run_check(evidence, "ddp", budget("ddp"), ddp_check.measure, size.ddp, budget("ddp"), isolate=False)
    steps = size.speed_steps
    if "speeds" in which:
        seconds = budget("speeds")
        speeds = run_check(evidence, "speeds", seconds, step_speed.method_speeds, methods, size.fit_options, *steps,
                           time.time() + seconds - 10)  # fmt: skip
    if "placements" in which:
        run_check(evidence, "placements", budget("placements"), placement_check.measure, size.placement,
                  size.placement_batch, 5)  # fmt: skip
    if "compile" in which:
        seconds = budget("compile")
        run_check(evidence, "compile", seconds, step_speed.compile_comparison, size.compile_methods,
                  size.fit_options, *steps, time.time() + seconds - 20, size.compile_backend)  # fmt: skip
    if "packed" in which:
        # on a GPU in its own process, whose exit frees the GPU memory of a ResNet-50 at 224 px before the table's
        # runs; on a CPU here, where the packer's workers start from this process's forkserver, imports done
        run_check(evidence, "packed", budget("packed"), packed.measurements, size.packed, device(),
                  isolate=device().type == "cuda")  # fmt: skip
    return speeds.get("img_per_s", {}) if isinstance(speeds, dict) else {}


def last(outcome: object) -> object:
    """A generator's last value (what a check measured in all), or `outcome` itself."""
    return collections.deque(outcome, maxlen=1)[0] if inspect.isgenerator(outcome) else outcome


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def the_table(evidence: Evidence, size: Size, args: argparse.Namespace, speeds: dict, deadline: float) -> None:
    """Measure how many runs side by side, plan what fits in the time left, run it; table.json after each step."""
    with tempfile.TemporaryDirectory(prefix="gpu_evidence_runs_") as scratch:
        record = {"speeds": speeds, **evidence.environment}
        evidence.log(f"table: how many runs side by side, trying {size.concurrency}")
        probe_end = min(deadline, time.monotonic() + 30 * len(size.concurrency) * size.budget_scale)
        totals = table.probe_concurrency(size.concurrency, Path(scratch) / "probe", size.fit_options,
                                         size.probe_steps, probe_end)  # fmt: skip
        record["concurrency_img_per_s"] = totals
        evidence.log(f"table: total img/s by runs side by side: {totals}")
        seconds = deadline - time.monotonic()
        chosen = table.plan(speeds, totals, seconds, size.overhead_s, *size.epochs, methods=args.methods,
                            epochs=args.epochs, images=size.train_images)  # fmt: skip
        why = "did not fit in this session" if speeds else "no speed was measured (checks.json: speeds)"
        record |= {"plan": dataclasses.asdict(chosen), "epochs": chosen.epochs,
                   "not_run": {m: why for m in chosen.left_out}, "runs": {}}  # fmt: skip
        evidence.write(table.TABLE_FILE, record)
        evidence.log(
            f"table: {len(chosen.methods)} methods at {chosen.epochs} epochs, {chosen.concurrent} at a time "
            f"(estimated {chosen.estimate_s:.0f} s of {seconds:.0f}); not run: {list(chosen.left_out)}"
        )

        def save(results: dict[str, dict]) -> None:
            record["runs"] = results
            evidence.write(table.TABLE_FILE, record)
            latest = results[list(results)[-1]]
            keys = [key for key in ("epochs_trained", "knn_top1", "linear_top1", "error") if key in latest]
            evidence.log(f"table: {latest['method']}: " + ", ".join(f"{key} {latest[key]}" for key in keys))

        table.run_table(chosen, args.seed, Path(scratch) / "runs", size.fit_options, size.eval_options, deadline,
                        size.overhead_s, save)  # fmt: skip


def toy_set(root: Path) -> Path:
    """The smoke's data: a few hundred generated images in 4 classes (train/ and val/), packed at 16 px."""
    packed.make_folder(root / "folder" / "train", TOY_IMAGES, classes=4)
    packed.make_folder(root / "folder" / "val", TOY_IMAGES // 4, classes=4)
    pack(root / "folder", 16, root / "packed", workers=min(4, len(os.sched_getaffinity(0))))
    return root / "packed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where checks.json, table.json and log.txt go")
    parser.add_argument("--seed", type=int, default=0, help="the table's seed: 0 the first session, 1 the next")
    parser.add_argument("--minutes", type=float, default=9.0, help="the whole command's wall-clock limit")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST's folder (default: the usual search)")
    parser.add_argument("--methods", nargs="+", choices=table.TABLE_METHODS, default=None,
                        help="the table's methods, in priority order (default: every registered one; the smoke's: "
                        f"{' '.join(SMOKE_METHODS)})")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="the table's epochs (default: as many as fit)")
    parser.add_argument(
        "--checks",
        nargs="*",
        choices=tuple(CHECK_BUDGETS),
        default=tuple(CHECK_BUDGETS),
        help="the checks to run (default: all; a later session of the table: speeds)",
    )
    parser.add_argument("--smoke", action="store_true", help="every stage at toy size on the CPU")
    args = parser.parse_args()
    if not args.minutes > 0 or (args.epochs is not None and args.epochs < 1):
        sys.exit("error: --minutes must be positive and --epochs at least 1")
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here: run this on the GPU machine, or pass --smoke for the CPU smoke")
    if not args.smoke and args.methods and args.epochs is None:
        sys.exit("error: --methods continues an earlier session's table: pass its --epochs too (table.json: epochs)")
    try:
        check_writable(args.out, "--out", folder=True)
    except ConfigurationError as error:
        sys.exit(f"error: {error}")
    args.methods = tuple(args.methods or (SMOKE_METHODS if args.smoke else table.TABLE_METHODS))
    args.checks = tuple(args.checks)
    started = time.monotonic()
    deadline = started + 60 * args.minutes - FINAL_MARGIN_S
    evidence = Evidence(args.out, started, args.seed)
    start_forkserver()
    with tempfile.TemporaryDirectory(prefix="gpu_evidence_") as scratch:
        size = Size.smoke(toy_set(Path(scratch))) if args.smoke else Size.gpu(args.data_root)
        evidence.log(f"{'smoke' if args.smoke else 'GPU session'} on {evidence.environment['device']}, seed "
                     f"{args.seed}, ends within {args.minutes} min")  # fmt: skip
        speeds = checks(evidence, size, args.methods, args.checks, deadline)
        the_table(evidence, size, args, speeds, deadline)
    evidence.log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
