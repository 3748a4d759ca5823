"""Built-in datasets (Fashion-MNIST, CIFAR-10/100, STL-10) as a source: read whole, placed in memory."""

from pathlib import Path

from selfsup.data.datasets import DATASETS, Split
from selfsup.data.in_memory import InMemorySource
from selfsup.data.source import DataOptions


class BuiltinSource(InMemorySource):
    """A built-in dataset (Fashion-MNIST, CIFAR-10/100, STL-10) read whole into memory as uint8 tensors.

    Found under `root`, else where `selfsup.data.datasets.DATASETS` says (Debian's Fashion-MNIST package, then a
    download into the cache); its classes, mean and std are the dataset's own."""

    def __init__(self, options: DataOptions) -> None:
        super().__init__(options)
        self.spec = DATASETS[options.dataset]
        self.classes = list(self.spec.classes) if self.spec.classes else None
        self.num_classes, self.mean, self.std = self.spec.num_classes, self.spec.mean, self.spec.std

    @classmethod
    def resolve_sizes(
        cls, dataset: str, root: Path | None, image_size: int | None, folder_image_size: int | None
    ) -> tuple[int, None]:
        """Views at the data's resolution (Fashion-MNIST's 28 px rounded up to 32); nothing is decoded."""
        return DATASETS[dataset].image_size if image_size is None else image_size, None

    def prepare(self) -> None:
        self.spec.locate(self.options.root, True)

    def read(self) -> tuple[Split, Split]:
        return self.spec.read(self.spec.locate(self.options.root, False))
