import numpy as np
import torch

from selfsup.evaluation.embedding_map import MAX_POINTS, embedding_map, sample_points, tsne_map


def test_points_are_drawn_without_replacement_among_labelled_samples_only() -> None:
    labels = torch.tensor([3, -1, 0, 1, -1, 2, 2, 0])  # -1: a rank's padding
    chosen = sample_points(labels, 4, seed=1)
    assert chosen.numel() == 4 == chosen.unique().numel() and (labels[chosen] >= 0).all()
    assert sorted(sample_points(labels, 100).tolist()) == [0, 2, 3, 5, 6, 7]
    many = torch.zeros(MAX_POINTS + 10, dtype=torch.long)
    assert sample_points(many, MAX_POINTS + 10).numel() == MAX_POINTS
    counts = torch.zeros(8)  # each labelled sample is equally likely: 6 labelled, 3 drawn, 600 draws
    for seed in range(600):
        counts[sample_points(labels, 3, seed)] += 1
    assert counts[[1, 4]].sum() == 0 and torch.allclose(counts[labels >= 0], torch.full((6,), 300.0), rtol=0.15)


def test_separated_classes_stay_apart_on_the_map() -> None:
    """Three classes of features far apart in 64 dimensions: on the 2-D map every point's nearest neighbour is of
    its own class, which random coordinates would give a third of the time."""
    generator = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 64, generator=generator)
    labels = torch.arange(3).repeat_interleave(60)
    features = centres[labels] + torch.randn(180, 64, generator=generator)
    coordinates = torch.from_numpy(tsne_map(features))
    distances = torch.cdist(coordinates, coordinates).fill_diagonal_(float("inf"))
    assert (labels[distances.argmin(dim=1)] == labels).float().mean() == 1.0


def test_the_map_is_a_png_and_says_what_it_drew(tmp_path) -> None:
    features, labels = torch.randn(90, 16), torch.arange(3).repeat(30)
    drawn = embedding_map(features, labels, 50, "a title", tmp_path / "map.png", ["a", "b", "c"])
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["points"] == 50 and drawn["file"] == "map.png" and drawn["method"] == "t-SNE"
    assert np.isfinite(drawn["seconds"])
