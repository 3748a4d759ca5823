"""The configs shipped inside the package (`selfsup/configs/*.yaml`), by name, so `--config simclr` works from any
directory. Nothing heavy is imported here: `selfsup --help` lists them before any subcommand loads torch."""

from pathlib import Path

SHIPPED_CONFIGS = Path(__file__).parent / "configs"  # a checkout's top-level `configs` links here


def shipped_configs() -> dict[str, Path]:
    """Each shipped config's file by its name, its path under `configs/` without `.yaml`: the methods' first
    (`simclr`, ...), then those in folders (`data/image_folder`, `trainer/cpu`, ...)."""
    files = {path.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix(): path
             for path in SHIPPED_CONFIGS.rglob("*.yaml")}  # fmt: skip
    return {name: files[name] for name in sorted(files, key=lambda name: ("/" in name, name))}
