"""The `selfsup` command, also `python -m selfsup` and, in a checkout, `python train.py`: one subcommand per job.

This module imports nothing heavy, and each subcommand imports what it needs once chosen, because the packer's
worker processes import their parent's main program again (multiprocessing re-imports `__main__` in every worker
it starts; the `selfsup` console script imports this module): a worker of `selfsup pack` must not load torch and
Lightning to decode images.
"""

import sys

from selfsup import __version__
from selfsup.config_names import shipped_configs

COMMANDS = {  # each subcommand and what it does, as `selfsup --help` lists them
    "fit": "pretrain a method: selfsup fit --config simclr [--config trainer/cpu]",
    "validate": "the kNN monitor and online probe of a config or of a --ckpt_path",
    "eval": "kNN sweep, linear probe and diagnostics of a checkpoint: selfsup eval --ckpt_path CKPT",
    "export": "the backbone of a checkpoint, for timm / torchvision: selfsup export --ckpt_path CKPT",
    "pack": "decode an image folder once into arrays: selfsup pack FOLDER --size 224 --out DIR",
    "report": "a table and plots of finished runs: selfsup report runs --out report",
}


def usage() -> str:
    """The few lines of `selfsup --help`: each subcommand, and where its options are listed."""
    width = max(map(len, COMMANDS))
    return "\n".join([
        f"usage: selfsup <command> [options]   (selfsup <command> --help lists its options)   selfsup {__version__}",
        *(f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items()),
        "--config: a YAML file, or a config shipped with selfsup by name:",
        *(f"  {folder}: {', '.join(names)}" for folder, names in shipped_by_folder().items()),
    ])  # fmt: skip


def shipped_by_folder() -> dict[str, list[str]]:
    """The shipped configs' names grouped by folder ("methods" for the method configs at the top)."""
    groups: dict[str, list[str]] = {}
    for name in shipped_configs():
        folder, _, leaf = name.rpartition("/")
        groups.setdefault(f"{folder}/" if folder else "methods", []).append(leaf)
    return groups


def main(args: list[str] | None = None) -> None:
    """Run the subcommand `args[0]` (default: the command line's) with the rest of `args`."""
    argv = sys.argv[1:] if args is None else list(args)
    command = argv[0] if argv else "--help"
    if command in ("-h", "--help"):
        print(usage())
    elif command in ("-V", "--version"):
        print(f"selfsup {__version__}")
    elif command == "pack":
        from selfsup.data.pack import main as pack

        pack(argv[1:], prog="selfsup pack")
    elif command == "report":
        from selfsup.report import main as report

        report(argv[1:], prog="selfsup report")
    elif command in COMMANDS:
        from selfsup.cli import main as run

        run(args)  # None: LightningCLI reads the command line itself
    else:
        sys.exit(f"error: unknown command {command!r}; choose one of {', '.join(COMMANDS)} (selfsup --help)")


if __name__ == "__main__":
    main()
