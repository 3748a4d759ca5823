"""What the config files may change: a data config sets data only, so every method keeps its own views, rendered
at the data's image size (multi-crop's local crops in proportion), whatever data it trains on."""

import inspect
from pathlib import Path

import pytest
import yaml
from torch import nn

from selfsup.augment import ViewRecipe
from selfsup.cli import SelfSupCLI
from selfsup.methods import METHODS, MoCoV3
from tests.conftest import PACKED_SIZE

REPO = Path(__file__).resolve().parents[1]
METHOD_CONFIGS = sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))
# configs named after no method: another setting of a registered method (mocov3_vit), with that method's views
VARIANT_CONFIGS = [name for name in METHOD_CONFIGS if name not in METHODS]
DATA_IMAGE_SIZES = {
    "cifar10": 32, "cifar100": 32, "fashion_mnist": 32, "image_folder": 224, "packed": PACKED_SIZE, "stl10": 96,
}  # fmt: skip


def own_views(method_class: type) -> tuple[ViewRecipe, ...]:
    """The views a method class declares as its default (its own `views` argument, or its base class's)."""
    for cls in method_class.__mro__:
        parameter = inspect.signature(cls.__init__).parameters.get("views")
        if parameter is not None:
            return tuple(parameter.default)
    raise AssertionError(f"{method_class} has no views argument")


def test_method_configs_set_the_method_only() -> None:
    """The data and the run's length are defaults or their own configs', so resuming with a method config never
    conflicts with the data a run was trained on; the views are the method's own, from its code."""
    for name in METHOD_CONFIGS:
        config = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
        assert set(config) <= {"model", "trainer"} and set(config.get("trainer", {})) <= {"sync_batchnorm"}, name
        assert "views" not in config["model"].get("init_args", {}), name


def test_every_data_config_is_listed_and_sets_data_only() -> None:
    data_configs = sorted((REPO / "configs" / "data").glob("*.yaml"))
    assert sorted(path.stem for path in data_configs) == sorted(DATA_IMAGE_SIZES)
    for path in data_configs:
        assert set(yaml.safe_load(path.read_text())) == {"data"}, f"{path.name} sets more than data"


def instantiate(*args: str, root: Path) -> SelfSupCLI:
    """The configured method, data and trainer, built as `train.py fit` would build them, without training."""
    options = ["--data.root", str(root), "--wandb", "false"]  # built-in datasets are not read here
    return SelfSupCLI(args=[*args, *options], run=False)


@pytest.fixture
def data_root(request: pytest.FixtureRequest, image_folder: Path) -> Path:
    """A root for the data config under test: packed sets need a packed directory, the others any folder."""
    return (
        request.getfixturevalue("packed_folder") if request.node.callspec.params["data"] == "packed" else image_folder
    )


def test_every_method_has_its_config() -> None:
    assert set(METHODS) <= set(METHOD_CONFIGS)


def one_method_per_view_recipe() -> list[str]:
    """The first registered method of each distinct default view recipe. Data configs treat methods alike but for
    their views, and method configs never set views (`test_method_configs_set_the_method_only`), so these methods
    cover every case of the test below."""
    methods: dict[tuple[ViewRecipe, ...], str] = {}
    for name in sorted(METHODS):
        methods.setdefault(own_views(METHODS[name]), name)
    return sorted(methods.values())


@pytest.mark.parametrize("data", sorted(DATA_IMAGE_SIZES))
@pytest.mark.parametrize("method", one_method_per_view_recipe())
def test_data_configs_keep_the_methods_views_at_the_datas_image_size(method: str, data: str, data_root: Path) -> None:
    method_config, data_config = REPO / "configs" / f"{method}.yaml", REPO / "configs" / "data" / f"{data}.yaml"
    cli = instantiate(
        "--config", str(method_config), "--config", str(data_config), "--model.init_args.backbone", "test_resnet",
        root=data_root,
    )  # fmt: skip
    size = DATA_IMAGE_SIZES[data]
    recipes = own_views(type(cli.model))
    assert cli.model.multiview.recipes == recipes
    assert cli.model.multiview.sizes == tuple(recipe.size(size) for recipe in recipes)
    assert cli.model.clean_view.size == size


def test_a_config_named_after_no_method_sets_a_registered_method() -> None:
    """A variant trains a registered method, whose name its runs take (runs/mocov3/ for mocov3_vit)."""
    registered = {f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}" for cls in METHODS.values()}
    assert "mocov3_vit" in VARIANT_CONFIGS
    for name in VARIANT_CONFIGS:
        assert yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())["model"]["class_path"] in registered


def test_mocov3s_vit_config_builds_on_the_default_data(tmp_path: Path) -> None:
    """MoCo v3's ViT setting builds on the default data (Fashion-MNIST at 32 px): AdamW, the patch embedding frozen
    (the random patch projection), MoCo v3's own views. A ViT-Ti and narrow heads stand in for the ViT-S and its
    4096-wide heads, which take seconds to build."""
    small = ["--model.init_args.backbone", "vit_tiny_patch16_224", "--model.init_args.projector_hidden_dim", "64",
             "--model.init_args.predictor_hidden_dim", "64"]  # fmt: skip
    cli = instantiate("--config", str(REPO / "configs" / "mocov3_vit.yaml"), *small, root=tmp_path)
    assert isinstance(cli.model, MoCoV3) and cli.model.hparams.optimizer == "adamw"
    assert not any(parameter.requires_grad for parameter in cli.model.backbone.patch_embed.parameters())
    assert cli.model.multiview.recipes == own_views(MoCoV3) and cli.model.clean_view.size == 32


@pytest.mark.parametrize("data", sorted(DATA_IMAGE_SIZES))
def test_resnets_get_the_small_image_stem_at_small_image_sizes_only(data: str, data_root: Path) -> None:
    data_config = REPO / "configs" / "data" / f"{data}.yaml"
    cli = instantiate("--config", str(REPO / "configs" / "simclr.yaml"), "--config", str(data_config), root=data_root)
    small = DATA_IMAGE_SIZES[data] <= 64
    assert isinstance(cli.model.backbone.maxpool, nn.Identity) == small
    assert cli.model.backbone.conv1.stride == ((1, 1) if small else (2, 2))
