"""Drive commands (speed in m/s, steering angle in rad) <-> throttle / steering ratios.

The speed -> throttle curve is DeepRacer's: throttle = scale * clamp(a*v^2 + b*v, -1, 1)
with a = -1.2 / vmax^2 and b = 2.2 / vmax, made sign-symmetric for reverse. vmax is
the calibration's max_speed_mps (a property of the car), so a speed means the same
throttle whatever the action space of the model asking for it.

The parabola reaches 1 at v = 5/6 vmax and the clamp holds it there, so full
throttle covers [5/6 vmax, vmax]; the inverse (throttle -> speed, for the
simulated car) therefore tops out at 5/6 vmax.

Every function sanitises its input: NaN or inf gives neutral (0), huge values are clamped.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from deepracer_nodes.core import spec
from deepracer_nodes.core.calibration import Calibration
from deepracer_nodes.core.pwm import PwmBackend

# Below this forward speed the steering angle of a Twist is undefined (a car cannot
# turn on the spot), so it is taken as straight ahead.
MIN_SPEED_FOR_STEERING_MPS = 1e-3
_CURVE_A = -1.2
_CURVE_B = 2.2
# Where the unclamped curve a*x^2 + b*x reaches 1 first (x = v / vmax).
SATURATION_FRACTION = 5.0 / 6.0


def finite_or_zero(value: float) -> float:
    """value as a float, or 0.0 when it is NaN, inf or not a number at all."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def clamp_unit(value: float) -> float:
    """Clamp into [-1, 1]; non-finite gives 0."""
    return min(max(finite_or_zero(value), -1.0), 1.0)


def throttle_from_speed(speed_mps: float, max_speed_mps: float, scale: float = 1.0) -> float:
    """Throttle ratio in [-1, 1] for a signed speed, DeepRacer's curve times the scale."""
    vmax = finite_or_zero(max_speed_mps)
    if vmax <= 0.0:
        return 0.0
    scale = min(max(finite_or_zero(scale), 0.0), 1.0)
    speed = finite_or_zero(speed_mps)
    # Beyond vmax the parabola falls again: clamp first so faster never means less throttle.
    fraction = min(abs(speed) / vmax, 1.0)
    magnitude = min(_CURVE_A * fraction * fraction + _CURVE_B * fraction, 1.0)
    return math.copysign(scale * magnitude, speed) if magnitude > 0.0 else 0.0


def speed_from_throttle(throttle: float, max_speed_mps: float, scale: float = 1.0) -> float:
    """Inverse of throttle_from_speed on [0, 5/6 vmax] (full throttle gives 5/6 vmax)."""
    vmax = finite_or_zero(max_speed_mps)
    scale = min(max(finite_or_zero(scale), 0.0), 1.0)
    if vmax <= 0.0 or scale == 0.0:
        return 0.0
    throttle = clamp_unit(throttle)
    curve = min(abs(throttle) / scale, 1.0)
    # Smaller root of a*x^2 + b*x = curve (the rising branch of the parabola).
    discriminant = max(_CURVE_B * _CURVE_B + 4.0 * _CURVE_A * curve, 0.0)
    fraction = (-_CURVE_B + math.sqrt(discriminant)) / (2.0 * _CURVE_A)
    return math.copysign(fraction * vmax, throttle) if fraction > 0.0 else 0.0


def steering_ratio(steering_angle_rad: float,
                   max_steering_rad: float = spec.CAR.max_steering_rad) -> float:
    """Steering ratio in [-1, 1] (positive = left) for an angle; non-finite gives 0."""
    limit = finite_or_zero(max_steering_rad)
    if limit <= 0.0:
        return 0.0
    return clamp_unit(finite_or_zero(steering_angle_rad) / limit)


def steering_angle_from_ratio(ratio: float,
                              max_steering_rad: float = spec.CAR.max_steering_rad) -> float:
    """Inverse of steering_ratio."""
    return clamp_unit(ratio) * finite_or_zero(max_steering_rad)


