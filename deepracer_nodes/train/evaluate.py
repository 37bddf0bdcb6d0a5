"""How well a policy drives: laps, off-tracks and lap times against the expert.

The loop is the ROS-free one of episodes.drive (render -> policy -> dynamics -> race)
with the simulator's default look and no randomisation, the way `deepracer sim` shows
a track; the expert is the race module's pure pursuit at the same speed limit as the
model's fastest action, driven the same number of laps in the same loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.core.policy import Policy
from deepracer_nodes.sim import dynamics
from deepracer_nodes.sim.race import ExpertConfig, ExpertDriver, Race
from deepracer_nodes.sim.track import Track
from deepracer_nodes.train.episodes import (
    NO_RANDOMISATION, DriveConfig, Driver, Randomisation, drive, make_world)

# Generous time allowance per lap (in laps at the model's speed) before giving up.
LAP_TIME_ALLOWANCE = 2.5


@dataclass(frozen=True)
class TrackResult:
    """One track: what the policy achieved and the expert's lap time for comparison."""

    track: str
    length_m: float
    laps: int
    laps_wanted: int
    off_track: int
    lap_times_s: list[float]
    expert_lap_time_s: float

    @property
    def mean_lap_time_s(self) -> float | None:
        return float(np.mean(self.lap_times_s)) if self.lap_times_s else None

    @property
    def lap_time_ratio(self) -> float | None:
        """Mean lap time over the expert's (1.0 = as fast as the expert)."""
        mean = self.mean_lap_time_s
        return None if mean is None else mean / self.expert_lap_time_s

    @property
    def clean(self) -> bool:
        """All laps done with no off-track."""
        return self.laps >= self.laps_wanted and self.off_track == 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(mean_lap_time_s=self.mean_lap_time_s, lap_time_ratio=self.lap_time_ratio,
                    clean=self.clean)
        return data


def policy_driver(policy: Policy) -> Driver:
    """A Driver acting through the car's own Policy (ONNX runtime, device preprocessing)."""
    def choose(frame: np.ndarray, grey: np.ndarray) -> tuple[float, float]:
        decision = policy.act(frame)
        return decision.speed_mps, decision.steering_angle_rad
    return choose


def expert_lap_time(track: Track, speed_limit_mps: float, laps: int = 3,
                    control_hz: float = spec.CAMERA.fps) -> float:
    """Mean lap time (s) of the race module's expert at a speed limit, from a standing
    start like the policy's, in the same fixed-rate control loop."""
    race = Race(track)
    expert = ExpertDriver(track, ExpertConfig(max_speed_mps=speed_limit_mps,
                                              min_speed_mps=min(speed_limit_mps,
                                                                ExpertConfig.min_speed_mps)))
    pose = race.start_pose()
    state = dynamics.CarState(pose.x, pose.y, pose.yaw)
    dt = 1.0 / control_hz
    time_s = 0.0
    limit_s = laps * LAP_TIME_ALLOWANCE * track.length_m / speed_limit_mps + 10.0
    while race.laps_completed < laps and time_s < limit_s:
        speed, steering = expert.command(state.x, state.y, state.yaw, state.speed)
        state = dynamics.step(state, speed, steering, dt)
        time_s += dt
        update = race.update(time_s, state.x, state.y, state.yaw)
        if update.reset_pose is not None:
            p = update.reset_pose
            state = dynamics.CarState(p.x, p.y, p.yaw)
    if not race.lap_times_s:
        raise RuntimeError(f'the expert did not complete a lap of {track.name}')
    return float(np.mean(race.lap_times_s))


def evaluate(driver: Driver, track: Track, speed_limit_mps: float, laps: int = 3,
             seed: int = 0, randomisation: Randomisation = NO_RANDOMISATION,
             expert_time_s: float | None = None) -> TrackResult:
    """Drive `laps` laps from a standing start at the track's start line."""
    rng = np.random.default_rng(seed)
    world = make_world(track, rng, randomisation)
    steps = math.ceil(laps * LAP_TIME_ALLOWANCE * track.length_m / speed_limit_mps
                      * spec.CAMERA.fps) + 150
    episode = drive(world, None, rng, DriveConfig(max_steps=steps, max_laps=laps,
                                                  start_progress=0.0, record=False),
                    driver=driver)
    if expert_time_s is None:
        expert_time_s = expert_lap_time(track, speed_limit_mps, laps)
    return TrackResult(track=track.name, length_m=track.length_m, laps=episode.laps,
                       laps_wanted=laps, off_track=episode.off_track,
                       lap_times_s=episode.lap_times_s, expert_lap_time_s=expert_time_s)
