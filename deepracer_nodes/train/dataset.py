"""The aggregated DAgger dataset: every visited frame with the teacher's label.

Frames are kept as uint8 model inputs in one preallocated array (about 19 KB each), so
aggregating tens of thousands costs no copying; a batch is drawn at random, augmented
and turned into soft labels here, without PyTorch.
"""

from __future__ import annotations

import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.train.actions import ActionGrid
from deepracer_nodes.train.augment import Augmentation, augment
from deepracer_nodes.train.episodes import Episode


class Dataset:
    """Frames (N, H, W) uint8 with steering labels (rad) and speed classes, growing."""

    def __init__(self, capacity: int, height: int = spec.MODEL_INPUT.height,
                 width: int = spec.MODEL_INPUT.width) -> None:
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.frames = np.empty((capacity, height, width), np.uint8)
        self.steering_rad = np.empty(capacity, np.float32)
        self.speed_index = np.empty(capacity, np.int64)
        self.round = np.empty(capacity, np.int16)  # DAgger round that collected each frame
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        return len(self.frames)

    def add(self, episode: Episode, round_index: int) -> int:
        """Append an episode's frames (as many as fit); returns how many were added."""
        count = min(len(episode.frames), self.capacity - self.size)
        end = self.size + count
        self.frames[self.size:end] = episode.frames[:count]
        self.steering_rad[self.size:end] = episode.steering_rad[:count]
        self.speed_index[self.size:end] = episode.speed_index[:count]
        self.round[self.size:end] = round_index
        self.size = end
        return count

    def batch(self, indices: np.ndarray, grid: ActionGrid, rng: np.random.Generator,
              augmentation: Augmentation = Augmentation()) -> tuple[np.ndarray, np.ndarray]:
        """Augmented images (B, H, W, 1) float32 raw 0-255 and soft labels (B, actions)."""
        if len(indices) and (np.min(indices) < 0 or np.max(indices) >= self.size):
            raise IndexError(f'batch indices must be in [0, {self.size})')
        images, mirrored = augment(self.frames[indices], rng, augmentation)
        steering = np.where(mirrored, -self.steering_rad[indices], self.steering_rad[indices])
        labels = grid.soft_labels(steering, self.speed_index[indices])
        return images[..., None], labels
