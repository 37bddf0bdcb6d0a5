"""Driving episodes in the ROS-free simulator: render -> decide -> dynamics -> race.

One loop serves data collection and evaluation. Each control step (the camera rate)
renders the camera frame at the car's pose, turns it into the model's greyscale input
exactly as the device does, asks the teacher what it would do there (the label), lets
the driver (the policy being trained or evaluated, or the teacher itself) choose the
command, and advances the car. Commands reach the car after a latency, as through
the ROS stack; perturbations (steering noise and short bursts of a random steering
angle) push the car into the off-centre states a policy must learn to recover from.

A World is one randomised rendering of one track: mat colours, texture resolution,
camera mount jitter, frame effects, the resolution the camera renders at before the
device's resize, and the latency. Everything is drawn from a numpy Generator, so a
seed reproduces an episode exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.core.preprocess import reference_grey
from deepracer_nodes.sim import dynamics
from deepracer_nodes.sim.race import ExpertConfig, ExpertDriver, Race, RaceConfig
from deepracer_nodes.sim.render import (
    Appearance, CameraRenderer, FrameEffects, GroundTexture, random_appearance)
from deepracer_nodes.sim.track import Track
from deepracer_nodes.train.actions import ActionGrid

MODEL_SIZE = (spec.MODEL_INPUT.width, spec.MODEL_INPUT.height)
# A driver sees the camera frame (BGR, any size) and the model input it becomes (grey,
# model size) and returns (speed m/s, steering rad).
Driver = Callable[[np.ndarray, np.ndarray], tuple[float, float]]


@dataclass(frozen=True)
class Randomisation:
    """What varies from one World to the next (each jitter is +/- the value)."""

    random_appearance: bool = True
    frame_effects: FrameEffects | None = FrameEffects()
    camera_tilt_rad: float = 0.04
    camera_height_m: float = 0.015
    camera_fov_rad: float = 0.06
    camera_yaw_rad: float = 0.03
    texture_metres_per_px: tuple[float, float] = (0.004, 0.008)
    # Camera resolutions to render at before the device's resize to the model size:
    # the model size itself (mip-mapped, smooth) and the ROS camera's 640x480 (aliased
    # by the bilinear 4x reduction) look different; a policy must take both.
    resolutions: tuple[tuple[int, int], ...] = (MODEL_SIZE, MODEL_SIZE, (320, 240),
                                                (spec.CAMERA.width, spec.CAMERA.height))
    latency_s: tuple[float, float] = (0.0, 0.12)


# The simulator as the ROS stack runs it: default look, no jitter, model-size frames.
NO_RANDOMISATION = Randomisation(
    random_appearance=False, frame_effects=None, camera_tilt_rad=0.0, camera_height_m=0.0,
    camera_fov_rad=0.0, camera_yaw_rad=0.0, texture_metres_per_px=(0.005, 0.005),
    resolutions=(MODEL_SIZE,), latency_s=(0.0, 0.0))


@dataclass
class World:
    """One track as one randomised camera sees it."""

    track: Track
    renderer: CameraRenderer
    camera_yaw_rad: float = 0.0
    latency_s: float = 0.0

    def frame(self, state: dynamics.CarState) -> np.ndarray:
        """The camera frame (BGR) at the car's pose."""
        return self.renderer.render(state.x, state.y, state.yaw + self.camera_yaw_rad)


def make_world(track: Track, rng: np.random.Generator,
               randomisation: Randomisation = Randomisation()) -> World:
    """Draw a World for a track: appearance, texture, camera, effects and latency."""
    r = randomisation
    appearance = random_appearance(rng) if r.random_appearance else Appearance()
    texture = GroundTexture(track, appearance,
                            metres_per_px=float(rng.uniform(*r.texture_metres_per_px)),
                            seed=int(rng.integers(2 ** 31)))
    camera = replace(
        spec.CAMERA,
        tilt_rad=spec.CAMERA.tilt_rad + _jitter(rng, r.camera_tilt_rad),
        mount_z_m=spec.CAMERA.mount_z_m + _jitter(rng, r.camera_height_m),
        horizontal_fov_rad=spec.CAMERA.horizontal_fov_rad + _jitter(rng, r.camera_fov_rad))
    width, height = r.resolutions[int(rng.integers(len(r.resolutions)))]
    renderer = CameraRenderer(texture, width, height, camera, effects=r.frame_effects,
                              seed=int(rng.integers(2 ** 31)))
    return World(track, renderer, camera_yaw_rad=_jitter(rng, r.camera_yaw_rad),
                 latency_s=float(rng.uniform(*r.latency_s)))


