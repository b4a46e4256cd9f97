"""Minibatch order: a resumable shuffled iterator."""

from __future__ import annotations

import numpy as np

from core.errors import DataError

from .subsets import is_int


class BatchIterator:
    """Infinite stream of shuffled index batches over ``range(n)``, resumable exactly.

    The stream is the concatenation of one fresh permutation per epoch, cut into batches of
    ``batch_size``: batches are always full (a batch may straddle two epochs) and every sample
    is visited once per epoch. ``epoch`` counts completed passes.

    Resuming: the state holds the generator state from *before* the current epoch's
    permutation was drawn plus the position in it, so :meth:`load_state_dict` can regenerate
    that permutation instead of storing n indices in every checkpoint.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        if not is_int(n) or n < 1:
            raise DataError(f"BatchIterator: n must be a positive integer, got {n!r}")
        if not is_int(batch_size) or batch_size < 1:
            raise DataError(f"BatchIterator: batch_size must be a positive integer, got {batch_size!r}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._rng_state = self._rng.bit_generator.state  # a fresh dict copy
        self._perm = self._rng.permutation(self.n)
        self._pos = 0

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> np.ndarray:
        parts, need = [], self.batch_size
        while need:
            if self._pos == self.n:
                self.epoch += 1
                self._start_epoch()
            take = min(need, self.n - self._pos)
            parts.append(self._perm[self._pos : self._pos + take])
            self._pos += take
            need -= take
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def state_dict(self) -> dict:
        """Plain-Python state (JSON/pickle friendly)."""
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "pos": self._pos,
            "rng_state": self._rng_state,
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            n, batch_size = int(state["n"]), int(state["batch_size"])
            epoch, pos, rng_state = int(state["epoch"]), int(state["pos"]), state["rng_state"]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"BatchIterator: malformed state dict ({e!r})") from None
        # Resuming over a different data set or batch size would silently change the stream.
        if (n, batch_size) != (self.n, self.batch_size):
            raise DataError(
                f"BatchIterator: state is for n={n}, batch_size={batch_size}, "
                f"but this iterator has n={self.n}, batch_size={self.batch_size}"
            )
        if not 0 <= pos <= n:
            raise DataError(f"BatchIterator: position {pos} out of range 0..{n}")
        try:
            self._rng.bit_generator.state = rng_state
        except (TypeError, ValueError, KeyError) as e:
            raise DataError(f"BatchIterator: malformed generator state ({e})") from None
        self.seed = int(state.get("seed", self.seed))
        self._start_epoch()  # redraws the same permutation from the restored generator state
        self.epoch, self._pos = epoch, pos
