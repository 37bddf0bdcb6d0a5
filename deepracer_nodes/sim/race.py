"""Race rules, DeepRacer reward parameters and the expert driver.

A Race is fed the car's base_link pose once per control step (DeepRacer steps at the
camera rate, 15 Hz). It follows progress along the centre line across the start/finish
line and against the direction of travel, counts laps at 100 % progress with
interpolated crossing times, and applies the evaluation rule for leaving the track: the
car is off track when NO wheel is on the road; it is then put back on the centre line
at its last progress point, heading along the track, and the penalty (2 s by default)
is added to the lap time.

The car's position for progress, distance from centre and the reward's x, y is the
centre of the wheelbase (midway between the axles), not the rear axle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.sim.track import Track, TrackPosition

DEFAULT_OFF_TRACK_PENALTY_S = 2.0


@dataclass(frozen=True)
class Pose:
    """A base_link pose in the world: metres and radians."""

    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class RaceConfig:
    """Rules of one race or training episode.

    reversed: drive the track the other way (DeepRacer's is_reversed).
    start_progress: where the car starts, percent of the lap from waypoint 0.
    off_track_penalty_s: added to the lap time each time the car leaves the track.
    """

    reversed: bool = False
    start_progress: float = 0.0
    off_track_penalty_s: float = DEFAULT_OFF_TRACK_PENALTY_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_progress) and 0.0 <= self.start_progress < 100.0):
            raise ValueError(f'start_progress must be in [0, 100), got {self.start_progress}')
        if not (math.isfinite(self.off_track_penalty_s) and self.off_track_penalty_s >= 0.0):
            raise ValueError('off_track_penalty_s must be >= 0, got '
                             f'{self.off_track_penalty_s}')


@dataclass(frozen=True)
class RaceUpdate:
    """What happened at one step.

    lap_time_s: set when this step completed a lap (penalties included).
    reset_pose: set when the car left the track: the caller puts the car there, stopped.
    """

    progress: float
    all_wheels_on_track: bool
    is_offtrack: bool
    lap_time_s: float | None = None
    reset_pose: Pose | None = None


@dataclass
class _Observation:
    """Geometry of the latest pose, kept for reward_params."""

    pose: Pose
    point: tuple[float, float]
    position: TrackPosition
    all_wheels_on_track: bool
    is_offtrack: bool


@dataclass
class _LapState:
    start_time_s: float
    penalty_s: float = 0.0
    times_s: list[float] = field(default_factory=list)


class Race:
    """Progress, laps, off-track resets and reward parameters on one track."""

    def __init__(self, track: Track, config: RaceConfig = RaceConfig(),
                 car: spec.CarGeometry = spec.CAR) -> None:
        self.config = config
        self.car = car
        self.track = track.reversed() if config.reversed else track
        self._waypoints = [tuple(map(float, p)) for p in self.track.waypoints]
        self._start_arc_m = config.start_progress / 100.0 * self.track.length_m
        self.reset()

    # --- episode -------------------------------------------------------------------------

    def start_pose(self) -> Pose:
        """Where the car starts: on the centre line at start_progress, along the track."""
        return self.pose_at_arc(self._start_arc_m)

    def pose_at_arc(self, arc_m: float) -> Pose:
        """base_link pose putting the car's centre on the centre line at an arc length,
        heading along the track."""
        yaw = self.track.heading_at(arc_m)
        x, y = self.track.point_at(arc_m)
        back = self.car.wheelbase_m / 2.0
        return Pose(float(x) - back * math.cos(yaw), float(y) - back * math.sin(yaw), yaw)

    def reset(self, time_s: float = 0.0) -> Pose:
        """Start a new episode at the start pose; returns it."""
        self._time_s = float(time_s)
        self._distance_m = 0.0  # along the track since the lap started, negative behind
        self._laps = _LapState(start_time_s=self._time_s)
        self.steps = 0
        self.off_track_count = 0
        pose = self.start_pose()
        self._last = self._observe(pose)
        self._last_arc_m = self._last.position.arc_length_m
        return pose

    # --- state ---------------------------------------------------------------------------

    @property
    def laps_completed(self) -> int:
        return len(self._laps.times_s)

    @property
    def lap_times_s(self) -> list[float]:
        """Completed lap times, penalties included."""
        return list(self._laps.times_s)

    @property
    def progress(self) -> float:
        """Percent of the current lap done, 0-100 (0 while behind the start)."""
        return min(100.0, max(0.0, 100.0 * self._distance_m / self.track.length_m))

    # --- steps ---------------------------------------------------------------------------

    def update(self, time_s: float, x: float, y: float, yaw: float) -> RaceUpdate:
        """Feed the car's base_link pose at time_s (s, never decreasing); one episode step."""
        if not all(math.isfinite(v) for v in (time_s, x, y, yaw)):
            raise ValueError(f'pose and time must be finite, got t={time_s} x={x} y={y} '
                             f'yaw={yaw}')
        if time_s < self._time_s:
            raise ValueError(f'time went backwards: {time_s} s after {self._time_s} s')
        previous_time, previous_distance = self._time_s, self._distance_m
        self._time_s = float(time_s)
        self.steps += 1
        observation = self._observe(Pose(float(x), float(y), float(yaw)))
        self._last = observation
        arc = observation.position.arc_length_m
        length = self.track.length_m
        # The shortest way round from the last arc length, so crossing the start line
        # (either way) and driving backwards both count correctly.
        self._distance_m += math.remainder(arc - self._last_arc_m, length)
        self._last_arc_m = arc
        lap_time = None
        if self._distance_m >= length:
            lap_time = self._complete_lap(previous_time, previous_distance)
        reset_pose = None
        if observation.is_offtrack:
            reset_pose = self._reset_after_off_track()
        return RaceUpdate(progress=self.progress,
                          all_wheels_on_track=observation.all_wheels_on_track,
                          is_offtrack=observation.is_offtrack,
                          lap_time_s=lap_time, reset_pose=reset_pose)

    def _complete_lap(self, previous_time: float, previous_distance: float) -> float:
        length = self.track.length_m
        travelled = self._distance_m - previous_distance
        fraction = (length - previous_distance) / travelled if travelled > 0 else 1.0
        crossing = previous_time + min(max(fraction, 0.0), 1.0) * (self._time_s - previous_time)
        lap_time = crossing - self._laps.start_time_s + self._laps.penalty_s
        self._laps.times_s.append(lap_time)
        self._laps.start_time_s = crossing
        self._laps.penalty_s = 0.0
        self._distance_m -= length
        return lap_time

    def _reset_after_off_track(self) -> Pose:
        self.off_track_count += 1
        self._laps.penalty_s += self.config.off_track_penalty_s
        arc = self._start_arc_m + self._distance_m
        pose = self.pose_at_arc(arc)
        # Keep the reported is_offtrack for this step's reward, continue from the reset.
        self._last_arc_m = self._observe(pose).position.arc_length_m
        return pose

    def _observe(self, pose: Pose) -> _Observation:
        c, s = math.cos(pose.yaw), math.sin(pose.yaw)
        half = self.car.wheelbase_m / 2.0
        point = (pose.x + half * c, pose.y + half * s)
        wheels_on = self.track.points_on_track(
            self.track.wheel_points(pose.x, pose.y, pose.yaw, self.car))
        return _Observation(pose=pose, point=point, position=self.track.locate(*point),
                            all_wheels_on_track=bool(wheels_on.all()),
                            is_offtrack=not bool(wheels_on.any()))

    # --- reward function input -------------------------------------------------------------

    def reward_params(self, speed_mps: float, steering_rad: float) -> dict[str, Any]:
        """DeepRacer's reward function params for the latest pose.

        speed_mps and steering_rad are the COMMANDED action (what the policy chose); the
        steering is reported in degrees, as DeepRacer gives it.
        """
        last = self._last
        heading = math.degrees(math.remainder(last.pose.yaw, 2.0 * math.pi))
        return {
            'all_wheels_on_track': last.all_wheels_on_track,
            'x': last.point[0],
            'y': last.point[1],
            'heading': 180.0 if heading == -180.0 else heading,
            'distance_from_center': last.position.distance_from_center_m,
            'is_left_of_center': last.position.is_left_of_center,
            'is_reversed': self.config.reversed,
            'is_offtrack': last.is_offtrack,
            'progress': self.progress,
            'steps': self.steps,
            'speed': float(speed_mps),
            'steering_angle': math.degrees(steering_rad),
            'track_width': self.track.width_m,
            'track_length': self.track.length_m,
            'waypoints': list(self._waypoints),
            'closest_waypoints': list(
                last.position.closest_waypoints(self.track.waypoint_count)),
        }


# --- the expert: pure pursuit on the centre line -------------------------------------------

@dataclass(frozen=True)
class ExpertConfig:
    """Pure pursuit with a curvature-limited speed profile.

    max_speed_mps: speed on straights. lateral_accel_mps2: cornering grip budget (sets
    the speed in bends, v = sqrt(a / curvature)). braking_mps2: how hard the profile
    slows down before a bend. lookahead_*: the pursuit distance, base + per m/s.
    """

    max_speed_mps: float = 2.5
    min_speed_mps: float = 0.6
    lateral_accel_mps2: float = 3.0
    braking_mps2: float = 3.0
    lookahead_base_m: float = 0.35
    lookahead_per_mps: float = 0.2
    # Speed commands look this far ahead in time, so the lagged speed arrives on time.
    speed_preview_s: float = 0.35


class ExpertDriver:
    """Reference driver: (speed, steering) commands from the pose and the track."""

    def __init__(self, track: Track, config: ExpertConfig = ExpertConfig(),
                 car: spec.CarGeometry = spec.CAR) -> None:
        self.track = track
        self.config = config
        self.car = car
        profile = _speed_profile(track, config)
        # Closed for interpolation: the last waypoint blends back into the first.
        self._profile_arcs = np.append(track.waypoint_arc_lengths, track.length_m)
        self._profile_speeds = np.append(profile, profile[0])

    def target_speed(self, arc_m: float) -> float:
        """Speed profile value (m/s) at an arc length, linearly interpolated."""
        return float(np.interp(arc_m % self.track.length_m, self._profile_arcs,
                               self._profile_speeds))

    def command(self, x: float, y: float, yaw: float,
                speed_mps: float = 0.0) -> tuple[float, float]:
        """(speed m/s, steering rad positive left) for a base_link pose and current speed."""
        config = self.config
        position = self.track.locate(x, y)
        lookahead = config.lookahead_base_m + config.lookahead_per_mps * max(speed_mps, 0.0)
        target = self.track.point_at(position.arc_length_m + lookahead)
        dx, dy = float(target[0]) - x, float(target[1]) - y
        distance = max(math.hypot(dx, dy), 1e-6)
        alpha = math.atan2(dy, dx) - yaw
        steering = math.atan2(2.0 * self.car.wheelbase_m * math.sin(alpha), distance)
        steering = min(max(steering, -self.car.max_steering_rad), self.car.max_steering_rad)
        preview = position.arc_length_m + max(speed_mps, 0.0) * config.speed_preview_s
        return self.target_speed(preview), steering


def _speed_profile(track: Track, config: ExpertConfig) -> np.ndarray:
    """Per-waypoint speed: grip-limited in bends, braking-limited before them."""
    curvature = np.abs(track.curvature_at_waypoints())
    # Smooth over neighbours so noisy route files do not make the speed jitter.
    kernel = np.ones(5) / 5.0
    padded = np.concatenate((curvature[-2:], curvature, curvature[:2]))
    curvature = np.convolve(padded, kernel, mode='valid')
    with np.errstate(divide='ignore'):
        speed = np.sqrt(config.lateral_accel_mps2 / np.maximum(curvature, 1e-9))
    speed = np.clip(speed, config.min_speed_mps, config.max_speed_mps)
    spacing = np.diff(np.append(track.waypoint_arc_lengths, track.length_m))
    # Backward passes round the loop (twice covers the wrap): reach each bend slow enough.
    for _ in range(2):
        for i in range(len(speed) - 1, -1, -1):
            following = speed[(i + 1) % len(speed)]
            speed[i] = min(speed[i], math.sqrt(following ** 2
                                               + 2.0 * config.braking_mps2 * spacing[i]))
    return speed
