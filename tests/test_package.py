"""selfsup as a package: the wheel, its `selfsup` command and configs from any folder, light entry points."""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path
from subprocess import PIPE

import pytest

import selfsup
from selfsup.__main__ import COMMANDS, main
from selfsup.cli import main as cli_main
from selfsup.config_names import shipped_configs
from tests.conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]
TINY_FIT = [
    "--data.batch_size", "8", "--data.num_workers", "0", "--data.image_size", "16", "--model.init_args.backbone",
    "test_resnet", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar",
    "false", "--wandb", "false",
]  # fmt: skip
QUICK_EVAL = ["--map_points", "0", "--wandb", "false"]
HEAVY = ("torch", "numpy", "pytorch_lightning", "timm", "wandb", "selfsup.cli")


def test_import_ssl_is_still_the_standard_library() -> None:
    import ssl

    import selfsup  # noqa: F401

    assert hasattr(ssl, "SSLContext") and "site-packages" not in ssl.__file__


def test_package_works_without_wandb_installed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The GPU machines have no wandb: configuring a run must not need it (only --wandb true does). That importing
    the command loads no wandb is tests/test_imports.py's check."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail, as if it were not installed
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(REPO / "configs" / "simclr.yaml"), "--wandb", "false", "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "wandb: false" in capsys.readouterr().out


def test_the_commands_entry_module_imports_nothing_heavy() -> None:
    """The packer's workers import their parent's main program again (the `selfsup` script imports this module):
    each would load torch and Lightning before decoding an image if it did."""
    code = "import sys, selfsup.__main__; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert not set(HEAVY) & set(result.stdout.split())


def test_the_command_routes_pack_and_report_under_their_own_names_and_refuses_an_unknown_one(
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", "folder"])
    assert str(exit_info.value.code).endswith("(see selfsup pack --help)")
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert capsys.readouterr().out.startswith("usage: selfsup report [-h]")
    with pytest.raises(SystemExit) as exit_info:
        main(["train"])
    assert exit_info.value.code == (
        "error: unknown command 'train'; choose one of fit, validate, eval, export, pack, report (selfsup --help)"
    )


def test_the_wheel_installs_a_selfsup_command_that_trains_evaluates_exports_and_packs_from_any_folder(
    tmp_path: Path,
) -> None:
    """Built and installed as a user would (its dependencies taken from this environment, the checkout out of
    sight), the command runs a tiny fit with configs by name, eval and export on its checkpoint, and a pack (whose
    workers import the command's script again), all from an empty folder."""
    wheel = build_wheel(tmp_path)
    files = set(zipfile.ZipFile(wheel).namelist())
    assert {f"selfsup/configs/{name}.yaml" for name in shipped_configs()} <= files
    assert {"selfsup/py.typed", f"selfsup-{selfsup.__version__}.dist-info/licenses/LICENSE"} <= files
    venv = install_without_the_checkout(wheel, tmp_path / "venv")
    images, folder = make_image_folder(tmp_path / "images"), tmp_path / "empty"
    folder.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"WANDB_MODE": "offline"}
    started: list[subprocess.Popen] = []

    def start(*args: str, program: str = "selfsup") -> subprocess.Popen:
        command = [str(venv / "bin" / program), *args]
        started.append(subprocess.Popen(command, cwd=folder, env=env, text=True, stdout=PIPE, stderr=PIPE))
        return started[-1]

    def output(process: subprocess.Popen) -> str:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err[-3000:]
        return out

    try:
        imported = output(start("-c", "import selfsup; print(selfsup.__file__)", program="python"))
        assert Path(imported.strip()).is_relative_to(venv)
        assert output(start("--version")) == f"selfsup {selfsup.__version__}\n"
        usage = output(start("--help"))
        assert all(f"\n  {name} " in usage for name in COMMANDS)

        # two at a time where nothing connects them: each command spends most of its time importing torch
        pack = start("pack", str(images), "--size", "16", "--out", "packed", "--workers", "1")
        output(start("fit", "--config", "simclr", "--config", "trainer/cpu", "--config", "data/image_folder",
                     "--data.root", str(images), *TINY_FIT))  # fmt: skip
        checkpoint = folder / "runs" / "simclr" / "version_0" / "checkpoints" / "last.ckpt"
        evaluation = start("eval", "--config", "eval/knn", "--ckpt_path", str(checkpoint), *QUICK_EVAL)
        export = start("export", "--ckpt_path", str(checkpoint), "--out", "exported.safetensors")
        assert "preprocess = v2.Compose([v2.ToImage(), v2.RGB()" in output(export)
        assert json.loads((folder / "exported.json").read_text())["in_channels"] == 3
        output(evaluation)
        assert json.loads((checkpoint.parent / "results.json").read_text())["knn"]["sweep"]
        output(pack)
        assert json.loads((folder / "packed" / "packed.json").read_text())["counts"] == {"train": 48, "val": 16}
    finally:  # a failed step leaves no command running
        for process in started:
            process.kill()
            process.wait()


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout's package (a build writes build/ and egg-info beside its sources)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "selfsup", source / "selfsup", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("selfsup-*.whl")
    return wheel


def install_without_the_checkout(wheel: Path, venv: Path) -> Path:
    """A new virtual environment holding `wheel`, and this environment's packages through a path file: its
    lines add folders to sys.path but run none of their .pth files, so this environment's editable selfsup stays
    out of sight. The path file comes after the install, so pip neither sees nor touches those packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site_packages = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    Path(site_packages, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv
