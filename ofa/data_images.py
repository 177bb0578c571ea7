"""Image-classification data for CNN supernets: Fashion-MNIST (IDX files) and scikit-learn digits.

Fashion-MNIST is read from the original IDX files that Debian's ``dataset-fashion-mnist``
package installs (``/usr/share/datasets/fashion-mnist``; another folder can be given). Digits
(1,797 8 x 8 images) ship with scikit-learn and get a fixed, seeded train / test split. Batches
are dicts ``{"pixel_values": (B, 1, H, W) float, "labels": (B,) int64}``, the shape the
supernets, importance scores and BN calibration take.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_LABELS",
    "ImageData",
    "load_digits",
    "load_fashion_mnist",
    "load_images",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FASHION_FILES = {"train": "train", "test": "t10k"}
_FASHION_MEAN, _FASHION_STD = 0.2860, 0.3530
_IDX_TYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


@dataclass(frozen=True)
class ImageData:
    """Images and labels of one split.

    Attributes:
        images: ``(N, C, H, W)`` float32, normalised.
        labels: ``(N,)`` int64 in ``0 .. len(label_names) - 1``.
        label_names: label ``i`` is ``label_names[i]``.
    """

    images: Tensor
    labels: Tensor
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[dict[str, Tensor]]:
        """Dict batches ``{"pixel_values", "labels"}``; shuffled by ``seed`` when asked."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        count = len(self)
        order = (
            torch.randperm(count, generator=torch.Generator().manual_seed(seed))
            if shuffle
            else torch.arange(count)
        )
        stop = count - count % batch_size if drop_last else count
        for start in range(0, stop, batch_size):
            yield self.take(order[start : start + batch_size])

    def take(self, index: Tensor | list[int]) -> dict[str, Tensor]:
        """The batch dict ``{"pixel_values", "labels"}`` of the examples at ``index``."""
        return {"pixel_values": self.images[index], "labels": self.labels[index]}

    def subset(self, count: int, *, seed: int = 0) -> ImageData:
        """A seeded random subset of ``count`` examples."""
        count = min(count, len(self))
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return ImageData(self.images[index], self.labels[index], self.label_names)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped), the format of the MNIST family.

    Raises:
        ValueError: the file is not an IDX file or is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:  # type: ignore[operator]
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = data[4 + 4 * ndim :]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(f"{path} is truncated: {len(body)} data bytes, expected {expected}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _fashion_file(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] is not in {directory}: install Debian's package "
        "(apt-get install dataset-fashion-mnist) or pass the folder holding the IDX files"
    )


def load_fashion_mnist(
    directory: str | os.PathLike | None = None,
    *,
    split: Literal["train", "test"] = "train",
    limit: int | None = None,
) -> ImageData:
    """Fashion-MNIST (60,000 train / 10,000 test 28 x 28 grey images, 10 classes).

    Args:
        directory: folder with the four IDX files; default ``FASHION_MNIST_DIR``.
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` examples.

    Example:
        >>> train = load_fashion_mnist(split="train", limit=2000)
        >>> batch = next(train.batches(64, shuffle=True))
        >>> batch["pixel_values"].shape
        torch.Size([64, 1, 28, 28])
    """
    if split not in _FASHION_FILES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    folder = Path(directory) if directory is not None else FASHION_MNIST_DIR
    prefix = _FASHION_FILES[split]
    images = read_idx(_fashion_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_fashion_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0] or images.ndim != 3:
        raise ValueError(
            f"Fashion-MNIST files in {folder} disagree: {images.shape}, {labels.shape}"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    pixels = (pixels - _FASHION_MEAN) / _FASHION_STD
    logger.info("loaded %d Fashion-MNIST %s images from %s", len(labels), split, folder)
    return ImageData(pixels, torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_LABELS)


def load_digits(
    *, split: Literal["train", "test"] = "train", test_fraction: float = 0.2, seed: int = 0
) -> ImageData:
    """scikit-learn's digits (1,797 8 x 8 images, 10 classes) with a fixed, seeded split.

    Example:
        >>> train, test = load_digits(split="train"), load_digits(split="test")
        >>> len(train) + len(test)
        1797
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError("digits need scikit-learn: pip install scikit-learn") from error
    if split not in ("train", "test") or not 0 < test_fraction < 1:
        raise ValueError("split must be 'train' or 'test' and test_fraction in (0, 1)")
    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = (images - 0.5) / 0.5
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = int(round(len(labels) * test_fraction))
    index = order[cut:] if split == "train" else order[:cut]
    names = tuple(str(d) for d in range(10))
    return ImageData(images[index], labels[index], names)


def load_images(
    spec: str | os.PathLike,
    *,
    split: Literal["train", "test"] = "train",
    limit: int | None = None,
    seed: int = 0,
) -> ImageData:
    """Images named the way the command line names them.

    ``spec`` is ``"digits"``, ``"fashion-mnist"`` (Debian's IDX files) or a ``.npz`` file with
    arrays ``images`` ``(N, C, H, W)`` (numbers, already normalised) and ``labels`` ``(N,)``
    (integers from 0); a ``.npz`` file is one split, so ``split`` does not apply to it.
    ``limit`` keeps a seeded random subset of that many examples.

    Example:
        >>> train = load_images("digits", split="train", limit=512)
    """
    name = str(spec)
    if name == "digits":
        data = load_digits(split=split, seed=seed)
    elif name == "fashion-mnist":
        data = load_fashion_mnist(split=split)
    else:
        data = _load_npz(Path(name))
    return data if limit is None else data.subset(limit, seed=seed)


def _load_npz(path: Path) -> ImageData:
    if path.suffix != ".npz" or not path.is_file():
        raise FileNotFoundError(
            f"image data {str(path)!r} is not 'digits', 'fashion-mnist' or an existing .npz file"
        )
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if not {"images", "labels"} <= set(arrays.files):
                raise ValueError(
                    f"{path} holds {sorted(arrays.files)}: it needs arrays 'images' and 'labels'"
                )
            images, labels = arrays["images"], arrays["labels"]
    except (OSError, ValueError) as error:
        if "needs arrays" in str(error):
            raise
        raise ValueError(f"{path} is not a plain .npz archive: {error}") from None
    if images.ndim != 4 or images.dtype.kind not in "fiu":
        raise ValueError(f"{path}: 'images' must be (N, C, H, W) numbers, got {images.shape}")
    if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu" or labels.min() < 0:
        raise ValueError(
            f"{path}: 'labels' must be {images.shape[0]} integers >= 0, got {labels.shape} "
            f"{labels.dtype}"
        )
    if len(labels) == 0:
        raise ValueError(f"{path} holds no images")
    names = tuple(str(i) for i in range(int(labels.max()) + 1))
    return ImageData(
        torch.from_numpy(images.astype(np.float32)),
        torch.from_numpy(labels.astype(np.int64)),
        names,
    )
