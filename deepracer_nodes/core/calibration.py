"""Servo and ESC calibration: ratios in [-1, 1] <-> PWM duty cycles in nanoseconds.

DeepRacer semantics (REFERENCE.md): each channel has min < mid < max duty cycles
and a polarity of +1 or -1; a ratio x maps to adj = x * polarity, then
duty = mid + adj * (mid - min) below zero and mid + adj * (max - mid) above.
"Servo" in DeepRacer's calibration.json is the steering, "Motor" the ESC.

The speed curve's settings (max_speed_mps, max_speed_scale) belong to the
calibration too; they are stored under a key of our own that DeepRacer's
software ignores, so the file stays readable by the official device.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deepracer_nodes.core import spec
from deepracer_nodes.core.json_input import JsonInputError, parse_json

# Our own key in calibration.json, beside DeepRacer's "Calibration".
EXTRA_KEY = 'deepracer_nodes'
DEEPRACER_VERSION = 1
# DeepRacer's names of the two channels in calibration.json.
STEERING_KEY = 'Servo'
THROTTLE_KEY = 'Motor'


class CalibrationError(ValueError):
    """A calibration that must not reach the PWM, with the exact reason."""


def _require_int(name: str, value: Any) -> int:
    # bool is an int subclass; True as a duty cycle is a bug, never a value.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CalibrationError(f'{name} must be an integer, got {value!r}')
    return value


@dataclass(frozen=True)
class ChannelCalibration:
    """One PWM channel: duty cycles in ns for ratio -1 / 0 / +1 (before polarity)."""

    min_ns: int
    mid_ns: int
    max_ns: int
    polarity: int = 1
    period_ns: int = field(default=spec.PWM.period_ns, compare=False)

    def __post_init__(self) -> None:
        for name in ('min_ns', 'mid_ns', 'max_ns', 'polarity', 'period_ns'):
            _require_int(name, getattr(self, name))
        if self.polarity not in (1, -1):
            raise CalibrationError(f'polarity must be 1 or -1, got {self.polarity}')
        if self.period_ns <= 0:
            raise CalibrationError(f'period_ns must be positive, got {self.period_ns}')
        for name in ('min_ns', 'mid_ns', 'max_ns'):
            value = getattr(self, name)
            if not 0 < value < self.period_ns:
                raise CalibrationError(
                    f'{name} must be inside (0, {self.period_ns}) ns, got {value}')
        if not self.min_ns < self.mid_ns:
            raise CalibrationError(
                f'min_ns ({self.min_ns}) must be less than mid_ns ({self.mid_ns})')
        if not self.mid_ns < self.max_ns:
            raise CalibrationError(
                f'mid_ns ({self.mid_ns}) must be less than max_ns ({self.max_ns})')

    @property
    def neutral_ns(self) -> int:
        return self.mid_ns

    def clamp_ns(self, duty_ns: float) -> int:
        """The nearest duty cycle inside [min_ns, max_ns]; non-finite -> mid (neutral)."""
        if not math.isfinite(duty_ns):
            return self.mid_ns
        return int(min(max(round(duty_ns), self.min_ns), self.max_ns))

    def duty_ns(self, ratio: float) -> int:
        """Duty cycle for a ratio in [-1, 1]; outside is clamped, NaN/inf gives neutral."""
        try:
            ratio = float(ratio)
        except (TypeError, ValueError):
            return self.mid_ns
        if not math.isfinite(ratio):
            return self.mid_ns
        adjusted = min(max(ratio, -1.0), 1.0) * self.polarity
        if adjusted < 0.0:
            duty = self.mid_ns + adjusted * (self.mid_ns - self.min_ns)
        else:
            duty = self.mid_ns + adjusted * (self.max_ns - self.mid_ns)
        # Last line of defence: whatever happened above, stay inside the calibrated range.
        return self.clamp_ns(duty)

    def ratio_from_duty(self, duty_ns: float) -> float:
        """Inverse of duty_ns (used by the simulated backend); clamped to [-1, 1]."""
        if not math.isfinite(duty_ns):
            return 0.0
        if duty_ns < self.mid_ns:
            adjusted = (duty_ns - self.mid_ns) / (self.mid_ns - self.min_ns)
        else:
            adjusted = (duty_ns - self.mid_ns) / (self.max_ns - self.mid_ns)
        return min(max(adjusted * self.polarity, -1.0), 1.0)

    def to_deepracer(self) -> dict[str, int]:
        """The channel as DeepRacer's calibration.json writes it."""
        return {'max': self.max_ns, 'mid': self.mid_ns, 'min': self.min_ns,
                'polarity': self.polarity}


