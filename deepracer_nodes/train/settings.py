"""Every setting of a training run, in one frozen dataclass (importable without torch,
so `deepracer train --help` and the tests need no PyTorch). DEFAULTS make the bundled
model."""

from __future__ import annotations

from dataclasses import dataclass

from deepracer_nodes.train.actions import ActionGrid
from deepracer_nodes.train.augment import Augmentation
from deepracer_nodes.train.episodes import Perturbation, Randomisation
from deepracer_nodes.train.tracks import TrackRanges


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the model; the defaults make the bundled one."""

    seed: int = 1
    rounds: int = 10  # DAgger rounds after the teacher's round 0
    speeds_mps: tuple[float, ...] = (2.5,)
    steering_count: int = 11
    teacher_episodes: int = 32
    episodes_per_round: int = 16
    steps_per_episode: int = 400
    batches_per_round: int = 600
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_tracks: int = 6
    validation_laps: int = 2
    threads: int = 2
    # Wall-clock budget: no new round starts when it would likely end past it.
    minutes: float = 30.0
    teacher_perturbation: Perturbation = Perturbation(noise_rad=0.08, burst_rate_hz=0.25)
    policy_perturbation: Perturbation = Perturbation(noise_rad=0.04, burst_rate_hz=0.12)
    start_offset_m: float = 0.3
    start_heading_rad: float = 0.3
    randomisation: Randomisation = Randomisation()
    augmentation: Augmentation = Augmentation()
    track_ranges: TrackRanges = TrackRanges()

    def __post_init__(self) -> None:
        positive = ('rounds', 'teacher_episodes', 'steps_per_episode', 'batches_per_round',
                    'batch_size', 'threads')
        for name in positive:
            if getattr(self, name) < 1 and not (name == 'rounds' and self.rounds == 0):
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.episodes_per_round < 1 and self.rounds > 0:
            raise ValueError('episodes_per_round must be >= 1')
        if not (self.learning_rate > 0 and self.minutes > 0):
            raise ValueError('learning_rate and minutes must be positive')
        self.grid  # validates the action space

    @property
    def grid(self) -> ActionGrid:
        return ActionGrid(steering_count=self.steering_count, speeds_mps=self.speeds_mps)

    @property
    def capacity(self) -> int:
        return self.steps_per_episode * (self.teacher_episodes
                                         + self.rounds * self.episodes_per_round)


DEFAULTS = TrainSettings()
