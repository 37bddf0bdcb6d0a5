"""One simulated race: the car, the rules, the clock and the reward, stepped without ROS.

The simulator node (deepracer_nodes/sim_node.py) is a shell round this class: it asks
for a camera frame at each control step, publishes it, and feeds the command that comes
back. Keeping the stepping here lets it be tested and reused (training, benchmarks)
without a ROS graph.

Time is kept in integer nanoseconds so thousands of steps never drift: control step k
(one camera frame) is at start + k * frame period, and each control period is split into
a whole number of physics ticks. Sim time starts at one frame period, not 0: ROS reads a
zero stamp as "unset".

Race timing starts at the first control step where the car is commanded to move (the
"green light"), so a pipeline still loading, or a car not yet enabled, costs no lap time.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepracer_nodes.core import spec
from deepracer_nodes.sim import dynamics
from deepracer_nodes.sim.race import Race, RaceConfig
from deepracer_nodes.sim.reward import RewardFunction, RewardFunctionError
from deepracer_nodes.sim.track import Track

NS_PER_S = 1_000_000_000
# Commands slower than this count as standing still for the start of the race.
MOVING_COMMAND_MPS = 1e-3
MAX_PHYSICS_TICKS_PER_FRAME = 100


class Status(str, enum.Enum):
    """Where the race is. FINISHED, TIME_LIMIT and FAILED are final."""

    READY = 'ready'            # waiting for the first command that moves the car
    RACING = 'racing'
    FINISHED = 'finished'      # the requested laps are done
    TIME_LIMIT = 'time_limit'  # sim time ran out before the laps were done
    FAILED = 'failed'          # the reward function failed (see SessionState.error)

    @property
    def final(self) -> bool:
        return self in (Status.FINISHED, Status.TIME_LIMIT, Status.FAILED)


@dataclass(frozen=True)
class SessionConfig:
    """Rates and stop conditions.

    camera_fps: control steps per second of sim time (one camera frame each).
    physics_rate: physics ticks per second; a whole multiple of camera_fps (the dynamics
        integrate the actuator lags exactly inside any tick, so a higher rate only makes
        the clock and pose finer-grained).
    laps: laps to finish the race, 0 = race on forever.
    time_limit_s: sim seconds of racing before giving up, 0 = no limit.
    """

    camera_fps: float = spec.CAMERA.fps
    physics_rate: float = spec.CAMERA.fps
    laps: int = 0
    time_limit_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.camera_fps) and 0.0 < self.camera_fps <= 1000.0):
            raise ValueError(f'camera_fps must be in (0, 1000], got {self.camera_fps}')
        ratio = self.physics_rate / self.camera_fps if math.isfinite(self.physics_rate) else 0
        if not (ratio >= 1.0 - 1e-9 and abs(ratio - round(ratio)) < 1e-6
                and round(ratio) <= MAX_PHYSICS_TICKS_PER_FRAME):
            raise ValueError(f'physics_rate must be a whole multiple (1 to '
                             f'{MAX_PHYSICS_TICKS_PER_FRAME}) of camera_fps '
                             f'{self.camera_fps:g}, got {self.physics_rate}')
        if isinstance(self.laps, bool) or not isinstance(self.laps, int) or self.laps < 0:
            raise ValueError(f'laps must be an integer >= 0, got {self.laps!r}')
        if not (math.isfinite(self.time_limit_s) and self.time_limit_s >= 0.0):
            raise ValueError(f'time_limit_s must be >= 0, got {self.time_limit_s}')

    @property
    def frame_period_ns(self) -> int:
        return round(NS_PER_S / self.camera_fps)

    @property
    def ticks_per_frame(self) -> int:
        return round(self.physics_rate / self.camera_fps)


@dataclass(frozen=True)
class StepRecord:
    """One control step: where the car was, what it was told, what the rules said.

    time_s: sim time. x, y, yaw: base_link pose (after an off-track reset, the pose the
    car LEFT the track at, so the driven line shows the excursion). speed_mps,
    steering_rad: actual (lagged) values. speed_cmd_mps, steering_cmd_rad: the command
    in force. lap: laps completed before this step. reward: None without a function.
    """

    time_s: float
    x: float
    y: float
    yaw: float
    speed_mps: float
    steering_rad: float
    speed_cmd_mps: float
    steering_cmd_rad: float
    progress: float
    lap: int
    all_wheels_on_track: bool
    is_offtrack: bool
    lap_time_s: float | None
    reward: float | None


@dataclass(frozen=True)
class SessionState:
    """A snapshot for publishing, progress bars and results (JSON-ready by as_dict)."""

    status: Status
    time_s: float
    race_time_s: float
    laps_target: int
    laps_completed: int
    progress: float
    lap_times_s: tuple[float, ...]
    off_track_count: int
    steps: int
    x: float
    y: float
    yaw: float
    speed_mps: float
    steering_rad: float
    reward: float | None
    error: str | None

    @property
    def completion(self) -> float:
        """Percent of the race done: laps plus the current lap's progress over the target."""
        if self.laps_target <= 0:
            return 0.0
        return min(100.0, (self.laps_completed * 100.0 + self.progress) / self.laps_target)

    def as_dict(self) -> dict[str, Any]:
        return {'status': self.status.value, 'time_s': self.time_s,
                'race_time_s': self.race_time_s, 'laps_target': self.laps_target,
                'laps_completed': self.laps_completed,
                'lap': self.laps_completed + (0 if self.status.final else 1),
                'progress': self.progress, 'completion': self.completion,
                'lap_times_s': list(self.lap_times_s), 'off_track_count': self.off_track_count,
                'steps': self.steps, 'x': self.x, 'y': self.y, 'yaw': self.yaw,
                'speed_mps': self.speed_mps, 'steering_rad': self.steering_rad,
                'reward': self.reward, 'error': self.error}


