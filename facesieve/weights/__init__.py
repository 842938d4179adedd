"""Weights: registry of pretrained sources, converters into our modules, and the cache."""
from facesieve.weights.cache import WeightsError, cache_dir, cached_state_dict, download, sha256_file
from facesieve.weights.registry import Preprocessing, WeightsEntry, get_weights, list_weights

__all__ = [
    "Preprocessing",
    "WeightsEntry",
    "WeightsError",
    "cache_dir",
    "cached_state_dict",
    "download",
    "get_weights",
    "list_weights",
    "sha256_file",
]
