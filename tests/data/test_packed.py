"""Packed datasets: the packer (decoded pixels, labels, resume, Ctrl-C, bad images, where and how it writes, its
messages), the packed directory's checks, and the three placements (same batches on the device and from host
memory, shards that stay apart)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.atomic import PARTIAL_SUFFIX, WriteError
from selfsup.cli import main
from selfsup.data import SelfSupDataModule
from selfsup.data import pack as packer
from selfsup.data.decode import decode_square
from selfsup.data.pack import PARTIAL, PackError, create_reserved_array, pack, plan_splits
from selfsup.data.packed import IMAGES, LABELS, MANIFEST, PROGRESS, Manifest, PackedDataError
from selfsup.data.placement import GIB, choose_placement
from selfsup.data.source import Shard
from selfsup.errors import ConfigurationError
from tests.test_resume import STOP_AFTER_FIRST_EPOCH
from tests.test_train_cli import REPO

SIZE = 16


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """train/ and val/ of 3 classes: JPEGs and PNGs (RGB, grayscale, RGBA) of mixed sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 14), ("val", 4)):
        for label, name in enumerate(("cat", "dog", "eel")):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                width, height = rng.integers(12, 70, 2)
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                pixels[..., label] = 200 + pixels[..., label] // 5  # a class colour, so the kNN monitor has a signal
                image = Image.fromarray(pixels)
                image = image.convert(("RGB", "L", "RGBA")[i % 3])
                image.save(folder / f"{i}.{'jpg' if image.mode != 'RGBA' and i % 2 else 'png'}")
    return tmp_path / "images"


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_pack_decodes_each_image_as_the_folder_loader_does_with_labels_and_classes(
    mixed_folder: Path, tmp_path: Path
) -> None:
    before = listing(mixed_folder)
    manifest, decoded = pack(mixed_folder, SIZE, tmp_path / "packed", workers=2)
    assert listing(mixed_folder) == before  # the source is only read
    assert manifest.classes == ["cat", "dog", "eel"] and manifest.counts == {"train": 42, "val": 12} and decoded == 54
    assert sorted(path.name for path in (tmp_path / "packed").iterdir()) == [MANIFEST, "train", "val"]
    for plan in plan_splits(mixed_folder)[1]:
        images = np.load(tmp_path / "packed" / plan.name / IMAGES)
        labels = np.load(tmp_path / "packed" / plan.name / LABELS)
        assert images.shape == (len(plan.paths), SIZE, SIZE, 3) and images.dtype == np.uint8
        for path, label, row in zip(plan.paths, plan.labels, plan.rows, strict=True):
            assert np.array_equal(images[row], decode_square(path, SIZE)) and labels[row] == label
        assert not np.array_equal(plan.rows, np.arange(len(plan.rows)))  # stored shuffled: prefixes mix classes


def interrupted(*args) -> None:
    raise KeyboardInterrupt