def _jitter(rng: np.random.Generator, half_range: float) -> float:
    return float(rng.uniform(-half_range, half_range)) if half_range > 0 else 0.0


# --- the teacher ------------------------------------------------------------------------------

# Pure pursuit looking further ahead than the race module's default expert: a little
# lazier in bends, but it stays stable with two frames of latency at 2.5 m/s, and its
# calm steering is easier to imitate from a single image.
TEACHER_LOOKAHEAD_BASE_M = 0.5
TEACHER_LOOKAHEAD_PER_MPS = 0.3


class Teacher:
    """The expert whose commands label every visited state: steering from pure pursuit
    on the centre line, speed class from the curvature-limited speed profile."""

    def __init__(self, track: Track, grid: ActionGrid) -> None:
        self.grid = grid
        self.expert = ExpertDriver(track, ExpertConfig(
            max_speed_mps=max(grid.speeds_mps),
            min_speed_mps=min(min(grid.speeds_mps), ExpertConfig.min_speed_mps),
            lookahead_base_m=TEACHER_LOOKAHEAD_BASE_M,
            lookahead_per_mps=TEACHER_LOOKAHEAD_PER_MPS))

    def command(self, state: dynamics.CarState) -> tuple[float, float]:
        """(speed m/s wanted by the speed profile, steering rad) at the car's state."""
        return self.expert.command(state.x, state.y, state.yaw, state.speed)

    def speed_index(self, wanted_speed_mps: float) -> int:
        """The fastest speed of the grid not above the wanted one (else the slowest)."""
        speeds = self.grid.speeds_mps
        for index, speed in enumerate(speeds):
            if speed <= wanted_speed_mps + 1e-6:
                return index
        return len(speeds) - 1


# --- perturbations -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Perturbation:
    """Disturbances on the executed steering (the labels stay the teacher's).

    noise_rad: standard deviation of a slowly varying (first-order filtered) noise.
    burst_rate_hz: how often, on average, a burst starts; during a burst the steering is
    held at a random angle for burst_s seconds, which throws the car off its line.
    """

    noise_rad: float = 0.0
    noise_time_constant_s: float = 0.3
    burst_rate_hz: float = 0.0
    burst_s: tuple[float, float] = (0.15, 0.5)


@dataclass
class _PerturbationState:
    config: Perturbation
    rng: np.random.Generator
    noise: float = 0.0
    burst_left_s: float = 0.0
    burst_steering: float = 0.0

    def apply(self, steering: float, dt: float) -> float:
        c = self.config
        if c.noise_rad > 0:
            # Exact discretisation of an Ornstein-Uhlenbeck process with that std.
            decay = math.exp(-dt / c.noise_time_constant_s)
            self.noise = decay * self.noise + c.noise_rad * math.sqrt(1 - decay ** 2) \
                * float(self.rng.standard_normal())
        if self.burst_left_s <= 0 and c.burst_rate_hz > 0 \
                and self.rng.random() < c.burst_rate_hz * dt:
            self.burst_left_s = float(self.rng.uniform(*c.burst_s))
            self.burst_steering = float(self.rng.uniform(-1, 1)) * spec.CAR.max_steering_rad
        if self.burst_left_s > 0:
            self.burst_left_s -= dt
            return self.burst_steering
        return steering + self.noise


# --- the drive loop ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DriveConfig:
    """One episode: how long, where it starts, how hard it is disturbed.

    max_laps/max_steps end the episode; start_offset_m and start_heading_rad are the
    +/- ranges of a random initial displacement from the centre line.
    """

    max_steps: int = 600
    max_laps: int = 3
    control_hz: float = spec.CAMERA.fps
    start_progress: float | None = None  # percent; None = random
    start_offset_m: float = 0.0
    start_heading_rad: float = 0.0
    start_speed_mps: float = 0.0
    perturbation: Perturbation = Perturbation()
    record: bool = True
    # Stop at the first off-track (evaluation of a candidate) instead of resetting.
    stop_when_off_track: bool = False


@dataclass
class Episode:
    """What one episode recorded and achieved.

    frames: model inputs (K, H, W) uint8 grey; steering_rad / speed_index: the teacher's
    labels for them (K,). path: the car's base_link positions (steps, 2).
    """

    frames: np.ndarray
    steering_rad: np.ndarray
    speed_index: np.ndarray
    laps: int
    off_track: int
    lap_times_s: list[float]
    steps: int
    distance_m: float
    path: np.ndarray = field(repr=False)

    @property
    def mean_lap_time_s(self) -> float | None:
        return float(np.mean(self.lap_times_s)) if self.lap_times_s else None


