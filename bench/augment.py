"""Augmentation throughput: this pipeline against kornia's augmentation modules chained naively.

Two SimCLR views per image (random resized crop, flip, colour jitter p=0.8, grayscale p=0.2, normalise), from
uint8 images already on the device, at 32x32 (batch 512, 32 px sources) and 224x224 (batch 256, 256 px
sources). Prints images/s (an image = two views) for this pipeline eager and compiled (MultiView(compile=True))
and for the naive chain, with the ratios, as JSON. On a CPU-only machine it runs a small setting.

    python bench/augment.py --out bench/results/augment.json
"""

import argparse
import sys
from pathlib import Path

import kornia.augmentation as K
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, environment, images_per_second  # noqa: E402

from selfsup.augment import MultiView, ViewRecipe  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def naive_kornia_chain(size: int) -> nn.Module:
    """The same recipe from kornia's modules, each sampling and applying its own parameters."""
    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.Normalize(torch.tensor(MEAN), torch.tensor(STD)),
    )


def measure(size: int, source: int, batch: int, steps: int, warmup: int, device: torch.device) -> dict:
    images = torch.randint(0, 256, (batch, 3, source, source), dtype=torch.uint8, device=device)
    recipes = [ViewRecipe(num_views=2)]  # the chain's recipe: no blur
    eager = MultiView(recipes, size, MEAN, STD).to(device)
    compiled = MultiView(recipes, size, MEAN, STD, compile=True).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    chain = naive_kornia_chain(size).to(device)

    def naive() -> list[torch.Tensor]:
        unit = images.float() / 255
        return [chain(unit) for _ in range(2)]

    rates = {
        "selfsup_img_per_s": images_per_second(lambda: eager(images, generator), batch, steps, warmup, device),
        "selfsup_compiled_img_per_s": images_per_second(
            lambda: compiled(images, generator), batch, steps, warmup, device
        ),
        "kornia_naive_img_per_s": images_per_second(naive, batch, steps, warmup, device),
    }
    return {
        "views": f"2 x {size}x{size} from {source}x{source} uint8",
        "batch_size": batch,
        **{name: round(rate, 1) for name, rate in rates.items()},
        "speedup": round(rates["selfsup_img_per_s"] / rates["kornia_naive_img_per_s"], 2),
        "speedup_compiled": round(rates["selfsup_compiled_img_per_s"] / rates["kornia_naive_img_per_s"], 2),
    }


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50 if cuda else 2)
    parser.add_argument("--warmup", type=int, default=10 if cuda else 1)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    scale = 1 if cuda else 8  # CPU: batches 8x smaller
    settings = [(32, 32, 512 // scale), (224, 256, 256 // scale)]
    result = {
        "benchmark": "augment",
        "recipe": "SimCLR: crop (0.08, 1), flip, jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2, normalise",
        "results": [measure(size, source, batch, args.steps, args.warmup, device) for size, source, batch in settings],
        **environment(device),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
