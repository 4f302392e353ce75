"""Data sets, the synthetic face set and the DALI / PyTorch input pipelines of the training engine."""

from .errors import DataError
from .loaders import build_loader, build_tta_loader, dali_available
from .samples import FER2013_CLASSES, FERPLUS_CLASSES, RAFDB_CLASSES, SampleSet
from .synthetic import make_synthetic

__all__ = [
    "DataError",
    "FER2013_CLASSES",
    "FERPLUS_CLASSES",
    "RAFDB_CLASSES",
    "SampleSet",
    "build_loader",
    "build_tta_loader",
    "dali_available",
    "make_synthetic",
]
