"""`selfsup.runs`' keys for comparing runs."""

import copy
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger

from selfsup.runs import run_name_of_logger, seed_group

CONFIG = {
    "seed_everything": 0,
    "model": {"class_path": "selfsup.methods.SimCLR", "init_args": {"temperature": 0.2, "views": [{"num_views": 2}]}},
    "data": {"dataset": "fashion_mnist", "root": "/data/a", "batch_size": 64, "num_workers": 8},
    "trainer": {"max_epochs": 100, "devices": 1, "default_root_dir": "runs", "callbacks": None},
    "ckpt_path": None,
    "wandb": True,
}


def changed(path: tuple[str, ...], value: object) -> dict:
    config = copy.deepcopy(CONFIG)
    section = config
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    return config


def test_runs_that_differ_only_by_seed_or_by_where_they_read_and_write_share_a_seed_group() -> None:
    key = seed_group(CONFIG)
    assert len(key) == 12 and key == seed_group(copy.deepcopy(CONFIG))
    for path, value in [
        (("seed_everything",), 1),
        (("data", "root"), "/data/b"),
        (("data", "num_workers"), 2),
        (("trainer", "default_root_dir"), "elsewhere"),
        (("ckpt_path",), "runs/simclr/version_0/checkpoints/last.ckpt"),
        (("wandb",), False),
    ]:
        assert seed_group(changed(path, value)) == key, path
    for path, value in [
        (("model", "init_args", "temperature"), 0.1),
        (("model", "init_args", "views"), [{"num_views": 4}]),
        (("data", "batch_size"), 128),
        (("trainer", "max_epochs"), 200),
        (("trainer", "devices"), 2),
        (("model", "class_path"), "selfsup.methods.MoCoV2"),
    ]:
        assert seed_group(changed(path, value)) != key, path


def test_a_run_is_named_from_its_logger_or_its_folder_and_never_half_named(tmp_path: Path) -> None:
    """A plain `pl.Trainer` with `CSVLogger(root, name="")` recorded the run name "-v0" in its checkpoints and
    exports."""
    assert run_name_of_logger(CSVLogger(tmp_path, name="simclr", version=3)) == "simclr-v3"  # selfsup's runs
    assert run_name_of_logger(CSVLogger(tmp_path / "logs", name="", version=0)) == "logs-v0"  # from its folder
    assert run_name_of_logger(CSVLogger(tmp_path, name="", version="")) is None
    assert run_name_of_logger(None) is None
