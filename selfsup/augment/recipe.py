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
        for name in ("flip_prob", "jitter_prob", "grayscale_prob"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            problems.append(f"hue must lie in [0, 0.5], got {self.hue}")
        if problems:
            raise ConfigurationError(
                "Invalid view recipe: " + "; ".join(problems) + ". Fix these values in --model.init_args.views."
            )