def twist_to_drive(linear_x: float, angular_z: float,
                   wheelbase_m: float = spec.CAR.wheelbase_m) -> tuple[float, float]:
    """(speed m/s, steering angle rad) from a Twist, Ackermann bicycle model.

    steering = atan(angular_z * wheelbase / linear_x); undefined at (near) zero
    speed, where it is taken as 0. The angle is not clamped here (ratios are).
    """
    speed = finite_or_zero(linear_x)
    yaw_rate = finite_or_zero(angular_z)
    wheelbase = finite_or_zero(wheelbase_m)
    if abs(speed) < MIN_SPEED_FOR_STEERING_MPS or wheelbase <= 0.0:
        return speed, 0.0
    return speed, finite_or_zero(math.atan(yaw_rate * wheelbase / speed))


def drive_to_twist(speed_mps: float, steering_angle_rad: float,
                   wheelbase_m: float = spec.CAR.wheelbase_m) -> tuple[float, float]:
    """(linear_x, angular_z) for a speed and steering angle: angular_z = v tan(delta) / L."""
    speed = finite_or_zero(speed_mps)
    angle = finite_or_zero(steering_angle_rad)
    wheelbase = finite_or_zero(wheelbase_m)
    if wheelbase <= 0.0 or abs(angle) >= math.pi / 2.0:
        return speed, 0.0
    return speed, finite_or_zero(speed * math.tan(angle) / wheelbase)


@dataclass(frozen=True)
class Duties:
    """Duty cycles in ns for the two drive channels."""

    throttle_ns: int
    steering_ns: int


def neutral_duties(calibration: Calibration) -> Duties:
    return Duties(calibration.throttle.neutral_ns, calibration.steering.neutral_ns)


def drive_to_duties(speed_mps: float, steering_angle_rad: float,
                    calibration: Calibration) -> Duties:
    """Duty cycles for a drive command through the calibration and the speed curve."""
    throttle = throttle_from_speed(speed_mps, calibration.max_speed_mps,
                                   calibration.max_speed_scale)
    steering = steering_ratio(steering_angle_rad)
    return Duties(calibration.throttle.duty_ns(throttle), calibration.steering.duty_ns(steering))


def duties_to_drive(duties: Duties, calibration: Calibration) -> tuple[float, float]:
    """(speed m/s, steering angle rad) that a car would follow for these duty cycles.

    The car's speed depends on the throttle alone (the curve with vmax, scale 1): a
    max_speed_scale below 1 lowers the throttle, so the car, simulated too, goes slower.
    """
    throttle = calibration.throttle.ratio_from_duty(duties.throttle_ns)
    steering = calibration.steering.ratio_from_duty(duties.steering_ns)
    speed = speed_from_throttle(throttle, calibration.max_speed_mps)
    return speed, steering_angle_from_ratio(steering)


