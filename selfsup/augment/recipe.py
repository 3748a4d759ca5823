"""View recipes: what a group of augmented views looks like, as plain data selectable from YAML.

A recipe never says how many pixels a view has: the data does (`--data.image_size`, 32 for Fashion-MNIST and
CIFAR, 96 for STL-10, 224 for image folders). A recipe's `relative_size` scales that size, so a method's views
are the same at every resolution (multi-crop's local crops keep their proportion) and no data config ever
needs to touch them.
"""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from selfsup.errors import ConfigurationError


@dataclass(frozen=True)
class ViewRecipe:
    """A group of `num_views` views drawn with the same augmentation distribution.

    The defaults are SimCLR's CIFAR-10 recipe (Chen et al. 2020, Appendix A and B.9): random resized crop
    with scale (0.08, 1), horizontal flip, colour jitter of strength 0.5 applied with probability 0.8, and
    grayscale with probability 0.2. A method's views are a list of recipes, so multi-crop is two groups of
    different relative sizes.

    Attributes:
        num_views: how many views of each image this group produces.
        relative_size: side of these views as a fraction of the data's image size (1: the data's size;
            multi-crop's local crops: 0.5 at 32 px, 96/224 on ImageNet).
        crop_scale: range of the crop's area as a fraction of the image (torchvision's `scale`).
        crop_ratio: range of the crop's aspect ratio w/h (torchvision's `ratio`).
        flip_prob: probability of a horizontal flip.
        jitter_prob: probability that colour jitter is applied to a view.
        brightness: brightness factor drawn from [1 - brightness, 1 + brightness].
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        saturation: saturation factor drawn from [1 - saturation, 1 + saturation].
        hue: hue shift drawn from [-hue, hue], in fractions of a full turn (at most 0.5).
        grayscale_prob: probability of converting the view to grayscale.
        blur_prob: probability of a Gaussian blur (kernel about 10% of the view's side).
        blur_sigma: range of the blur's standard deviation in pixels.
        blur_min_size: views smaller than this many pixels are never blurred. SimCLR and MoCo v2 blur at
            ImageNet resolution but not on 32 px images (SimCLR, Appendix B.9), hence 96 in their recipes.
        solarize_prob: probability of solarization (pixels >= 0.5 inverted).
    """

    num_views: int = 2
    relative_size: float = 1.0
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
    blur_min_size: int = 0
    solarize_prob: float = 0.0

    @classmethod
    def from_dict(cls, values: "ViewRecipe | dict[str, Any]") -> "ViewRecipe":
        """Build a recipe from config values (lists become tuples); unknown keys are an error."""
        if isinstance(values, cls):
            return values
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            hint = (
                " View sizes follow --data.image_size; a recipe scales it with relative_size."
                if "size" in unknown
                else ""
            )
            raise ConfigurationError(f"Unknown view recipe key(s) {unknown}; valid keys are {sorted(known)}.{hint}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def size(self, image_size: int) -> int:
        """The side in pixels of these views when the data's image size is `image_size`."""
        return max(1, round(self.relative_size * image_size))

    def blurs_at(self, size: int) -> bool:
        """Whether views of `size` pixels are ever blurred."""
        return self.blur_prob > 0 and size >= self.blur_min_size

    def __post_init__(self) -> None:
        problems = []
        if self.num_views < 1:
            problems.append(f"num_views must be at least 1, got {self.num_views}")
        if not self.relative_size > 0:
            problems.append(f"relative_size must be greater than 0, got {self.relative_size}")
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
        if self.blur_min_size < 0:
            problems.append(f"blur_min_size must be at least 0, got {self.blur_min_size}")
        if problems:
            raise ConfigurationError(
                "Invalid view recipe: " + "; ".join(problems) + ". Fix these values in --model.init_args.views."
            )


# Recipes of the papers, each the `views` argument of a method, the same at every image size.

IMAGENET_BLUR_SIZE = 96  # SimCLR and MoCo v2 blur from STL-10's 96 px up, not on 32 px images


def simclr_views() -> tuple[ViewRecipe, ...]:
    """SimCLR (Chen et al. 2020, Appendix A): two views; blur (p=0.5) only at ImageNet-like resolution."""
    return (ViewRecipe(num_views=2, blur_prob=0.5, blur_min_size=IMAGENET_BLUR_SIZE),)


def mocov2_views() -> tuple[ViewRecipe, ...]:
    """MoCo v2 ("Improved Baselines with Momentum Contrastive Learning", Chen et al. 2020, Sec. 3):
    crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2, blur p=0.5 at 224 px."""
    return (ViewRecipe(num_views=2, crop_scale=(0.2, 1.0), blur_prob=0.5, blur_min_size=IMAGENET_BLUR_SIZE),)


def byol_views() -> tuple[ViewRecipe, ...]:
    """BYOL ("Bootstrap Your Own Latent", Grill et al. 2020, Table 6): two asymmetric views, jitter
    (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2; blur p=1.0 / 0.1, solarization p=0.0 / 0.2."""
    return (
        ViewRecipe(num_views=1, saturation=0.2, blur_prob=1.0, solarize_prob=0.0),
        ViewRecipe(num_views=1, saturation=0.2, blur_prob=0.1, solarize_prob=0.2),
    )


def multicrop_views(num_local: int = 4, local_relative_size: float = 0.5) -> tuple[ViewRecipe, ...]:
    """Multi-crop (SwAV, Caron et al. 2020, Sec. 3.2): 2 global crops of scale (0.14, 1) and `num_local` small
    crops of scale (0.05, 0.14) at a lower resolution (ImageNet: 2 x 224 + 6 x 96, i.e. num_local=6 and
    local_relative_size=96/224); blur p=0.5 at ImageNet-like resolution."""
    blur = dict(blur_prob=0.5, blur_min_size=IMAGENET_BLUR_SIZE)
    return (
        ViewRecipe(num_views=2, crop_scale=(0.14, 1.0), **blur),
        ViewRecipe(num_views=num_local, relative_size=local_relative_size, crop_scale=(0.05, 0.14), **blur),
    )


def msf_views() -> tuple[ViewRecipe, ...]:
    """Mean Shift's weak-strong pair ("Mean Shift for Self-Supervised Learning", Koohpayegani et al., ICCV 2021,
    Sec. 4): MoCo v2's strong view for the query, then a weak view for the target, only cropped (scale (0.2, 1))
    and flipped."""
    weak = ViewRecipe(num_views=1, crop_scale=(0.2, 1.0), jitter_prob=0.0, grayscale_prob=0.0)
    return (replace(mocov2_views()[0], num_views=1), weak)


RECIPES = {
    "simclr": simclr_views,
    "mocov2": mocov2_views,
    "byol": byol_views,
    "multicrop": multicrop_views,
    "msf": msf_views,
}
