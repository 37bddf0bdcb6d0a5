"""Kinematic bicycle model of the DeepRacer car with first-order actuator lags.

The pose is the REP 105 base_link: the rear axle centre on the ground, yaw positive
anticlockwise. Commands are a speed (m/s) and a front wheel steering angle (rad,
positive left); the car reaches each through a first-order lag (spec.CAR time
constants) so a policy trained here cannot count on instant response.

Integration: the lags are solved exactly (exponential decay towards the command); the
pose moves along a circular arc per substep, with the exact distance travelled and the
heading change integrated by Simpson's rule. Once the steering has settled the arcs are exact, so
a constant steering angle drives a circle of radius wheelbase / tan(steering) for any dt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepracer_nodes.core import spec

# Substeps are at most this fraction of the faster actuator time constant.
SUBSTEP_FRACTION_OF_LAG = 0.25
MAX_STEP_S = 1.0


@dataclass(frozen=True)
class CarState:
    """Pose and actuator states of the car.

    x, y: base_link position in the world (odom) frame, metres.
    yaw: heading, radians in (-pi, pi], 0 along +x, positive anticlockwise.
    speed: rear axle speed along the heading, m/s (negative when reversing).
    steering: front wheel angle, radians, positive left.
    """

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    speed: float = 0.0
    steering: float = 0.0

    @property
    def yaw_rate(self) -> float:
        """Current yaw rate (rad/s), from the bicycle model at the default car geometry."""
        return yaw_rate(self.speed, self.steering)


def yaw_rate(speed_mps: float, steering_rad: float,
             car: spec.CarGeometry = spec.CAR) -> float:
    """Bicycle model yaw rate v tan(delta) / L, rad/s."""
    return speed_mps * math.tan(steering_rad) / car.wheelbase_m


def turning_radius(steering_rad: float, car: spec.CarGeometry = spec.CAR) -> float:
    """Radius (m) of the circle the rear axle drives at a steering angle; inf when straight."""
    tangent = math.tan(abs(steering_rad))
    return math.inf if tangent == 0.0 else car.wheelbase_m / tangent


def clamp_command(speed_mps: float, steering_rad: float,
                  car: spec.CarGeometry = spec.CAR) -> tuple[float, float]:
    """Commands limited to what the car can do; ValueError when not finite."""
    if not (math.isfinite(speed_mps) and math.isfinite(steering_rad)):
        raise ValueError(f'command must be finite, got speed {speed_mps} m/s, '
                         f'steering {steering_rad} rad')
    speed = min(max(speed_mps, -car.max_speed_mps), car.max_speed_mps)
    steering = min(max(steering_rad, -car.max_steering_rad), car.max_steering_rad)
    return speed, steering


def step(state: CarState, speed_command: float, steering_command: float, dt: float,
         car: spec.CarGeometry = spec.CAR) -> CarState:
    """Advance the car by dt seconds (0 < dt <= 1) under a constant command.

    speed_command (m/s) and steering_command (rad, positive left) are clamped to the
    car's limits. Returns the new state; the input state is not changed.
    """
    if not (math.isfinite(dt) and 0.0 < dt <= MAX_STEP_S):
        raise ValueError(f'time step must be in (0, {MAX_STEP_S}] s, got {dt}')
    speed_target, steering_target = clamp_command(speed_command, steering_command, car)
    fastest_lag = min(car.speed_time_constant_s, car.steering_time_constant_s)
    substeps = 1 if fastest_lag <= 0.0 else math.ceil(
        dt / (SUBSTEP_FRACTION_OF_LAG * fastest_lag) - 1e-9)
    h = dt / substeps
    x, y, yaw = state.x, state.y, state.yaw
    speed, steering = state.speed, state.steering
    for _ in range(substeps):
        # Speed and steering at the start, middle and end of the substep (exact lags).
        speed_mid = _lagged(speed, speed_target, car.speed_time_constant_s, h / 2.0)
        speed_end = _lagged(speed, speed_target, car.speed_time_constant_s, h)
        steering_mid = _lagged(steering, steering_target, car.steering_time_constant_s, h / 2.0)
        steering_end = _lagged(steering, steering_target, car.steering_time_constant_s, h)
        distance = _lagged_integral(speed, speed_target, car.speed_time_constant_s, h)
        # Heading change = integral of v * tan(delta) / L, by Simpson's rule; exact once
        # the steering has settled (constant curvature).
        turn = h / 6.0 * (speed * math.tan(steering) + 4.0 * speed_mid * math.tan(steering_mid)
                          + speed_end * math.tan(steering_end)) / car.wheelbase_m
        x, y, yaw = _arc(x, y, yaw, distance, turn)
        speed, steering = speed_end, steering_end
    return CarState(x=x, y=y, yaw=_wrap(yaw), speed=speed, steering=steering)


def _lagged(value: float, target: float, time_constant: float, h: float) -> float:
    """A first-order lag's value after h seconds."""
    if time_constant <= 0.0:
        return target
    return target + (value - target) * math.exp(-h / time_constant)


def _lagged_integral(value: float, target: float, time_constant: float, h: float) -> float:
    """Integral of a first-order lag's value over h seconds."""
    if time_constant <= 0.0:
        return target * h
    return target * h + (value - target) * time_constant * (1.0 - math.exp(-h / time_constant))


def _arc(x: float, y: float, yaw: float, distance: float,
         turn: float) -> tuple[float, float, float]:
    """Pose after driving `distance` along a circular arc turning the heading by `turn`."""
    if abs(turn) < 1e-9:  # (nearly) straight: the chord formula below would divide by ~0
        mid = yaw + turn / 2.0
        return x + distance * math.cos(mid), y + distance * math.sin(mid), yaw + turn
    radius = distance / turn
    return (x + radius * (math.sin(yaw + turn) - math.sin(yaw)),
            y - radius * (math.cos(yaw + turn) - math.cos(yaw)),
            yaw + turn)


def _wrap(angle: float) -> float:
    """Angle wrapped to (-pi, pi]."""
    wrapped = math.remainder(angle, 2.0 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped
