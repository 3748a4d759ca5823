from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2 as T
import yaml

from selfsup.augment import RECIPES, CleanView, MultiView, ViewRecipe, byol_views, multicrop_views, ops, view_seed
from selfsup.errors import ConfigurationError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
REPO = Path(__file__).resolve().parents[2]


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_views_have_recipe_shapes_dtype_layout_and_range() -> None:
    pipeline = MultiView([ViewRecipe(num_views=2), ViewRecipe(num_views=3, relative_size=0.5)], 32, MEAN, STD)
    images = torch.randint(0, 256, (10, 3, 40, 30), dtype=torch.uint8)
    views = pipeline(images, generator())
    assert [tuple(v.shape) for v in views] == [(10, 3, 32, 32)] * 2 + [(10, 3, 16, 16)] * 3
    for view in views:
        assert view.dtype == torch.float32
        assert view.is_contiguous(memory_format=torch.channels_last)
        unit = view * 0.25 + 0.5  # undo normalisation
        assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5


def test_grayscale_source_becomes_three_identical_channels_without_colour_jitter() -> None:
    recipe = ViewRecipe(jitter_prob=0.0, grayscale_prob=0.0)
    (view, _) = MultiView([recipe], 32, MEAN, STD)(
        torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), generator()
    )
    assert view.shape == (4, 3, 32, 32)
    torch.testing.assert_close(view[:, 0], view[:, 1])
    torch.testing.assert_close(view[:, 1], view[:, 2])


def test_same_seed_same_views_and_different_seed_different_views() -> None:
    pipeline = MultiView([ViewRecipe()], 32, MEAN, STD)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    first, second, other = (
        pipeline(images, generator(1)),
        pipeline(images, generator(1)),
        pipeline(images, generator(2)),
    )
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first[0], other[0])
    assert not torch.allclose(first[0], first[1])  # the two views of one call differ


def test_full_box_at_native_size_is_identity_and_flip_mirrors() -> None:
    images = torch.rand(3, 3, 12, 12)
    boxes = torch.tensor([[0.0, 0.0, 12.0, 12.0]]).repeat(3, 1)
    out = ops.crop_flip_resize(images, boxes, torch.tensor([False, True, False]), 12)
    torch.testing.assert_close(out[0], images[0])
    torch.testing.assert_close(out[1], images[1].flip(-1))


def test_crop_matches_torchvision_resized_crop_for_fixed_box() -> None:
    """Upsampling a fixed box: bilinear grid_sample agrees with torchvision's resized_crop within a small error."""
    image = torch.rand(1, 3, 20, 20)
    box = torch.tensor([[4.0, 2.0, 10.0, 12.0]])  # x0, y0, w, h
    ours = ops.crop_flip_resize(image, box, torch.tensor([False]), 24)
    theirs = T.functional.resized_crop(image, top=2, left=4, height=12, width=10, size=[24, 24], antialias=False)
    assert (ours - theirs).abs().mean() < 0.02


def test_crop_box_distribution_matches_torchvision() -> None:
    """Area fraction and log aspect ratio of the boxes follow RandomResizedCrop.get_params's distribution."""
    n, height, width, scale, ratio = 4000, 28, 28, (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = ops.sample_crop_boxes(n, height, width, scale, ratio, generator(0), torch.device("cpu"))
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= width).all() and (y0 + h <= height).all()
    torch.manual_seed(0)
    reference = torch.tensor(
        [T.RandomResizedCrop.get_params(torch.empty(1, height, width), list(scale), list(ratio)) for _ in range(n)],
        dtype=torch.float,
    )  # (top, left, h, w)
    ours_area, ref_area = (w * h) / (height * width), reference[:, 2] * reference[:, 3] / (height * width)
    ours_log_ratio, ref_log_ratio = torch.log(w / h), torch.log(reference[:, 3] / reference[:, 2])
    for ours, ref in ((ours_area, ref_area), (ours_log_ratio, ref_log_ratio)):
        assert ours.mean().item() == pytest.approx(ref.mean().item(), abs=0.02)
        assert ours.std().item() == pytest.approx(ref.std().item(), abs=0.02)
        quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
        torch.testing.assert_close(ours.quantile(quantiles), ref.quantile(quantiles), atol=0.04, rtol=0)
    assert (w >= 1).all() and (h >= 1).all()  # whole pixels, as torchvision (so tiny boxes may exceed `ratio`)


def test_flip_and_grayscale_rates_match_probabilities() -> None:
    n = 20000
    flips = ops.bernoulli(0.5, n, generator(3), torch.device("cpu")).float().mean().item()
    assert flips == pytest.approx(0.5, abs=0.015)
    recipe = ViewRecipe(num_views=1, jitter_prob=0.0, grayscale_prob=0.2, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    colourful = torch.zeros(2000, 3, 4, 4, dtype=torch.uint8)
    colourful[:, 0] = 255
    (view,) = MultiView([recipe], 4, MEAN, STD)(colourful, generator(4))
    gray = (view[:, 0] - view[:, 2]).abs().amax(dim=(1, 2)) < 1e-5
    assert gray.float().mean().item() == pytest.approx(0.2, abs=0.03)


def test_jitter_factors_stay_within_ranges() -> None:
    """With only brightness on, every output/input ratio lies in [1 - b, 1 + b] and roughly covers it."""
    recipe = ViewRecipe(
        num_views=1,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        jitter_prob=1.0,
        brightness=0.4,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        grayscale_prob=0.0,
    )
    images = torch.full((3000, 3, 8, 8), 100, dtype=torch.uint8)
    (view,) = MultiView([recipe], 8, (0.0,) * 3, (1.0,) * 3)(images, generator(5))
    factor = view[:, 0, 0, 0] / (100 / 255)
    assert factor.min() >= 0.6 - 1e-4 and factor.max() <= 1.4 + 1e-4
    assert factor.min() < 0.62 and factor.max() > 1.38
    assert factor.mean().item() == pytest.approx(1.0, abs=0.02)


def identity(n: int) -> dict[str, torch.Tensor]:
    return dict(
        brightness=torch.ones(n),
        contrast=torch.ones(n),
        saturation=torch.ones(n),
        hue=torch.zeros(n),
        grayscale=torch.zeros(n, dtype=torch.bool),
    )


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("brightness", T.functional.adjust_brightness),
        ("contrast", T.functional.adjust_contrast),
        ("saturation", T.functional.adjust_saturation),
    ],
)
def test_each_colour_op_matches_torchvision_for_fixed_factors(name: str, reference) -> None:
    images, factor = torch.rand(2, 3, 9, 9), torch.tensor([0.7, 1.3])
    ours = ops.jitter_colours(images, **{**identity(2), name: factor})
    expected = torch.stack([reference(images[i], factor[i].item()) for i in range(2)])
    torch.testing.assert_close(ours, expected, atol=2e-3, rtol=0)


def test_grayscale_matches_torchvision_and_identity_parameters_change_nothing() -> None:
    images = torch.rand(2, 3, 9, 9)
    torch.testing.assert_close(ops.jitter_colours(images, **identity(2)), images)
    gray = ops.jitter_colours(images, **{**identity(2), "grayscale": torch.tensor([True, False])})
    torch.testing.assert_close(gray[0], T.functional.rgb_to_grayscale(images[0], 3), atol=2e-3, rtol=0)
    torch.testing.assert_close(gray[1], images[1])


def test_fused_chain_matches_torchvision_sequence_away_from_clipping() -> None:
    """Brightness -> contrast -> saturation applied by torchvision one op at a time equals the fused map when no
    intermediate value leaves [0, 1] (torchvision clamps after each op, the fused map once at the end)."""
    images = 0.3 + 0.4 * torch.rand(2, 3, 9, 9)
    b, c, s = torch.tensor([0.9, 1.1]), torch.tensor([1.2, 0.8]), torch.tensor([0.6, 1.3])
    ours = ops.jitter_colours(images, b, c, s, torch.zeros(2), torch.zeros(2, dtype=torch.bool))
    for i in range(2):
        expected = T.functional.adjust_brightness(images[i], b[i].item())
        expected = T.functional.adjust_contrast(expected, c[i].item())
        expected = T.functional.adjust_saturation(expected, s[i].item())
        torch.testing.assert_close(ours[i], expected, atol=2e-3, rtol=0)


def test_hue_rotation_approximates_torchvision_hue_and_keeps_gray() -> None:
    torch.manual_seed(0)
    images = 0.2 + 0.6 * torch.rand(2, 3, 16, 16)
    shift = torch.tensor([0.05, -0.1])
    ours = ops.jitter_colours(images, **{**identity(2), "hue": shift})
    for i, tolerance in ((0, 0.04), (1, 0.07)):
        expected = T.functional.adjust_hue(images[i], shift[i].item())
        assert (ours[i] - expected).abs().mean() < tolerance
    gray = torch.full((1, 3, 4, 4), 0.4)
    torch.testing.assert_close(ops.jitter_colours(gray, **{**identity(1), "hue": torch.tensor([0.3])}), gray)


def test_blur_kernel_is_a_tenth_of_the_view_and_odd() -> None:
    """SimCLR (Appendix A): 10% of the image side; BYOL's 23 px at 224 px."""
    assert [ops.blur_kernel_size(size) for size in (16, 32, 96, 224)] == [3, 3, 9, 23]


def test_blur_matches_torchvision_and_solarize_matches_torchvision() -> None:
    images = torch.rand(3, 3, 32, 32)
    blurred = ops.gaussian_blur(images, torch.tensor([0.5, 1.5, 1.5]), torch.tensor([True, True, False]))
    kernel = ops.blur_kernel_size(32)
    for i, sigma in ((0, 0.5), (1, 1.5)):
        expected = T.functional.gaussian_blur(images[i], [kernel, kernel], [sigma, sigma])
        torch.testing.assert_close(blurred[i], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(blurred[2], images[2])
    solarized = ops.solarize(images, torch.tensor([True, False, True]))
    torch.testing.assert_close(solarized[0], T.functional.solarize(images[0], 0.5))
    torch.testing.assert_close(solarized[1], images[1])


def test_blur_and_solarize_rates_follow_their_probabilities() -> None:
    recipe = ViewRecipe(
        num_views=1,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        flip_prob=0.0,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        solarize_prob=0.2,
    )
    bright = torch.full((4000, 3, 8, 8), 230, dtype=torch.uint8)
    (view,) = MultiView([recipe], 8, (0.0,) * 3, (1.0,) * 3)(bright, generator(6))
    solarized = view[:, 0, 0, 0] < 0.5
    assert solarized.float().mean().item() == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_presets_produce_their_views(name: str) -> None:
    recipes = RECIPES[name]()
    views = MultiView(recipes, 32, MEAN, STD)(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), generator())
    sizes = [r.size(32) for r in recipes for _ in range(r.num_views)]
    assert [tuple(v.shape[-2:]) for v in views] == [(size, size) for size in sizes]


def test_multicrop_and_byol_presets_follow_the_papers() -> None:
    global_crops, local_crops = multicrop_views(6, 96 / 224)
    assert (global_crops.num_views, global_crops.size(224), local_crops.num_views, local_crops.size(224)) == (
        2,
        224,
        6,
        96,
    )
    assert global_crops.blurs_at(224) and local_crops.blurs_at(96) and not global_crops.blurs_at(32)
    first, second = byol_views()
    assert (first.blur_prob, first.solarize_prob, second.blur_prob, second.solarize_prob) == (1.0, 0.0, 0.1, 0.2)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_view_config_files_equal_the_presets(name: str) -> None:
    config = yaml.safe_load((REPO / "configs" / "views" / f"{name}.yaml").read_text())
    recipes = tuple(ViewRecipe.from_dict(v) for v in config["model"]["init_args"]["views"])
    assert recipes == RECIPES[name]()


def test_clean_view_resizes_and_normalises_deterministically() -> None:
    images = torch.full((2, 1, 28, 28), 128, dtype=torch.uint8)
    out = CleanView(32, MEAN, STD)(images)
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, torch.full_like(out, (128 / 255 - 0.5) / 0.25))


def test_clean_view_centre_crops_non_square_sources() -> None:
    images = torch.zeros(1, 3, 8, 12, dtype=torch.uint8)
    images[..., 2:10] = 255  # the centre 8x8 square is white, the side bands black
    out = CleanView(8, (0.0,) * 3, (1.0,) * 3)(images)
    torch.testing.assert_close(out, torch.ones(1, 3, 8, 8))


def test_float_input_in_unit_range_gives_the_same_views_as_uint8() -> None:
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    pipeline = MultiView([ViewRecipe()], 32, MEAN, STD)
    from_uint8, from_float = pipeline(images, generator(2)), pipeline(images.float() / 255, generator(2))
    for a, b in zip(from_uint8, from_float, strict=True):
        torch.testing.assert_close(a, b)


def test_invalid_recipe_names_the_field() -> None:
    with pytest.raises(ConfigurationError, match="crop_scale"):
        ViewRecipe(crop_scale=(0.5, 1.5))
    with pytest.raises(ConfigurationError, match="valid keys"):
        ViewRecipe.from_dict({"sise": 3})


def test_view_seeds_differ_across_ranks_and_epochs_and_repeat_on_resume() -> None:
    seeds = {(rank, epoch): view_seed(0, rank, epoch) for rank in range(4) for epoch in range(4)}
    assert len(set(seeds.values())) == 16
    assert view_seed(0, 2, 3) == seeds[(2, 3)]
    pipeline = MultiView([ViewRecipe()], 32, MEAN, STD)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    rank0, rank1 = (pipeline(images, generator(view_seed(0, rank, 0))) for rank in (0, 1))
    assert not torch.allclose(rank0[0], rank1[0])


def test_compiled_rendering_equals_eager() -> None:
    """torch.compile fuses rendering but must not change it (BYOL's recipe: blur and solarize included)."""
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    eager = MultiView(byol_views(), 32, MEAN, STD)(images, generator(1))
    compiled = MultiView(byol_views(), 32, MEAN, STD, compile=True)(images, generator(1))
    for ours, reference in zip(compiled, eager, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
        assert ours.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("flip_prob", [0.0, 0.5, 1.0])
def test_flip_rate_follows_the_recipe(flip_prob: float) -> None:
    """An image whose left half is white and right half black: a view is flipped iff its left column is dark."""
    recipe = ViewRecipe(
        num_views=1, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=flip_prob, jitter_prob=0.0,
        grayscale_prob=0.0,
    )  # fmt: skip
    images = torch.zeros(4000, 1, 8, 8, dtype=torch.uint8)
    images[..., :4] = 255
    (view,) = MultiView([recipe], 8, (0.0,) * 3, (1.0,) * 3)(images, generator(7))
    flipped = view[:, 0, :, 0].mean(dim=1) < 0.5
    assert flipped.float().mean().item() == pytest.approx(flip_prob, abs=0.025)