def drive(world: World, grid: ActionGrid | None, rng: np.random.Generator,
          config: DriveConfig = DriveConfig(), driver: Driver | None = None,
          reversed_direction: bool = False) -> Episode:
    """Run one episode; driver None = the teacher drives (at the grid's speeds).

    The teacher (which needs the grid) labels recorded frames and drives when there is
    no driver; evaluation of a policy needs neither (grid None, record False).
    """
    if grid is None and (driver is None or config.record):
        raise ValueError('an action grid is needed to record labels or let the teacher drive')
    dt = 1.0 / config.control_hz
    start = float(rng.uniform(0, 100)) if config.start_progress is None \
        else config.start_progress
    race = Race(world.track, RaceConfig(reversed=reversed_direction,
                                        start_progress=min(start, 99.999)))
    teacher = Teacher(race.track, grid) if grid is not None else None
    state = _start_state(race, rng, config)
    actuation = _Actuation(world.latency_s, state.speed, 0.0)
    perturbation = _PerturbationState(config.perturbation, rng)
    frames, steering_labels, speed_labels, path = [], [], [], []
    time_s = 0.0
    for _ in range(config.max_steps):
        frame = world.frame(state)
        grey = reference_grey(frame, *MODEL_SIZE)
        if teacher is not None:
            wanted_speed, expert_steering = teacher.command(state)
            speed_index = teacher.speed_index(wanted_speed)
        if config.record:
            frames.append(grey)
            steering_labels.append(expert_steering)
            speed_labels.append(speed_index)
        if driver is None:
            speed, steering = teacher.grid.speeds_mps[speed_index], expert_steering
        else:
            speed, steering = driver(frame, grey)
        steering = perturbation.apply(steering, dt)
        actuation.command(time_s, speed, steering)
        state = actuation.advance(state, time_s, dt)
        time_s += dt
        path.append((state.x, state.y))
        update = race.update(time_s, state.x, state.y, state.yaw)
        if update.reset_pose is not None:
            if config.stop_when_off_track:
                break
            pose = update.reset_pose
            state = dynamics.CarState(pose.x, pose.y, pose.yaw)
            actuation.reset(time_s)
        if race.laps_completed >= config.max_laps:
            break
    return Episode(
        frames=np.array(frames, np.uint8).reshape(-1, MODEL_SIZE[1], MODEL_SIZE[0]),
        steering_rad=np.array(steering_labels, np.float32),
        speed_index=np.array(speed_labels, np.int64),
        laps=race.laps_completed, off_track=race.off_track_count,
        lap_times_s=race.lap_times_s, steps=race.steps,
        distance_m=race.laps_completed * race.track.length_m
        + race.progress / 100.0 * race.track.length_m,
        path=np.array(path, np.float64).reshape(-1, 2))


def _start_state(race: Race, rng: np.random.Generator, config: DriveConfig
                 ) -> dynamics.CarState:
    pose = race.start_pose()
    offset = _jitter(rng, config.start_offset_m)
    heading = pose.yaw + _jitter(rng, config.start_heading_rad)
    # Sideways (to the left of the track direction) by the offset.
    return dynamics.CarState(x=pose.x - offset * math.sin(pose.yaw),
                             y=pose.y + offset * math.cos(pose.yaw),
                             yaw=math.remainder(heading, 2 * math.pi),
                             speed=config.start_speed_mps)


class _Actuation:
    """Commands take effect latency_s after they are issued, as through the ROS stack
    (inference, transport, servo), so a policy cannot count on instant response."""

    def __init__(self, latency_s: float, speed: float, steering: float) -> None:
        self.latency_s = latency_s
        self.current = (speed, steering)
        self.pending: list[tuple[float, float, float]] = []

    def command(self, time_s: float, speed: float, steering: float) -> None:
        self.pending.append((time_s + self.latency_s, speed, steering))

    def reset(self, time_s: float) -> None:
        """After an off-track reset the car stands still; queued commands still arrive."""
        self.current = (0.0, self.current[1])

    def advance(self, state: dynamics.CarState, time_s: float, dt: float
                ) -> dynamics.CarState:
        end = time_s + dt
        while self.pending and self.pending[0][0] < end - 1e-9:
            switch, speed, steering = self.pending.pop(0)
            if switch > time_s + 1e-9:
                state = dynamics.step(state, *self.current, switch - time_s)
                time_s = switch
            self.current = (speed, steering)
        return dynamics.step(state, *self.current, end - time_s)
