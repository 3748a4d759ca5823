import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_ssl_is_still_the_standard_library() -> None:
    import ssl

    import selfsup  # noqa: F401

    assert hasattr(ssl, "SSLContext") and "site-packages" not in ssl.__file__


def test_package_works_without_wandb_installed() -> None:
    """The GPU machines have no wandb: importing and configuring must not need it (only --wandb true does)."""
    code = (
        "import sys; sys.modules['wandb'] = None\n"  # makes `import wandb` fail, as if it were not installed
        "from selfsup.cli import main\n"
        "main(['fit', '--config', 'configs/simclr.yaml', '--wandb', 'false', '--print_config'])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wandb: false" in result.stdout