class RaceSession:
    """The car on a track under race rules, stepped one control period at a time.

    Use: set_command(speed, steering) whenever a command arrives; tick() runs one
    physics tick (and the rules at the end of each control period), advance() runs the
    ticks to the next control step; state() for a snapshot.
    """

    def __init__(self, track: Track, race_config: RaceConfig = RaceConfig(),
                 config: SessionConfig = SessionConfig(),
                 reward_function: RewardFunction | None = None,
                 car: spec.CarGeometry = spec.CAR) -> None:
        self.config = config
        self.car_geometry = car
        self.race = Race(track, race_config, car)
        self.reward_function = reward_function
        self._frame_ns = config.frame_period_ns
        self._ticks = config.ticks_per_frame
        self.frame_index = 0
        self.time_ns = self._frame_ns
        self._frame_start_ns = self.time_ns
        self._tick_in_frame = 0
        self.last_record: StepRecord | None = None
        self.status = Status.READY
        self.error: str | None = None
        self._race_start_ns = self.time_ns
        self._command = (0.0, 0.0)
        self._reward: float | None = None
        self.observers: list[Callable[[StepRecord], None]] = []
        start = self.race.start_pose()
        self.car = dynamics.CarState(x=start.x, y=start.y, yaw=start.yaw)

    @property
    def track(self) -> Track:
        """The track as driven (reversed when the race runs the other way)."""
        return self.race.track

    @property
    def time_s(self) -> float:
        return self.time_ns / NS_PER_S

    @property
    def command(self) -> tuple[float, float]:
        """The (speed m/s, steering rad) command in force."""
        return self._command

    def set_command(self, speed_mps: float, steering_rad: float) -> None:
        """The newest command; non-finite values are refused with ValueError."""
        self._command = dynamics.clamp_command(speed_mps, steering_rad, self.car_geometry)

    @property
    def tick_period_ns(self) -> int:
        """Nominal length of one physics tick (ticks land exactly on the frame grid)."""
        return self._frame_ns // self._ticks

    def tick(self) -> bool:
        """One physics tick under the command in force. Returns True when the tick ended a
        control period: the race rules were applied and a camera frame is due (the step's
        record is then in last_record, None while READY). Does nothing once final."""
        if self.status.final:
            return False
        if (self._tick_in_frame == 0 and self.status is Status.READY
                and abs(self._command[0]) > MOVING_COMMAND_MPS):
            self._start_race()
        self._tick_in_frame += 1
        next_ns = self._frame_start_ns + self._frame_ns * self._tick_in_frame // self._ticks
        self.car = dynamics.step(self.car, *self._command, (next_ns - self.time_ns) / NS_PER_S,
                                 self.car_geometry)
        self.time_ns = next_ns
        if self._tick_in_frame < self._ticks:
            return False
        self._tick_in_frame = 0
        self._frame_start_ns = next_ns
        self.frame_index += 1
        self.last_record = None if self.status is Status.READY else self._apply_rules()
        return True

    def advance(self) -> StepRecord | None:
        """Tick to the end of the current control period; its record (None while READY
        or once final)."""
        for _ in range(self._ticks):
            if self.tick():
                return self.last_record
        return None

    def restart(self) -> None:
        """Back to the start line and READY, for a new race; the clock runs on (sim time
        never goes back, so every node's timers stay valid)."""
        self.status = Status.READY
        self.error = None
        self._reward = None
        self.last_record = None
        self.race.reset(self.time_s)
        start = self.race.start_pose()
        self.car = dynamics.CarState(x=start.x, y=start.y, yaw=start.yaw)

    def _start_race(self) -> None:
        self.status = Status.RACING
        self._race_start_ns = self.time_ns
        self.race.reset(self.time_s)
        start = self.race.start_pose()
        self.car = dynamics.CarState(x=start.x, y=start.y, yaw=start.yaw,
                                     speed=self.car.speed, steering=self.car.steering)

    def _apply_rules(self) -> StepRecord:
        car = self.car
        update = self.race.update(self.time_s, car.x, car.y, car.yaw)
        self._reward = None
        if self.reward_function is not None:
            params = self.race.reward_params(*self._command)
            try:
                self._reward = self.reward_function(params)
            except RewardFunctionError as error:
                self.status = Status.FAILED
                self.error = error.report()
        record = StepRecord(
            time_s=self.time_s, x=car.x, y=car.y, yaw=car.yaw, speed_mps=car.speed,
            steering_rad=car.steering, speed_cmd_mps=self._command[0],
            steering_cmd_rad=self._command[1], progress=update.progress,
            lap=self.race.laps_completed, all_wheels_on_track=update.all_wheels_on_track,
            is_offtrack=update.is_offtrack, lap_time_s=update.lap_time_s, reward=self._reward)
        if update.reset_pose is not None:
            pose = update.reset_pose
            self.car = dynamics.CarState(x=pose.x, y=pose.y, yaw=pose.yaw)
        if self.status is Status.RACING:
            if self.config.laps and self.race.laps_completed >= self.config.laps:
                self.status = Status.FINISHED
            elif self.config.time_limit_s and self.race_time_s >= self.config.time_limit_s:
                self.status = Status.TIME_LIMIT
        for observer in self.observers:
            observer(record)
        return record

    @property
    def race_time_s(self) -> float:
        """Sim seconds since the green light (0 while READY)."""
        if self.status is Status.READY:
            return 0.0
        return (self.time_ns - self._race_start_ns) / NS_PER_S

    def reward_params(self) -> dict[str, Any]:
        """DeepRacer's reward params for the latest step and the command in force."""
        return self.race.reward_params(*self._command)

    def state(self) -> SessionState:
        car, race = self.car, self.race
        return SessionState(
            status=self.status, time_s=self.time_s, race_time_s=self.race_time_s,
            laps_target=self.config.laps, laps_completed=race.laps_completed,
            progress=race.progress, lap_times_s=tuple(race.lap_times_s),
            off_track_count=race.off_track_count, steps=race.steps, x=car.x, y=car.y,
            yaw=car.yaw, speed_mps=car.speed, steering_rad=car.steering,
            reward=self._reward, error=self.error)