def test_an_interrupted_pack_resumes_where_it_stopped(
    mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packer, "CHUNK", 8)
    record = packer.Progress.record

    def interrupted_after_two_chunks(progress: packer.Progress, *args) -> None:
        if sum(len(chunks) for chunks in progress.done.values()) == 2:
            raise KeyboardInterrupt
        record(progress, *args)

    monkeypatch.setattr(packer.Progress, "record", interrupted_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        pack(mixed_folder, SIZE, tmp_path / "resumed", workers=2)
    assert (tmp_path / "resumed" / PROGRESS).is_file() and not (tmp_path / "resumed" / MANIFEST).exists()
    with pytest.raises(PackedDataError, match="did not finish; rerun the same pack command to resume"):
        SelfSupDataModule("packed", root=str(tmp_path / "resumed"))
    monkeypatch.setattr(packer.Progress, "record", record)
    _, decoded = pack(mixed_folder, SIZE, tmp_path / "resumed", workers=2)
    assert decoded == 54 - 2 * 8  # only what the first run had not finished
    pack(mixed_folder, SIZE, tmp_path / "whole", workers=1)
    for split in ("train", "val"):
        for name in (IMAGES, LABELS):
            assert np.array_equal(
                np.load(tmp_path / "resumed" / split / name), np.load(tmp_path / "whole" / split / name)
            )
    write = packer.Manifest.write
    monkeypatch.setattr(packer.Manifest, "write", interrupted)  # the last step: arrays renamed, no manifest yet
    with pytest.raises(KeyboardInterrupt):
        pack(mixed_folder, SIZE, tmp_path / "at_the_end", workers=1)
    monkeypatch.setattr(packer.Manifest, "write", write)
    assert pack(mixed_folder, SIZE, tmp_path / "at_the_end", workers=1)[1] == 0  # nothing decoded again
    for split in ("train", "val"):
        assert np.array_equal(
            np.load(tmp_path / "at_the_end" / split / IMAGES), np.load(tmp_path / "whole" / split / IMAGES)
        )
    with pytest.raises(PackError, match="unfinished pack of other files or another size"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / PROGRESS).write_text(json.dumps({"fingerprint": "x", "done": {}}))
        pack(mixed_folder, SIZE, tmp_path / "other", workers=1)


def test_unreadable_images_are_listed_and_left_out_only_with_skip_bad(
    mixed_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (mixed_folder / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    whole = (mixed_folder / "train" / "cat" / "1.jpg").read_bytes()
    (mixed_folder / "train" / "cat" / "1.jpg").write_bytes(whole[: len(whole) // 2])  # truncated
    out = str(tmp_path / "packed")
    with pytest.raises(SystemExit) as error:
        packer.main([str(mixed_folder), "--size", str(SIZE), "--out", out, "--workers", "2"])
    message = str(error.value.code)
    assert message.startswith("error: 2 image(s) cannot be decoded") and "--skip_bad" in message and "\n" not in message
    listed = (tmp_path / "packed" / "bad_images.txt").read_text()
    assert "broken.jpg" in listed and "cat/1.jpg" in listed
    packer.main([str(mixed_folder), "--size", str(SIZE), "--out", out, "--skip_bad"])
    assert f"packed 53 images (41 train, 12 val) at 16 px into {out}: 39.8 KiB;" in capsys.readouterr().out
    labels = np.load(tmp_path / "packed" / "train" / LABELS)
    assert np.bincount(labels).tolist() == [13, 14, 14]  # a cat truncated, the broken dog never counted
    bad = {mixed_folder / "train" / "dog" / "broken.jpg", mixed_folder / "train" / "cat" / "1.jpg"}
    kept = {decode_square(p, SIZE).tobytes() for p in (mixed_folder / "train").rglob("*.*") if p not in bad}
    assert {row.tobytes() for row in np.load(tmp_path / "packed" / "train" / IMAGES)} == kept


def test_the_packer_writes_only_to_a_new_or_empty_directory_outside_the_source(
    mixed_folder: Path, tmp_path: Path
) -> None:
    cases = [
        (mixed_folder / "packed", "is inside the image folder"),
        (tmp_path / "missing_source", "does not exist"),
    ]
    with pytest.raises(PackError, match=cases[0][1]):
        pack(mixed_folder, SIZE, cases[0][0], workers=1)
    with pytest.raises(PackError, match=cases[1][1]):
        pack(tmp_path / "nothing", SIZE, cases[1][0], workers=1)
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(PackError, match="is a file"):
        pack(mixed_folder, SIZE, tmp_path / "a_file", workers=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(PackError, match="is not empty"):
        pack(mixed_folder, SIZE, tmp_path / "busy", workers=1)
    pack(mixed_folder, SIZE, tmp_path / "done", workers=1)
    with pytest.raises(PackError, match="already holds a packed dataset"):
        pack(mixed_folder, SIZE, tmp_path / "done", workers=1)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine" and not (mixed_folder / "packed").exists()
    assert (tmp_path / "a_file").read_text() == "mine"


def test_the_free_space_message_gives_sizes_in_readable_units(
    mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=20 * 2**10))
    with pytest.raises(PackError) as error:
        pack(mixed_folder, SIZE, tmp_path / "packed", workers=1)
    assert str(error.value) == (  # 54 images of 16 x 16 x 3 bytes
        f"Packing into --out {tmp_path / 'packed'} needs about 40.5 KiB and {tmp_path} has 20.0 KiB free; free some "
        "space or choose a location on a larger disk. A smaller --size needs less."
    )


def test_an_out_on_a_pseudo_file_system_is_refused_before_anything_is_decoded(
    mixed_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packer, "decode_all", interrupted)  # /proc takes no files, even from root
    with pytest.raises(ConfigurationError, match="^--out /proc/selfsup/packed cannot be written"):
        pack(mixed_folder, SIZE, Path("/proc/selfsup/packed"), workers=1)


REPLACE = os.replace


def failing_for(names: set[str]) -> Callable:
    """os.replace that fails with a full disk when the file it would replace is one of `names`."""

    def replace_unless_full(source: str | Path, target: str | Path) -> None:
        if Path(target).name in names:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        REPLACE(source, target)

    return replace_unless_full


def test_a_failed_write_is_one_line_and_leaves_the_previous_files_as_they_were(
    mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "packed"

    def failed_pack() -> str:
        with pytest.raises(WriteError) as error:
            pack(mixed_folder, SIZE, out, workers=1)
        assert not [path for path in out.rglob("*") if path.name.endswith(PARTIAL_SUFFIX)]  # no temporary files left
        message = str(error.value)
        assert "\n" not in message and str(out) in message and " free; " in message
        return message

    def full_disk(*args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "train" / packer.PARTIAL))

    open_memmap = np.lib.format.open_memmap
    monkeypatch.setattr(np.lib.format, "open_memmap", full_disk)  # a write that is not a metadata file's
    assert "rerun the same command to resume" in failed_pack()
    monkeypatch.setattr(np.lib.format, "open_memmap", open_memmap)
    monkeypatch.setattr(os, "replace", failing_for({MANIFEST}))
    failed_pack()  # everything decoded and written but the manifest
    progress = (out / PROGRESS).read_bytes()
    assert not (out / MANIFEST).exists()
    monkeypatch.setattr(os, "replace", failing_for({PROGRESS}))
    failed_pack()  # the rerun cannot save its progress
    assert (out / PROGRESS).read_bytes() == progress
    monkeypatch.setattr(os, "replace", REPLACE)
    assert pack(mixed_folder, SIZE, out, workers=1)[1] == 0
    manifest = (out / MANIFEST).read_bytes()
    monkeypatch.setattr(os, "replace", failing_for({MANIFEST}))
    with pytest.raises(WriteError, match="the previous file is unchanged"):
        Manifest(size=SIZE, classes=[], counts={}, source="elsewhere").write(out)
    assert (out / MANIFEST).read_bytes() == manifest


def test_ctrl_c_stops_the_packer_with_one_line_and_rerunning_resumes(tmp_path: Path) -> None:
    """The real command in a terminal's foreground group (its own session here), all of which Ctrl-C interrupts:
    the packer, its fork server and its workers. 640 copies of one image: 5 chunks still to decode after the first."""
    folder = tmp_path / "images" / "noise"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / "0.png")
    for i in range(1, 640):
        os.link(folder / "0.png", folder / f"{i}.png")
    out = tmp_path / "packed"
    command = [sys.executable, "-m", "selfsup.data.pack", str(tmp_path / "images"), "--size", str(SIZE)]
    packing = subprocess.Popen(
        [*command, "--out", str(out), "--workers", "1"], cwd=REPO, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / PROGRESS).exists() or json.loads((out / PROGRESS).read_text())["done"] == {}:
        assert packing.poll() is None, packing.communicate()[1]
        assert time.monotonic() < deadline, "no chunk was recorded in 2 minutes"
        time.sleep(0.01)  # until the first chunk is decoded (its record is saved at once)
    os.killpg(packing.pid, signal.SIGINT)
    stderr = packing.communicate(timeout=60)[1]
    assert packing.returncode == 130, stderr
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    line = f"Packing into {out} interrupted; rerun the same command to resume."
    assert stderr.splitlines()[-1] == line and stderr.count(line) == 1, stderr
    manifest, decoded = pack(tmp_path / "images", SIZE, out, workers=1)
    assert manifest.counts == {"train": 640} and 0 < decoded < 640
    expected = decode_square(folder / "0.png", SIZE)
    assert (np.load(out / "train" / IMAGES) == expected).all()


def test_the_array_being_filled_has_its_disk_space_reserved(tmp_path: Path) -> None:
    """A sparse file would take its blocks only as workers write rows into its memory map, and a full disk would
    then kill a worker (SIGBUS) while the pool waits for it forever."""
    path = tmp_path / PARTIAL
    create_reserved_array(path, (40, 64, 64, 3))
    assert path.stat().st_blocks * 512 >= path.stat().st_size >= 40 * 64 * 64 * 3


def test_a_disk_that_fills_before_decoding_is_one_line_and_resumable(
    mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    with pytest.raises(WriteError, match="No space left on device.*rerun the same command to resume"):
        pack(mixed_folder, SIZE, tmp_path / "packed", workers=1)
    monkeypatch.undo()
    assert pack(mixed_folder, SIZE, tmp_path / "packed", workers=1)[0].counts["train"] > 0


@pytest.fixture
def packed(mixed_folder: Path, tmp_path: Path) -> Path:
    pack(mixed_folder, SIZE, tmp_path / "packed", workers=2)
    return tmp_path / "packed"


def test_a_damaged_or_foreign_packed_directory_is_one_clear_error(packed: Path, tmp_path: Path) -> None:
    def error(root: Path, **options) -> str:
        with pytest.raises(PackedDataError) as raised:
            SelfSupDataModule("packed", root=str(root), **options)
        assert "\n" not in str(raised.value)
        return str(raised.value)

    assert "is not a packed dataset" in error(tmp_path)
    assert "holds 16 px images, but the run asks for 24 px" in error(packed, folder_image_size=24)
    manifest = json.loads((packed / MANIFEST).read_text())
    (packed / MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    assert "version 99; this selfsup reads selfsup-packed version 1. Repack" in error(packed)
    (packed / MANIFEST).write_text(json.dumps(manifest))
    train_images = packed / "train" / IMAGES
    stored = train_images.read_bytes()
    for content in (b"a text file, not an array\n", b""):  # numpy would try to unpickle it, or stop at its end
        train_images.write_bytes(content)
        message = error(packed)
        assert message.startswith(f"{train_images} is not a packed array") and "pickle" not in message
    train_images.write_bytes(stored)
    labels = packed / "train" / LABELS
    stored = labels.read_bytes()
    np.save(labels, np.array([1, None], dtype=object), allow_pickle=True)
    message = error(packed)
    assert message.startswith(f"{labels} is not a packed array (it holds Python objects)") and "pickle" not in message
    labels.write_bytes(stored)
    images = packed / "val" / IMAGES
    images.write_bytes(images.read_bytes()[:-100])
    assert "incomplete or truncated" in error(packed)
    with pytest.raises(PackedDataError, match="needs --data.root"):
        SelfSupDataModule("packed")


def test_views_default_to_the_packed_size(packed: Path) -> None:
    data = SelfSupDataModule("packed", root=str(packed))
    assert (data.image_size, data.folder_image_size, data.classes) == (SIZE, SIZE, ["cat", "dog", "eel"])
    assert SelfSupDataModule("packed", root=str(packed), image_size=12).image_size == 12


def batches(data: SelfSupDataModule, shard: Shard, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data.source.setup(shard)
    loader = data.source.train_loader(data.batch_size, shard, None)
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_host_placement_serves_the_batches_the_device_placement_does(packed: Path) -> None:
    cpu = torch.device("cpu")
    on_device = SelfSupDataModule("packed", root=str(packed), batch_size=8, placement="gpu")
    on_host = SelfSupDataModule("packed", root=str(packed), batch_size=8, placement="host")
    for epoch in (0, 1):
        device_batches = batches(on_device, Shard(0, 1, cpu, 5), epoch)
        host_batches = batches(on_host, Shard(0, 1, cpu, 5), epoch)
        assert len(device_batches) == len(host_batches) == 42 // 8
        for (images, labels), (host_images, host_labels) in zip(device_batches, host_batches, strict=True):
            assert images.shape == (8, 3, SIZE, SIZE) and images.dtype == torch.uint8
            assert torch.equal(images, host_images) and torch.equal(labels, host_labels)
    for placement in (on_device, on_host):  # evaluation: every labelled training and test image once
        bank, test = placement.source.evaluation_loaders(8, 0, 1)
        assert sum(len(labels) for _, labels in bank) == 42 and sum(len(labels) for _, labels in test) == 12


def test_each_rank_of_a_sharded_placement_holds_and_reshuffles_only_its_shard(packed: Path) -> None:
    whole = torch.from_numpy(np.load(packed / "train" / IMAGES)).permute(0, 3, 1, 2)
    cpu = torch.device("cpu")
    for rank in (0, 1):
        data = SelfSupDataModule("packed", root=str(packed), batch_size=4, placement="gpu_shard")
        epochs = [torch.cat([images for images, _ in batches(data, Shard(rank, 2, cpu, 5), epoch)]) for epoch in (0, 1)]
        assert len(data.source.placed[0]) == 21  # every other image of 42: the shard, and nothing more
        shard = {image.numpy().tobytes() for image in whole[rank::2]}  # disjoint between the two ranks
        for images in epochs:
            assert len(images) == 20 and {image.numpy().tobytes() for image in images} <= shard
        assert not torch.equal(epochs[0], epochs[1])  # reshuffled every epoch
    one_rank = [
        batches(
            SelfSupDataModule("packed", root=str(packed), batch_size=4, placement=placement), Shard(0, 1, cpu, 5), 0
        )
        for placement in ("gpu_shard", "gpu")
    ]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*one_rank, strict=True))  # one shard: the whole shuffle


@pytest.mark.parametrize(
    ("requested", "free_gib", "expected"),
    [
        ("auto", 80, "gpu"),  # 20 GiB of images + 24 GiB for the model fit in 80
        ("auto", 38, "gpu_shard"),  # 19 GiB held back: the 10 GiB shard fits, the 20 GiB set does not
        ("auto", 30, "gpu_shard"),  # half of 30 GiB is held back, not 24: the shard still fits
        ("auto", 18, "host"),  # 9 GiB held back: nothing fits
        ("host", 80, "host"),
        ("gpu", 21, "gpu"),  # explicit: only has to fit at all
    ],
)
def test_automatic_placement_follows_the_memory_arithmetic(requested: str, free_gib: float, expected: str) -> None:
    placement = choose_placement(requested, 20 * GIB, 10 * GIB, torch.device("cuda"), 24, free_bytes=free_gib * GIB)
    assert placement == expected
    assert choose_placement("auto", 20 * GIB, 10 * GIB, torch.device("cpu"), 24) == "host"
    fashion_mnist = 60_000 * 28 * 28 + 10_000 * 28 * 28  # bytes: on any GPU with some memory free
    assert choose_placement("auto", fashion_mnist, fashion_mnist, torch.device("cuda"), 24, free_bytes=8 * GIB) == "gpu"


def test_an_explicit_placement_that_cannot_fit_names_the_numbers_and_the_alternative() -> None:
    with pytest.raises(
        ValueError, match="gpu needs 20.0 GiB on each device, which has 15.0 GiB free; use --data.placement gpu_shard"
    ):
        choose_placement("gpu", 20 * GIB, 10 * GIB, torch.device("cuda"), 24, free_bytes=15 * GIB)


def fit_packed(root: Path, runs: Path, placement: str, *args: str):
    return main([
        "fit", "--config", str(REPO / "configs" / "simclr.yaml"), "--wandb", "false",
        "--data.dataset", "packed", "--data.root", str(root), "--data.placement", placement,
        "--data.batch_size", "8", "--model.init_args.backbone", "test_resnet", "--model.init_args.warmup_epochs", "0.5",
        "--trainer.default_root_dir", str(runs), "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--export_backbone", "false", "--trainer.log_every_n_steps", "1",
        *args,
    ])  # fmt: skip


def test_every_placement_trains_the_same_run_with_the_knn_monitor_and_resumes_exactly(
    packed: Path, tmp_path: Path
) -> None:
    """gpu placement (on the CPU device here), one-rank gpu_shard, and host placement interrupted after its first
    epoch and resumed: the same batches and views, so bitwise the same weights."""
    runs = tmp_path / "runs"
    resident = fit_packed(packed, runs, "gpu")
    assert resident.datamodule.source.placement == "gpu" and 0 <= resident.trainer.callback_metrics["val/knn_top1"] <= 1
    fit_packed(packed, runs, "gpu_shard")
    fit_packed(packed, runs, "host", *STOP_AFTER_FIRST_EPOCH)
    checkpoint = runs / "simclr" / "version_2" / "checkpoints" / "last.ckpt"
    fit_packed(packed, runs, "host", "--ckpt_path", str(checkpoint))
    weights = [
        torch.load(runs / "simclr" / f"version_{v}" / "checkpoints" / "last.ckpt", weights_only=True) for v in (0, 1, 3)
    ]
    assert weights[0]["global_step"] == weights[2]["global_step"] == 2 * (42 // 8)
    for key, value in weights[0]["state_dict"].items():
        assert torch.equal(weights[1]["state_dict"][key], value), f"{key}: gpu_shard differs from gpu"
        assert torch.equal(weights[2]["state_dict"][key], value), f"{key}: resumed host differs from gpu"


def test_resuming_mid_epoch_into_another_order_says_so(packed: Path) -> None:
    """A checkpoint of 2 sharded ranks resumed by one rank cannot continue its epoch exactly: a warning says why."""
    data = SelfSupDataModule("packed", root=str(packed), batch_size=4, placement="gpu")
    data.source.setup(Shard(0, 1, torch.device("cpu"), 5))
    with pytest.warns(UserWarning, match="dealt as one shuffle where the checkpoint dealt 2 shards"):
        data.source.train_loader(
            4, Shard(0, 1, torch.device("cpu"), 5), {"epoch": 0, "samples_served": 8, "order": "2 shards"}
        )
    loader = data.source.train_loader(4, Shard(0, 1, torch.device("cpu"), 5), {"epoch": 0, "samples_served": 8})
    assert len(list(loader)) == 42 // 4 - 2 and data.state_dict()["train_position"]["order"] == "one shuffle"
