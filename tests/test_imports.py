"""The import graph: the losses and the pieces they use stay plain PyTorch, and the CLI leaves wandb, timm,
scikit-learn and matplotlib to the runs that use them. Checked in a fresh interpreter (the test session has long
imported everything), by which modules importing a target loads, not by how long it takes."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LIGHTNING = {"pytorch_lightning", "lightning", "lightning_fabric"}
HEAVY_EXTRAS = {"timm", "wandb", "sklearn", "matplotlib"}
# The modules a plain PyTorch loop uses, and what each must not load: neither Lightning nor the heavy extras.
PLAIN_TORCH = [
    "selfsup.losses",
    "selfsup.augment",
    "selfsup.models.hard_negative_mixing",
    "selfsup.models.queue",
    "selfsup.models.momentum",
    "selfsup.models.prototypes",
    "selfsup.models.heads",
]
CLI = "selfsup.cli"
# Lightning imports torchmetrics, which imports matplotlib.pyplot whenever matplotlib is installed, so the CLI's
# own share of matplotlib is checked by who imports it: no selfsup module may, until it draws.
CLI_MUST_NOT_LOAD = {"timm", "wandb", "sklearn"}

# Imports the targets one after another, recording the top-level packages each one newly loads, and which selfsup
# modules import a heavy package themselves (every `import` statement passes through builtins.__import__).
PROBE = """
import builtins, importlib, json, sys
watched = set(json.loads(sys.argv[1]))
direct = {}
plain_import = builtins.__import__


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer, package = (globals or {}).get("__name__", ""), name.partition(".")[0]
    if level == 0 and package in watched and importer.startswith("selfsup"):
        direct.setdefault(package, set()).add(importer)
    return plain_import(name, globals, locals, fromlist, level)


builtins.__import__ = recording_import
loaded = {}
for target in sys.argv[2:]:
    before = set(sys.modules)
    importlib.import_module(target)
    loaded[target] = sorted({name.partition(".")[0] for name in set(sys.modules) - before} & watched)
print(json.dumps({"loaded": loaded, "direct": {package: sorted(by) for package, by in direct.items()}}))
"""


@pytest.fixture(scope="module")
def import_graph() -> dict[str, Any]:
    """One fresh interpreter for every case: the plain-PyTorch modules first, then the CLI. Each plain module is
    checked for every watched package, so what the CLI newly loads after them is all it loads of those."""
    watched = json.dumps(sorted(LIGHTNING | HEAVY_EXTRAS))
    command = [sys.executable, "-c", PROBE, watched, *PLAIN_TORCH, CLI]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def importers(import_graph: dict[str, Any], packages: list[str]) -> dict[str, list[str]]:
    """The selfsup modules that import each of `packages` themselves (none: a dependency pulls it in)."""
    return {package: import_graph["direct"].get(package, []) for package in packages}


@pytest.mark.parametrize("module", PLAIN_TORCH)
def test_plain_torch_modules_load_no_lightning_timm_wandb_sklearn_or_matplotlib(
    import_graph: dict[str, Any], module: str
) -> None:
    loaded = import_graph["loaded"][module]
    assert loaded == [], f"{module} loads {loaded}, imported by {importers(import_graph, loaded)}"


def test_the_cli_leaves_timm_wandb_and_sklearn_to_the_runs_that_use_them(import_graph: dict[str, Any]) -> None:
    loaded = sorted(set(import_graph["loaded"][CLI]) & CLI_MUST_NOT_LOAD)
    assert loaded == [], f"{CLI} loads {loaded}, imported by {importers(import_graph, loaded)}"


def test_no_selfsup_module_imports_a_heavy_extra_at_import_time(import_graph: dict[str, Any]) -> None:
    """matplotlib is loaded by Lightning's torchmetrics anyway; selfsup imports it (and sklearn, timm, wandb)
    inside the functions that draw, fit t-SNE, build a timm backbone or log to wandb."""
    assert importers(import_graph, sorted(HEAVY_EXTRAS)) == dict.fromkeys(sorted(HEAVY_EXTRAS), [])


def test_build_backbone_is_still_imported_from_selfsup_models() -> None:
    """`selfsup.models` loads the backbones on first use; the name stays where it was, other names stay errors."""
    import selfsup.models as models
    from selfsup.models import build_backbone
    from selfsup.models.backbones import build_backbone as defined

    assert build_backbone is defined
    with pytest.raises(AttributeError, match="'selfsup.models' has no attribute 'resnet'"):
        _ = models.resnet