class DriveOutputs:
    """The throttle and steering channels of a PWM backend, seen through a calibration.

    Every duty cycle goes through the calibration's clamp just before it is
    written, so nothing outside [min, max] of the current calibration reaches the
    backend, whatever the caller passes. Thread-safe: the node's command callbacks
    and its watchdog run on different threads.
    """

    def __init__(self, backend: PwmBackend, calibration: Calibration,
                 throttle_channel: int = spec.PWM.throttle_channel,
                 steering_channel: int = spec.PWM.steering_channel) -> None:
        self.backend = backend
        self.throttle_channel = throttle_channel
        self.steering_channel = steering_channel
        self._calibration = calibration
        self.lock = threading.RLock()

    @property
    def calibration(self) -> Calibration:
        return self._calibration

    @property
    def duties(self) -> Duties | None:
        """The duty cycles last written, None before both channels were written."""
        throttle = self.backend.last_duty(self.throttle_channel)
        steering = self.backend.last_duty(self.steering_channel)
        if throttle is None or steering is None:
            return None
        return Duties(throttle, steering)

    def drive(self, speed_mps: float, steering_angle_rad: float) -> bool:
        """Write the duty cycles for a drive command; True if any channel changed."""
        with self.lock:
            return self.write(drive_to_duties(speed_mps, steering_angle_rad, self._calibration))

    def drive_ratios(self, throttle_ratio: float, steering_ratio_: float) -> bool:
        """Raw ratios in [-1, 1], bypassing the speed curve and the max-speed scale."""
        with self.lock:
            calibration = self._calibration
            return self.write(Duties(calibration.throttle.duty_ns(throttle_ratio),
                                     calibration.steering.duty_ns(steering_ratio_)))

    def neutral(self) -> bool:
        """Throttle at neutral, steering centred."""
        with self.lock:
            return self.write(neutral_duties(self._calibration))

    def write(self, duties: Duties) -> bool:
        """Write duty cycles, each clamped into the current calibration's range."""
        with self.lock:
            calibration = self._calibration
            # Throttle first: a stop must never wait behind the steering write.
            changed = self.backend.write(self.throttle_channel,
                                         calibration.throttle.clamp_ns(duties.throttle_ns))
            changed |= self.backend.write(self.steering_channel,
                                          calibration.steering.clamp_ns(duties.steering_ns))
            return changed

    def set_calibration(self, calibration: Calibration) -> bool:
        """Switch calibration; the duty cycles held are clamped into its range at once.

        Returns True if that changed an output. The caller decides whether the car
        should go to neutral under the new calibration.
        """
        with self.lock:
            self._calibration = calibration
            return self.write(self.duties or neutral_duties(calibration))

    def ratios(self) -> tuple[float, float] | None:
        """(throttle, steering) ratios of the duty cycles last written."""
        duties = self.duties
        if duties is None:
            return None
        return (self._calibration.throttle.ratio_from_duty(duties.throttle_ns),
                self._calibration.steering.ratio_from_duty(duties.steering_ns))


# --- calibration mode: raw ratios or raw duty cycles, bypassing the speed curve -----------

CALIBRATION_MODES = ('off', 'ratio', 'ns')


@dataclass(frozen=True)
class RawTarget:
    """What calibration mode drives: ratios in [-1, 1] or duty cycles in ns."""

    mode: str
    throttle: float
    steering: float


def raw_target(mode: str, throttle: float, steering: float,
               calibration: Calibration) -> RawTarget | None:
    """A validated calibration-mode target (None for 'off'); ValueError says what is wrong.

    Raw duty cycles must lie inside the calibrated range: to explore beyond it, widen
    the range first (in the same atomic change), so no duty cycle outside the
    calibration is ever written.
    """
    if mode not in CALIBRATION_MODES:
        raise ValueError(f'calibration_mode must be one of {CALIBRATION_MODES}, got {mode!r}')
    if mode == 'off':
        return None
    values = {'throttle': throttle, 'steering': steering}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f'calibration_{name} must be a finite number, got {value!r}')
        if mode == 'ratio' and not -1.0 <= value <= 1.0:
            raise ValueError(f'calibration_{name} must be a ratio in [-1, 1], got {value}')
        if mode == 'ns':
            channel = getattr(calibration, name)
            if not channel.min_ns <= value <= channel.max_ns:
                raise ValueError(
                    f'calibration_{name} {value:.0f} ns is outside the {name} range '
                    f'[{channel.min_ns}, {channel.max_ns}] ns: widen the range first')
    return RawTarget(mode, float(throttle), float(steering))


def raw_target_duties(target: RawTarget, calibration: Calibration) -> Duties:
    """Duty cycles for a calibration-mode target (clamped again when written)."""
    if target.mode == 'ratio':
        return Duties(calibration.throttle.duty_ns(target.throttle),
                      calibration.steering.duty_ns(target.steering))
    return Duties(calibration.throttle.clamp_ns(target.throttle),
                  calibration.steering.clamp_ns(target.steering))
