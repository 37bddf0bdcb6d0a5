"""The bundled model's discrete action space and the expert's labels in it.

DeepRacer models choose among a list of (steering angle, speed) actions. Ours is a fan
of evenly spaced steering angles, each at one or two speeds: the expert's continuous
steering becomes a SOFT label spread over the two nearest angles (linear interpolation,
so the label's mean is the expert's angle and its argmax the nearest angle), and its
wish to slow down before a bend picks the speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.core.metadata import (
    Action, DiscreteActionSpace, ModelMetadata, Sensor, TrainingAlgorithm)

NEURAL_NETWORK_NAME = 'DEEP_CONVOLUTIONAL_NETWORK_SHALLOW'
METADATA_VERSION = '5'


@dataclass(frozen=True)
class ActionGrid:
    """steering_count angles evenly from +max to -max degrees (left first, as the
    console lists them), times the speeds (m/s, fastest first)."""

    steering_count: int = 11
    max_steering_deg: float = math.degrees(spec.CAR.max_steering_rad)
    speeds_mps: tuple[float, ...] = (2.5,)

    def __post_init__(self) -> None:
        if self.steering_count < 3 or self.steering_count % 2 == 0:
            raise ValueError('steering_count must be odd and >= 3 (so straight ahead is an '
                             f'action), got {self.steering_count}')
        limit = math.degrees(spec.CAR.max_steering_rad)
        if not 0.0 < self.max_steering_deg <= limit + 1e-9:
            raise ValueError(f'max_steering_deg must be in (0, {limit:g}], got '
                             f'{self.max_steering_deg}')
        if not self.speeds_mps or any(not 0.0 < s <= spec.CAR.max_speed_mps
                                      for s in self.speeds_mps):
            raise ValueError(f'speeds must be in (0, {spec.CAR.max_speed_mps:g}] m/s, got '
                             f'{self.speeds_mps}')
        if list(self.speeds_mps) != sorted(set(self.speeds_mps), reverse=True):
            raise ValueError(f'speeds must be distinct and fastest first, got {self.speeds_mps}')

    @property
    def steering_deg(self) -> np.ndarray:
        return np.linspace(self.max_steering_deg, -self.max_steering_deg, self.steering_count)

    @property
    def steering_rad(self) -> np.ndarray:
        return np.radians(self.steering_deg)

    @property
    def size(self) -> int:
        return self.steering_count * len(self.speeds_mps)

    def action(self, index: int) -> tuple[float, float]:
        """(steering rad, speed m/s) of an action index; speed-major order."""
        speed_index, steering_index = divmod(int(index), self.steering_count)
        return float(self.steering_rad[steering_index]), float(self.speeds_mps[speed_index])

    def mirrored_indices(self) -> np.ndarray:
        """Index of each action's mirror image (same speed, opposite steering)."""
        steering = np.arange(self.steering_count)[::-1]
        return np.concatenate([steering + k * self.steering_count
                               for k in range(len(self.speeds_mps))])

    def soft_labels(self, steering_rad: np.ndarray, speed_index: np.ndarray | None = None
                    ) -> np.ndarray:
        """Target distributions (K, size) for expert steering angles (K,) in radians.

        Each angle is split between its two neighbouring steering actions in proportion
        to closeness (clipped to the fan); speed_index (K,) picks the speed row (0 =
        fastest, the default).
        """
        steering_rad = np.asarray(steering_rad, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(steering_rad)):
            raise ValueError('expert steering angles must be finite')
        # Position on the fan: 0 = full left, steering_count - 1 = full right.
        step = 2.0 * math.radians(self.max_steering_deg) / (self.steering_count - 1)
        position = (math.radians(self.max_steering_deg) - steering_rad) / step
        position = np.clip(position, 0.0, self.steering_count - 1)
        lower = np.minimum(np.floor(position).astype(int), self.steering_count - 2)
        upper_weight = position - lower
        labels = np.zeros((len(steering_rad), self.size), np.float32)
        rows = np.arange(len(steering_rad))
        offset = 0 if speed_index is None else \
            np.asarray(speed_index, dtype=int).reshape(-1) * self.steering_count
        labels[rows, offset + lower] = 1.0 - upper_weight
        labels[rows, offset + lower + 1] = upper_weight
        return labels

    def metadata(self) -> ModelMetadata:
        """model_metadata.json content: a discrete DeepRacer action space, camera only."""
        actions = tuple(Action(round(float(angle), 4), float(speed))
                        for speed in self.speeds_mps for angle in self.steering_deg)
        return ModelMetadata(action_space=DiscreteActionSpace(actions),
                             sensors=(Sensor.FRONT_FACING_CAMERA,),
                             training_algorithm=TrainingAlgorithm.CLIPPED_PPO,
                             neural_network=NEURAL_NETWORK_NAME, version=METADATA_VERSION)
