"""Every mistake a user can make with train.py ends in one line that names the fix, before any training, and
leaves nothing behind: no traceback, no page of usage, no NaN weights, no empty run folder."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from selfsup.atomic import nearest_existing
from selfsup.cli import config_files, main
from selfsup.config_names import SHIPPED_CONFIGS, shipped_configs
from selfsup.loggers import discard_run
from tests.data.test_datasets import fake_fashion_mnist
from tests.test_train_cli import REPO, tiny_folder_args

QUICK = ["--data.max_samples", "64", "--data.batch_size", "16", "--trainer.max_epochs", "1", "--wandb", "false"]


def one_line_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """The message `train.py <args>` exits with; it must be one line, with no usage or traceback around it."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    message = str(exit_info.value.code)
    err = capsys.readouterr().err
    assert message.startswith("error: ") and "\n" not in message, message
    assert "usage:" not in err and "Traceback" not in err, err
    return message


def fit(config: str, root: Path, *args: str) -> list[str]:
    return ["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), "--trainer.default_root_dir", str(root), *args]


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ("simclr", ["--model.init_args.temprature", "0.3"], "Option 'temprature' is not accepted"),
        ("simclr", ["--data.dataset", "imagenet"], "Unknown dataset 'imagenet'"),
        ("simclr", ["--model.init_args.backbone", "resnet81"], "Unknown backbone 'resnet81'"),
        ("simclr", ["--model.init_args.backbone", "vit_tiny_patch16_224"], "cannot take 32 px images"),
        ("simclr", ["--model.init_args.backbone_kwargs", "{img_size: 32}"], "do not fit 'resnet18'"),
        ("simclr", ["--data.root", "/nonexistent/data"], "does not exist"),
        (
            "mocov2",
            ["--model.init_args.temperature", "0"],
            "--model.init_args.temperature must be greater than 0, got 0",
        ),
        (
            "swav",
            ["--model.init_args.temperature", "-1", "--model.init_args.num_prototypes", "1"],
            "num_prototypes must",
        ),
        (
            "nnclr",
            ["--model.init_args.neighbours.num_neighbours", "0"],
            "--model.init_args.neighbours.num_neighbours must be at least 1, got 0",
        ),
        (
            "msf",
            ["--model.init_args.neighbours.support_size", "4"],
            "--model.init_args.neighbours.num_neighbours (5) must not exceed support_size (4)",
        ),
        (
            "nnclr",
            ["--model.init_args.neighbours.support_size", "0"],
            "--model.init_args.predictor_hidden_dim needs neighbours",
        ),
        ("byol", ["--model.init_args.tau_base", "1.5"], "--model.init_args.tau_base must lie in [0, 1], got 1.5"),
        ("mochi", ["--model.init_args.mixing.num_hard", "-8"], "--model.init_args.mixing.num_hard must be at least 0"),
        (
            "mochi",
            ["--model.init_args.transformation.negative_alpha", "1.6"],
            "--model.init_args.transformation and mixing do not combine (both synthesise negatives): switch one off",
        ),
        (
            "simclr",
            ["--model.init_args.negatives.tau_plus", "0.1", "--model.init_args.decoupled", "true"],
            "--model.init_args.negatives (debiasing, hard negative sampling) and decoupled do not combine",
        ),
        (
            "mocov2",
            ["--model.init_args.cacr.enabled", "true", "--model.init_args.negatives.beta", "1"],
            "--model.init_args.cacr and negatives do not combine",
        ),
        (
            "simclr",
            ["--model.init_args.transformation.positive_alpha", "2", "--model.init_args.negatives.tau_plus", "0.1"],
            "--model.init_args.negatives (debiasing, hard negative sampling) and transformation do not combine",
        ),
        ("simclr", ["--model.init_args.base_lr", "0"], "--model.init_args.base_lr must be greater than 0, got 0"),
        ("simclr", ["--data.batch_size", "0"], "--data.batch_size must be at least 1, got 0"),
        ("simclr", ["--data.image_size", "0"], "--data.image_size must be at least 1, got 0"),
        ("simclr", ["--trainer.max_epochs", "-1"], "--trainer.max_epochs must be at least 1, got -1"),
        ("simclr", ["--model.init_args.views", '[{"flip_prob": 2}]'], "flip_prob is a probability in [0, 1], got 2"),
        ("simclr", ["--model.init_args.views", '[{"num_views": 3}]'], "SimCLR needs exactly 2 views per image"),
        (
            "polyview",
            ["--model.init_args.views", '[{"num_views": 1}]'],
            "--model.init_args.views must give at least 2 views of each image for a poly-view loss, got 1",
        ),
        (
            "polyview",
            ["--model.init_args.objective", "harmonic"],
            "--model.init_args.objective: Expected a typing.Literal['geometric', 'arithmetic', 'multi_crop']",
        ),
        ("simclr", ["--model", "Foo"], "Unknown method 'Foo'. Registered methods: simclr (SimCLR), mocov2 (MoCoV2)"),
        ("simclr", ["--model", "torch.nn.Linear"], "Unknown method 'torch.nn.Linear'. Registered methods: simclr"),
        ("byol", ["--model.init_args.predictor_hidden_dim", "0"], "--model.init_args.predictor_hidden_dim must be"),
        (
            "dino",
            ["--model.init_args.warmup_teacher_temperature", "0", "--model.init_args.center_momentum", "1.5"],
            "warmup_teacher_temperature must be greater than 0, got 0.0; --model.init_args.center_momentum must lie in",
        ),
        (
            "barlowtwins",
            ["--model.init_args.off_diagonal_weight", "-1"],
            "--model.init_args.off_diagonal_weight must be at least 0, got -1",
        ),
        ("vicreg", ["--model.init_args.variance_weight", "-1"], "--model.init_args.variance_weight must be at least 0"),
        ("wmse", ["--data.batch_size", "192"], "the per-device batch must be a multiple of w_size; got 192"),
        (
            "simsiam",
            ["--model.init_args.projector_num_layers", "0"],
            "--model.init_args.projector_num_layers must be at least 1",
        ),
        (
            "mocov3",
            ["--model.init_args.random_patch_projection", "true"],
            "random_patch_projection freezes a ViT's patch embedding (patch_embed), and 'resnet18' has none",
        ),
        ("simclr", ["--seed_everything", "-1"], "--seed_everything must lie in [0, 4294967295], got -1"),
        ("simclr", ["--trainer.accelerator", "mps"], "fix the --trainer options for this machine"),
        ("simclr", ["--data.dataset", "packed"], "--data.dataset packed needs --data.root pointing at the packed"),
        ("simclr", ["--data.dataset", "packed", "--data.root", str(REPO)], "is not a packed dataset (no packed.json)"),
        (
            "simclr",
            ["--data.dataset", "image_folder", "--data.root", str(REPO), "--data.placement", "host"],
            "image folders are read by DataLoader workers. Pack the folder first",
        ),
        ("simclr", ["--data.placement", "vram"], "placement"),
        ("simclr", ["--model.init_args.base_lr", "nan"], "--model.init_args.base_lr: NaN is not a valid value; give a"),
        ("simclr", ["--model.init_args.knn_k", "inf"], "knn_k: infinity is not a valid value; give a whole number"),
        (
            "simclr",
            ["--model.init_args.temperature", "warm"],
            "temperature: expected a number, such as 0.5, got 'warm'",
        ),
        (
            "simclr",
            ["--data.image_size", "100000"],
            "At image size 100000, one batch of views (16 images x 2 views of up to 100000 px, float32) needs 3.5 TiB",
        ),
        ("simclr", ["--trainer.default_root_dir", "/proc/selfsup"], "default_root_dir /proc/selfsup cannot be written"),
        ("simclr", ["--trainer.default_root_dir", "null"], "--trainer.default_root_dir must name a folder"),
        ("simclr", ["--model.init_args.base_lr", "1e400"], "--model.init_args.base_lr must be finite, got inf"),
    ],
)
def test_bad_option_is_one_line_before_anything_is_built(
    config: str, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert message in one_line_error(fit(config, tmp_path, *QUICK, *args), capsys)
    assert not any(tmp_path.iterdir()), "nothing may be written before the error"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file (byte 0 is not UTF-8)"),
        (b"trainer:\x00\n", "is not a text file (it holds NUL bytes)"),
        (b"", "is empty"),
        (b"# only a comment\n", "is empty"),
        (b"trainer:\n  max_epochs: 1\n- 3\n", "is not valid YAML at line 3, column 1"),
        (b"just some words\n", "holds a str, not options (key: value lines)"),
        (b"- trainer\n", "holds a list, not options"),
        (b"model: !!python/object/apply:os.system [echo unsafe]\n", "is not valid YAML at line 1, column 8"),
    ],
)
def test_a_config_file_that_is_not_options_is_named_with_its_problem(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = _write(tmp_path / "mine.yaml", content)
    text = one_line_error([*fit("simclr", tmp_path / "runs"), "--config", str(config)], capsys)
    assert text.startswith(f"error: --config {config} {message}")
    assert text.endswith("; pass a YAML file of options, such as configs/simclr.yaml.")
    assert not (tmp_path / "runs").exists()


def test_the_short_config_flag_is_checked_and_long_inline_yaml_is_not_taken_for_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = _write(tmp_path / "mine.yaml", b"\xff\xfe")
    assert "is not a text file" in one_line_error(["fit", "-c", str(config)], capsys)
    inline = "{" + ", ".join(f"option_{index}: 1" for index in range(40)) + "}"  # longer than a file name can be
    assert "does not accept option 'option_0'" in one_line_error(["fit", "--config", inline], capsys)


def test_no_method_lists_the_registered_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    message = one_line_error(["fit", "--trainer.default_root_dir", str(tmp_path)], capsys)
    assert (
        "No method given. Registered methods: simclr (SimCLR)" in message
        and "pass --config <method> or --model <Class>." in message
    )


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _saved(path: Path, content: object) -> Path:
    torch.save(content, path)
    return path


@pytest.mark.parametrize(
    ("make_checkpoint", "message"),
    [
        (lambda d: d / "missing.ckpt", "does not exist"),
        (lambda d: d, "is a folder, not a checkpoint. It holds no checkpoints/last.ckpt; pass --ckpt_path runs/"),
        (
            lambda d: _write(d / "cut.ckpt", _saved(d / "whole.ckpt", {"w": torch.ones(100)}).read_bytes()[:200]),
            "weights-only",
        ),
        (lambda d: _write(d / "notes.ckpt", b"not a checkpoint"), "cannot be loaded as a weights-only checkpoint"),
        (lambda d: _saved(d / "pickled.ckpt", {"hook": print}), "cannot be loaded as a weights-only checkpoint"),
        (lambda d: _saved(d / "other.ckpt", {"weights": torch.ones(2)}), "is not a selfsup pretraining checkpoint"),
    ],
)
def test_bad_checkpoint_to_resume_is_one_line_without_the_unsafe_loading_hint(
    make_checkpoint, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = make_checkpoint(tmp_path)
    text = one_line_error(fit("simclr", tmp_path / "runs", *QUICK, "--ckpt_path", str(checkpoint)), capsys)
    assert message in text and "weights_only=False" not in text
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("existed", ["nothing", "runs", "runs/simclr"])
def test_a_discarded_run_removes_only_the_folders_it_made(existed: str, tmp_path: Path) -> None:
    if existed != "nothing":
        (tmp_path / existed).mkdir(parents=True)
    kept = nearest_existing(tmp_path / "runs" / "simclr")
    run = tmp_path / "runs" / "simclr" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    discard_run([], run, kept)
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert left == {"nothing": [], "runs": ["runs"], "runs/simclr": ["runs", "runs/simclr"]}[existed]


@pytest.mark.parametrize("given", ["checkpoints", "run", "runs root"])
def test_a_folder_given_as_checkpoint_names_the_last_checkpoint_inside(
    given: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoints = tmp_path / "runs" / "simclr" / "version_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").touch()
    folder = {"checkpoints": checkpoints, "run": checkpoints.parent, "runs root": tmp_path / "runs"}[given]
    text = one_line_error(["eval", "--ckpt_path", str(folder)], capsys)
    assert text.endswith(f"is a folder, not a checkpoint. Pass --ckpt_path {checkpoints / 'last.ckpt'}")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: _write(f / "train-images-idx3-ubyte.gz", b"\x00\x00\x08\x03plain bytes"), "cannot be decompressed"),
        (lambda f: _write(f / "t10k-labels-idx1-ubyte", (f / "t10k-labels-idx1-ubyte").read_bytes()[:-3]), "truncated"),
        (
            lambda f: _write(f / "t10k-labels-idx1-ubyte", (f / "t10k-labels-idx1-ubyte").read_bytes()[:6]),
            "ends inside its header",
        ),
    ],
)
def test_damaged_fashion_mnist_file_is_one_line_and_leaves_no_run_folder(
    damage, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "fmnist"
    fake_fashion_mnist(folder, train=32, test=16)
    damage(folder)
    text = one_line_error(fit("simclr", tmp_path / "runs", *QUICK, "--data.root", str(folder)), capsys)
    assert message in text and folder.name in text
    assert not (tmp_path / "runs").exists(), "a run that fails before training leaves no folder it made"


def test_corrupt_image_read_by_a_worker_is_one_line(
    tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    (image_folder / "train" / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    args = [*tiny_folder_args(image_folder), "--data.num_workers", "1", "--trainer.max_epochs", "1", "--wandb", "false"]
    text = one_line_error(fit("simclr", tmp_path / "runs", *args), capsys)
    assert "Cannot decode image" in text and "broken.png" in text and "remove or replace the file" in text


def test_validation_folder_with_a_class_training_lacks_is_one_line(
    tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    (image_folder / "val" / "green").mkdir()
    (image_folder / "val" / "red" / "0.png").rename(image_folder / "val" / "green" / "0.png")
    text = one_line_error(fit("simclr", tmp_path / "runs", *tiny_folder_args(image_folder)), capsys)
    assert "['green']" in text and "the training folder does not have" in text
    assert not (tmp_path / "runs").exists()


def test_a_mistake_under_ddp_is_one_line_not_one_per_rank(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "fmnist", train=32, test=8)
    command = [
        sys.executable, "train.py", *fit("simclr", tmp_path / "runs", "--data.root", str(tmp_path / "fmnist")),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--wandb", "false",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and result.stderr.count("error: ") == 1, result.stderr[-2000:]
    assert "--data.batch_size 512 is larger than the 16 training images each of 2 device(s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_subcommand_including_eval(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert all(subcommand in printed for subcommand in ("fit", "validate", "eval", "selfsup eval --help", "export"))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("simclr2", "--config simclr2 is neither a file nor a config shipped with selfsup (did you mean simclr?); "),
        ("data/imagenet.yaml", "--config data/imagenet.yaml is neither a file nor a config shipped with selfsup"),
        ("mine.yaml", "--config mine.yaml is neither a file nor a config shipped with selfsup; pass a YAML file of"),
    ],
)
def test_a_config_name_that_is_neither_a_file_nor_shipped_lists_the_shipped_ones(
    given: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = one_line_error(["fit", "--config", given, "--trainer.default_root_dir", str(tmp_path / "runs")], capsys)
    assert message in text
    assert text.endswith(f"or one of: {', '.join(shipped_configs())}.") and "data/image_folder, " in text
    assert not (tmp_path / "runs").exists()


def test_shipped_configs_are_found_by_name_from_any_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--config simclr` (and a checkout's `configs/simclr.yaml`) outside a checkout: the files inside the package,
    which a checkout's configs/ links to; view recipes too. Inline YAML stays inline YAML."""
    assert (REPO / "configs").resolve() == SHIPPED_CONFIGS.resolve()  # one folder: the checkout's paths still work
    assert {"simclr", "data/image_folder", "trainer/cpu", "eval/knn", "views/byol"} <= set(shipped_configs())
    monkeypatch.chdir(tmp_path)
    inline = "{seed_everything: 1}"
    assert config_files(["fit", "--config", "eval/knn", "-c=configs/simclr.yaml", "--config", inline]) == [
        "fit", "--config", str(SHIPPED_CONFIGS / "eval" / "knn.yaml"), f"-c={SHIPPED_CONFIGS / 'simclr.yaml'}",
        "--config", inline,
    ]  # fmt: skip
    names = ["simclr", "trainer/cpu", "views/byol", "data/image_folder"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *(arg for name in names for arg in ("--config", name)), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "selfsup.methods.SimCLR" and config["data"]["dataset"] == "image_folder"
    assert [view["blur_prob"] for view in config["model"]["init_args"]["views"]] == [1.0, 0.1]  # BYOL's recipe
    assert (config["trainer"]["accelerator"], config["data"]["max_samples"]) == ("cpu", 2048)