# Factory defaults of the DeepRacer car (REFERENCE.md).
FACTORY_STEERING = ChannelCalibration(min_ns=1_200_000, mid_ns=1_450_000, max_ns=1_700_000,
                                      polarity=1)
FACTORY_THROTTLE = ChannelCalibration(min_ns=1_311_000, mid_ns=1_446_000, max_ns=1_603_500,
                                      polarity=-1)


@dataclass(frozen=True)
class Calibration:
    """Both channels plus the speed curve's settings.

    max_speed_mps is a property of the car (the speed asked for at full
    throttle), so a policy's speed in m/s means the same throttle whatever its
    action space; max_speed_scale in [0, 1] is the "max speed %" of DeepRacer's
    console.
    """

    steering: ChannelCalibration = FACTORY_STEERING
    throttle: ChannelCalibration = FACTORY_THROTTLE
    max_speed_mps: float = spec.CAR.max_speed_mps
    max_speed_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.steering, ChannelCalibration):
            raise CalibrationError('steering must be a ChannelCalibration')
        if not isinstance(self.throttle, ChannelCalibration):
            raise CalibrationError('throttle must be a ChannelCalibration')
        speed = _as_float('max_speed_mps', self.max_speed_mps)
        if not (math.isfinite(speed) and speed > 0.0):
            raise CalibrationError(f'max_speed_mps must be a positive number, got {speed}')
        scale = _as_float('max_speed_scale', self.max_speed_scale)
        if not (math.isfinite(scale) and 0.0 <= scale <= 1.0):
            raise CalibrationError(f'max_speed_scale must be in [0, 1], got {scale}')
        object.__setattr__(self, 'max_speed_mps', speed)
        object.__setattr__(self, 'max_speed_scale', scale)

    def with_changes(self, **changes: Any) -> Calibration:
        """A validated copy; raises CalibrationError like the constructor."""
        return replace(self, **changes)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalibrationError(f'{name} must be a number, got {value!r}')
    return float(value)


FACTORY_CALIBRATION = Calibration()


# --- DeepRacer's calibration.json ---------------------------------------------------------

def to_json_dict(calibration: Calibration) -> dict[str, Any]:
    """calibration.json content: DeepRacer's part exactly as the device writes it, plus ours."""
    return {
        'Calibration': {
            STEERING_KEY: calibration.steering.to_deepracer(),
            THROTTLE_KEY: calibration.throttle.to_deepracer(),
            'version': DEEPRACER_VERSION,
        },
        EXTRA_KEY: {
            'max_speed_mps': calibration.max_speed_mps,
            'max_speed_scale': calibration.max_speed_scale,
        },
    }


def _channel_from_json(section: Any, key: str, label: str) -> ChannelCalibration:
    where = f'Calibration.{key}'
    if not isinstance(section, dict) or key not in section:
        raise CalibrationError(f'missing "{where}" ({label})')
    channel = section[key]
    if not isinstance(channel, dict):
        raise CalibrationError(f'"{where}" ({label}) must be an object, got {channel!r}')
    values = {}
    for json_name in ('min', 'mid', 'max', 'polarity'):
        if json_name not in channel:
            raise CalibrationError(f'missing "{where}.{json_name}" ({label})')
        value = channel[json_name]
        # DeepRacer writes integers; accept 1450000.0 as well, but never 1450000.5.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        values[json_name] = value
    try:
        return ChannelCalibration(min_ns=values['min'], mid_ns=values['mid'],
                                  max_ns=values['max'], polarity=values['polarity'])
    except CalibrationError as error:
        raise CalibrationError(f'"{where}" ({label}): {error}') from None


def from_json_dict(content: Any) -> Calibration:
    """Parse calibration.json content (DeepRacer's, with or without our extra key)."""
    if not isinstance(content, dict):
        raise CalibrationError('top level must be a JSON object')
    section = content.get('Calibration')
    if section is None:
        raise CalibrationError('missing "Calibration"')
    steering = _channel_from_json(section, STEERING_KEY, 'steering')
    throttle = _channel_from_json(section, THROTTLE_KEY, 'throttle')
    extra = content.get(EXTRA_KEY, {})
    if not isinstance(extra, dict):
        raise CalibrationError(f'"{EXTRA_KEY}" must be an object, got {extra!r}')
    speed_settings = {name: extra[name] for name in ('max_speed_mps', 'max_speed_scale')
                      if name in extra}
    try:
        return Calibration(steering=steering, throttle=throttle, **speed_settings)
    except CalibrationError as error:
        raise CalibrationError(f'"{EXTRA_KEY}": {error}') from None


