"""Clustering real images with a trained model.

* `cluster_h`: argmax of h = h2 . h1 (NEMGAN; 001 sec. 2.3 (c)).
* `cluster_generated_classifier`: Algorithm 2 of the MM-GAN thesis (004 ch. 5): draw M samples from
  every mode, label each with its mode, train a K-way classifier on them and cluster real images with
  that classifier. It needs only g, so it also clusters with models whose inverter is weak.
"""

from __future__ import annotations

import numpy as np
import torch

from .classifier import predict, train_classifier
from core.images import model_to_uint8, uint8_to_model
from .model import NemganModel


def cluster_h(model: NemganModel, x_uint8: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(mode ids, probabilities) of real uint8 NCHW images under h."""
    return model.cluster(torch.from_numpy(uint8_to_model(x_uint8)), batch_size)


def cluster_generated_classifier(model: NemganModel, x_uint8: np.ndarray, samples_per_mode: int = 1000,
                                 steps: int = 1000, sigma: float = 1.0, seed: int = 0,
                                 progress: bool = False, augment: bool = False) -> np.ndarray:
    """004 Algorithm 2: a classifier trained on generated samples labeled by their mode."""
    K = model.n_modes
    xs, ys = [], []
    for k in range(K):  # steps 2-6: M samples from each mode, labeled by the mode
        x, _ = model.generate(samples_per_mode, mode=k, sigma=sigma, seed=seed * 1000 + k)
        xs.append(model_to_uint8(x))
        ys.append(np.full(samples_per_mode, k, np.int64))
    # step 7. augment: the classifier sees g's samples under small affine warps, which widens what g drew
    # towards what real images vary by (beyond the thesis, which leaves the classifier open).
    clf = train_classifier(np.concatenate(xs), np.concatenate(ys), K, steps=steps, seed=seed, progress=progress,
                           augment=augment)
    labels, _ = predict(clf, x_uint8)  # step 8
    return labels
