"""A picture of the representation: test features placed in 2-D by t-SNE and coloured by class.

t-SNE ("Visualizing Data using t-SNE", van der Maaten & Hinton, JMLR 2008) keeps neighbours together, so
classes the features separate show as islands and classes they confuse as shared ones. As in the paper
(Sec. 4.2), the features are first reduced to 50 dimensions by PCA; scikit-learn's Barnes-Hut t-SNE then takes
about 2.4 s for 2,000 points and 20 s for 10,000 on 2 CPU cores. The map says nothing about distances between
islands, which t-SNE does not preserve; the kNN and linear figures are the measurements.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.atomic import replacing

MAX_POINTS = 10_000  # beyond this t-SNE takes minutes on a CPU and the picture gains nothing
PCA_DIMENSIONS = 50


def sample_points(labels: torch.Tensor, points: int, seed: int = 0) -> torch.Tensor:
    """Indices of `points` labelled samples drawn uniformly without replacement (padding, label -1, left out)."""
    labelled = torch.nonzero(labels >= 0).squeeze(1)
    order = torch.randperm(labelled.numel(), generator=torch.Generator().manual_seed(seed))
    return labelled[order[: min(points, MAX_POINTS)]].sort().values


def tsne_map(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) t-SNE coordinates, after PCA to 50 dimensions (cosine geometry: the features
    are L2-normalised first, as the kNN monitor compares them)."""
    from sklearn.decomposition import PCA  # imported here: a second of start-up only `selfsup eval` pays
    from sklearn.manifold import TSNE

    normalised = torch.nn.functional.normalize(features.float(), dim=1).cpu().numpy()
    if normalised.shape[1] > PCA_DIMENSIONS and normalised.shape[0] > PCA_DIMENSIONS:
        normalised = PCA(PCA_DIMENSIONS, random_state=seed).fit_transform(normalised)
    perplexity = min(30.0, (normalised.shape[0] - 1) / 3)  # t-SNE needs more points than 3 x perplexity
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(normalised)


def draw_map(
    coordinates: np.ndarray, labels: np.ndarray, title: str, path: Path, class_names: list[str] | None = None
) -> None:
    """A scatter plot of the map, one colour per class with a legend, saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: only a run that draws needs it
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 6.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    classes = np.unique(labels)
    colours = _class_colours(len(classes))
    for colour, label in zip(colours, classes, strict=True):
        chosen = labels == label
        name = class_names[label] if class_names else str(label)
        axes.scatter(*coordinates[chosen].T, s=4, color=colour, label=name, alpha=0.7, linewidths=0)
    axes.set(title=title, xticks=[], yticks=[])
    if len(classes) <= 20:
        axes.legend(markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.tight_layout()
    with replacing(path) as file:
        figure.savefig(file, format="png", dpi=120)


def _class_colours(count: int) -> list:
    from matplotlib import colormaps

    colormap = colormaps["tab10" if count <= 10 else "tab20" if count <= 20 else "turbo"]
    return [colormap(i if count <= 20 else i / max(1, count - 1)) for i in range(count)]


def embedding_map(
    features: torch.Tensor,
    labels: torch.Tensor,
    points: int,
    title: str,
    path: Path,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Draw the t-SNE map of up to `points` of the labelled `features` to `path`; what was drawn, for results.json."""
    start = time.perf_counter()
    chosen = sample_points(labels, points)
    coordinates = tsne_map(features[chosen])
    draw_map(coordinates, labels[chosen].cpu().numpy(), title, path, class_names)
    return {"file": path.name, "points": int(chosen.numel()), "method": "t-SNE",
            "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