def parse_calibration(text: str) -> Calibration:
    """Parse calibration.json text; CalibrationError says what is wrong."""
    try:
        content = parse_json(text)
    except JsonInputError as error:
        raise CalibrationError(str(error)) from None
    return from_json_dict(content)


def dumps_calibration(calibration: Calibration) -> str:
    return json.dumps(to_json_dict(calibration), indent=4) + '\n'


@dataclass(frozen=True)
class LoadedCalibration:
    """A calibration and where it came from, for logs and diagnostics."""

    calibration: Calibration
    path: str
    factory_defaults: bool
    message: str


def load_calibration(path: str | os.PathLike[str]) -> LoadedCalibration:
    """Read calibration.json: a missing file gives the factory defaults (and says so).

    Anything else that is wrong (unreadable, not JSON, missing or invalid
    values) raises CalibrationError naming the file and the exact problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        return LoadedCalibration(FACTORY_CALIBRATION, str(path), True,
                                 f'{path} not found: using the factory defaults')
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrationError(f'{path}: cannot be read: {error}') from None
    try:
        calibration = parse_calibration(text)
    except CalibrationError as error:
        raise CalibrationError(f'{path}: {error}') from None
    return LoadedCalibration(calibration, str(path), False, f'loaded from {path}')


def save_calibration(path: str | os.PathLike[str], calibration: Calibration) -> None:
    """Write calibration.json atomically: a crash leaves the old file or the new, never half.

    Raises CalibrationError when the file cannot be written.
    """
    write_text_atomically(path, dumps_calibration(calibration))


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Temporary file in the same folder, flush, fsync, rename over the target.

    Raises CalibrationError when the file cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp',
                                         dir=path.parent)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as temp:
                temp.write(text)
                temp.flush()
                os.fsync(temp.fileno())
            os.chmod(temp_name, 0o644)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)
    except OSError as error:
        raise CalibrationError(f'{path}: cannot be written: {error}') from None


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- flat names (servo node parameters, command line) --------------------------------------

CHANNELS = ('steering', 'throttle')
CHANNEL_FIELDS = ('min_ns', 'mid_ns', 'max_ns', 'polarity')
SPEED_FIELDS = ('max_speed_mps', 'max_speed_scale')
FLAT_NAMES = tuple(f'{c}_{f}' for c in CHANNELS for f in CHANNEL_FIELDS) + SPEED_FIELDS


def to_flat(calibration: Calibration) -> dict[str, int | float]:
    """{'steering_min_ns': ..., 'throttle_polarity': ..., 'max_speed_scale': ...}."""
    flat: dict[str, int | float] = {}
    for channel_name in CHANNELS:
        channel = getattr(calibration, channel_name)
        for field_name in CHANNEL_FIELDS:
            flat[f'{channel_name}_{field_name}'] = getattr(channel, field_name)
    for field_name in SPEED_FIELDS:
        flat[field_name] = getattr(calibration, field_name)
    return flat


def with_flat_changes(calibration: Calibration, changes: dict[str, Any]) -> Calibration:
    """A validated copy with flat-named changes applied all at once.

    CalibrationError names the value at fault, e.g. 'steering: min_ns (1500000) must
    be less than mid_ns (1450000)'.
    """
    unknown = sorted(set(changes) - set(FLAT_NAMES))
    if unknown:
        raise CalibrationError(f'unknown calibration values: {", ".join(unknown)}')
    channels = {}
    for channel_name in CHANNELS:
        channel = getattr(calibration, channel_name)
        fields = {f: changes.get(f'{channel_name}_{f}', getattr(channel, f))
                  for f in CHANNEL_FIELDS}
        try:
            channels[channel_name] = replace(channel, **fields)
        except CalibrationError as error:
            raise CalibrationError(f'{channel_name}: {error}') from None
    speed = {f: changes[f] for f in SPEED_FIELDS if f in changes}
    return replace(calibration, **channels, **speed)
