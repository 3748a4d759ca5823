"""View recipes: what a group of augmented views looks like, as plain data selectable from YAML."""

from dataclasses import asdict, dataclass, fields
from typing import Any

from selfsup.errors import ConfigurationError


@dataclass(frozen=True)
class ViewRecipe:
    """A group of `num_views` views drawn with the same augmentation distribution.

    The defaults are SimCLR's CIFAR-10 recipe (Chen et al. 2020, Appendix A and B.9): random resized crop
    with scale (0.08, 1), horizontal flip, colour jitter of strength 0.5 applied with probability 0.8, and
    grayscale with probability 0.2; no blur at small resolution. A method's views are a list of recipes, so
    multi-crop is two groups with different sizes.

    Attributes:
        num_views: how many views of each image this group produces.
        size: output side length in pixels.
        crop_scale: range of the crop's area as a fraction of the image (torchvision's `scale`).
        crop_ratio: range of the crop's aspect ratio w/h (torchvision's `ratio`).
        flip_prob: probability of a horizontal flip.
        jitter_prob: probability that colour jitter is applied to a view.
        brightness: brightness factor drawn from [1 - brightness, 1 + brightness].
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        saturation: saturation factor drawn from [1 - saturation, 1 + saturation].
        hue: hue shift drawn from [-hue, hue], in fractions of a full turn (at most 0.5).
        grayscale_prob: probability of converting the view to grayscale.
        blur_prob: probability of a Gaussian blur (kernel about 10% of `size`).
        blur_sigma: range of the blur's standard deviation in pixels.
        solarize_prob: probability of solarization (pixels >= 0.5 inverted).
    """

    num_views: int = 2
    size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0

    @classmethod
    def from_dict(cls, values: "ViewRecipe | dict[str, Any]") -> "ViewRecipe":
        """Build a recipe from config values (lists become tuples); unknown keys are an error."""
        if isinstance(values, cls):
            return values
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(f"Unknown view recipe key(s) {unknown}; valid keys are {sorted(known)}.")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __post_init__(self) -> None:
        problems = []
        if self.num_views < 1:
            problems.append(f"num_views must be at least 1, got {self.num_views}")
        if self.size < 1:
            problems.append(f"size must be positive, got {self.size}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            problems.append(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            problems.append(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            problems.append(f"hue must lie in [0, 0.5], got {self.hue}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            problems.append(f"blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")
        if problems:
            raise ConfigurationError(
                "Invalid view recipe: " + "; ".join(problems) + ". Fix these values in --model.init_args.views."
            )


# Recipes of the papers, as functions of the output size. Each returns the `views` argument of a method.


def simclr_views(size: int = 32) -> tuple[ViewRecipe, ...]:
    """SimCLR (Chen et al. 2020, Appendix A): two views; blur (p=0.5) only at ImageNet resolution."""
    return (ViewRecipe(num_views=2, size=size, saturation=0.4, blur_prob=0.5 if size >= 96 else 0.0),)


def mocov2_views(size: int = 32) -> tuple[ViewRecipe, ...]:
    """MoCo v2 ("Improved Baselines with Momentum Contrastive Learning", Chen et al. 2020, Sec. 3):
    crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2, blur p=0.5 at 224 px."""
    return (ViewRecipe(num_views=2, size=size, crop_scale=(0.2, 1.0), blur_prob=0.5 if size >= 96 else 0.0),)


def byol_views(size: int = 32) -> tuple[ViewRecipe, ...]:
    """BYOL ("Bootstrap Your Own Latent", Grill et al. 2020, Table 6): two asymmetric views, jitter
    (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2; blur p=1.0 / 0.1, solarization p=0.0 / 0.2."""
    common = dict(num_views=1, size=size, saturation=0.2)
    return (
        ViewRecipe(**common, blur_prob=1.0, solarize_prob=0.0),
        ViewRecipe(**common, blur_prob=0.1, solarize_prob=0.2),
    )


def multicrop_views(global_size: int = 32, local_size: int = 16, num_local: int = 4) -> tuple[ViewRecipe, ...]:
    """Multi-crop (SwAV, Caron et al. 2020, Sec. 3.2): 2 global crops of scale (0.14, 1) and `num_local` small
    crops of scale (0.05, 0.14) at a lower resolution (ImageNet: 2 x 224 + 6 x 96)."""
    blur = 0.5 if global_size >= 96 else 0.0
    return (
        ViewRecipe(num_views=2, size=global_size, crop_scale=(0.14, 1.0), blur_prob=blur),
        ViewRecipe(num_views=num_local, size=local_size, crop_scale=(0.05, 0.14), blur_prob=blur),
    )


RECIPES = {"simclr": simclr_views, "mocov2": mocov2_views, "byol": byol_views, "multicrop": multicrop_views}
