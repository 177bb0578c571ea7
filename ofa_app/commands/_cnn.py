"""The CLI's CNN adapter: images for training and search, the kernel-depth-width schedule, and
the batch-norm calibration and torch.export options of an export."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ofa_app.commands._families import refuse_foreign_flags, register_family

__all__ = ["CnnApp"]


class CnnApp:
    name = "cnn"
    title = "CNN"
    flags = {
        "train": (
            ("width_multipliers", "--width-multipliers"),
            ("later_lr", "--later-lr"),
        ),
        "export": (
            ("calibration_data", "--calibration-data"),
            ("torch_export", "--torch-export"),
        ),
    }
    hints = {"export": "--calibration-data recomputes a CNN's batch-norm statistics"}

    def train_inputs(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]:
        refuse_foreign_flags(args, "train", self)
        return _cnn_inputs(args, supernet)

    def default_phases(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]:
        from ofa.training import default_cnn_phases

        return default_cnn_phases(
            args.steps,
            space=supernet.space,
            sampling=args.sampling,
            num_random=args.num_random,
            min_width=args.min_width,
            width_multipliers=args.width_multipliers,
            later_learning_rate=args.later_lr,
        )

    def search_data(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, Any]:
        return _image_data(args)

    def export_options(
        self, args: argparse.Namespace, supernet: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        refuse_foreign_flags(args, "export", self)
        settings = {"torch_export": args.torch_export}
        return settings, {"calibration_data": _calibration_batches(args, supernet)}


def _image_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """A CNN's evaluation images and the training images its batch norms are calibrated on."""
    from ofa.data_images import load_images

    if args.data is None:
        raise ValueError(
            "a CNN supernet is scored on images: give --data digits, fashion-mnist or FILE.npz"
        )
    if args.examples < 1:
        raise ValueError(f"--examples must be positive, got {args.examples}")
    split = "train" if args.split == "train" else "test"
    data = load_images(args.data, split=split, limit=args.examples, seed=args.seed)
    calibration = load_images(args.data, split="train", limit=512, seed=args.seed + 1)
    return data, calibration


def _calibration_batches(args: argparse.Namespace, supernet: Any) -> list[Any] | None:
    """Image batches for BN calibration from ``--calibration-data``, or None."""
    spec = args.calibration_data
    if spec is None:
        return None
    if args.calibration_batches < 1 or args.batch_size < 1:
        raise ValueError("--calibration-batches and --batch-size must be positive")
    count = args.calibration_batches * args.batch_size
    if spec == "digits":
        from ofa.data_images import load_digits

        images = load_digits(split="train").images
    elif spec == "fashion-mnist":
        from ofa.data_images import load_fashion_mnist

        images = load_fashion_mnist(split="train", limit=count).images
    else:
        images = _npy_images(Path(spec))
    channels = supernet.model.input_channels()
    if images.shape[1] != channels:
        raise ValueError(
            f"--calibration-data images have {images.shape[1]} channels, the CNN reads {channels}"
        )
    images = images[:count]
    return [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]


def _npy_images(path: Path) -> Any:
    import numpy as np
    import torch

    if path.suffix != ".npy" or not path.is_file():
        raise FileNotFoundError(
            f"--calibration-data {path} is not digits, fashion-mnist or an existing .npy file"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"--calibration-data {path} is not a plain .npy array: {error}") from None
    if array.ndim != 4 or array.dtype.kind not in "fiu":
        raise ValueError(
            f"--calibration-data {path} must hold (N, C, H, W) numbers, got shape {array.shape}"
        )
    return torch.from_numpy(array.astype(np.float32))


def _cnn_inputs(args: argparse.Namespace, supernet: Any) -> tuple[Any, Any, Any, Any, str, None]:
    """An exported CNN teacher, images, the test split and calibration images, the label."""
    import torch

    from ofa.data_images import load_images

    if args.data is None or args.data in ("rotten_tomatoes", "imdb"):
        raise ValueError(
            "a CNN supernet trains on images: give --data digits, fashion-mnist or FILE.npz"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = None
    if args.teacher:
        import export

        teacher = export.load(args.teacher)
    train_data = load_images(args.data, split="train", limit=args.limit, seed=args.seed)
    validation = None
    if args.data in ("digits", "fashion-mnist"):
        validation = load_images(args.data, split="test", limit=args.limit, seed=args.seed)
    calibration = train_data.subset(min(len(train_data), 1024), seed=args.seed)
    return teacher, train_data, validation, calibration, "test (batch norms recalibrated)", None


register_family(CnnApp())
