"""selfsup: self-supervised vision pretraining on PyTorch Lightning.

Nothing heavy is imported here (no wandb), so that `import selfsup` stays cheap and works on machines
where optional logging packages are missing.
"""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it, `selfsup --version` prints it
