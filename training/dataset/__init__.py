"""Image data for training mode-matching GANs: loading, class subsetting, imbalance, batching.

This package is deliberately torch-free (numpy + pillow only) so the CLI, the service and the
tests can inspect data sets without importing torch. Everything returns plain numpy arrays:

* images are ``uint8 [N, C, H, W]`` on the way in (compact: 60k MNIST images are 47 MB) and
  are converted to the model's float range ``[-1, 1]`` only per batch (``core.images.uint8_to_model``);
* labels are ``int64 [N]`` in ``0..n_classes-1`` or ``None`` for unlabeled data.

One concern a module, in reading order:

    idx.py      IDX files (the MNIST distribution format)
    arrays.py   the array layouts people store -> uint8 [N, C, H, W], labels -> int64 [N]
    sources.py  an IDX directory, .npz, .npy or an image folder -> arrays (``load_images``)
    spec.py     ``DataSpec`` (what to load, how to carve it up) and ``ImageDataset``
    subsets.py  classes, groups, exact ratios, caps; ``labeled_indices`` for semi-supervision
    load.py     ``load_dataset``: a preset name (core/data.py), a path or a DataSpec
    fake.py     ``fake_dataset`` for --dry-run and tests
    batches.py  ``BatchIterator``: resumable minibatch order
    run.py      a training run's data and split (validation slice, labeled subset): ``run_split``

Every problem with the input is reported as :class:`DataError` naming the file and what is
wrong, because a raw ``struct.error`` or ``zlib.error`` three frames deep in a training job tells
the user nothing about which of their files is broken.
"""

from core.data import DATASETS, FASHION_MNIST_CLASSES, MNIST_CLASSES, PRESETS, default_data_root
from core.errors import DataError

from .batches import BatchIterator
from .fake import fake_dataset
from .idx import read_idx
from .load import load_dataset
from .sources import load_images
from .spec import DataSpec, ImageDataset
from .subsets import labeled_indices

__all__ = [
    "DataError",
    "read_idx",
    "load_images",
    "DataSpec",
    "ImageDataset",
    "DATASETS",
    "PRESETS",  # the old name of DATASETS
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "default_data_root",
    "load_dataset",
    "labeled_indices",
    "fake_dataset",
    "BatchIterator",
]
