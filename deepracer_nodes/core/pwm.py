"""PWM outputs behind one small interface: Linux sysfs on the car, a recorder in simulation.

Both implementations keep the last duty cycle per channel, skip writes that change
nothing, and can report each write to an optional observer
``on_write(channel, duty_ns, t_ns)`` (t_ns = time.time_ns() right after the write,
the same clock as ROS system time), which is how an in-process benchmark measures
command -> PWM latency without touching the hardware path.
"""

from __future__ import annotations

import errno
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path

from deepracer_nodes.core import spec

WriteObserver = Callable[[int, int, int], None]
DEFAULT_CHANNELS = (spec.PWM.throttle_channel, spec.PWM.steering_channel)
# How long the kernel may take to create pwmN after an export (only waited for at start-up).
EXPORT_TIMEOUT_S = 1.0
_CHIP_NAME = re.compile(r'^pwmchip(\d+)$')


class PwmError(RuntimeError):
    """The PWM hardware cannot be set up or written; the message says what to fix."""


class PwmBackend(ABC):
    """Duty cycles in ns on numbered channels, enabled together."""

    def __init__(self, channels: Iterable[int], on_write: WriteObserver | None = None) -> None:
        self.channels = tuple(int(c) for c in channels)
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f'channels must be distinct, got {self.channels}')
        self.on_write = on_write
        self._last_duty: dict[int, int] = {}
        self._enabled = False
        self.write_count = 0

    @property
    def enabled(self) -> bool:
        return self._enabled

    def last_duty(self, channel: int) -> int | None:
        """The duty cycle last written to a channel, None before the first write."""
        return self._last_duty.get(channel)

    def write(self, channel: int, duty_ns: int) -> bool:
        """Set a channel's duty cycle; returns False (and writes nothing) when unchanged."""
        self._check_channel(channel)
        duty_ns = int(duty_ns)
        if self._last_duty.get(channel) == duty_ns:
            return False
        self._write_duty(channel, duty_ns)
        self._last_duty[channel] = duty_ns
        self.write_count += 1
        if self.on_write is not None:
            self.on_write(channel, duty_ns, time.time_ns())
        return True

    def enable(self) -> None:
        """Start the pulses on every channel; each must have a duty cycle written first."""
        missing = [c for c in self.channels if c not in self._last_duty]
        if missing:
            raise PwmError(f'write a duty cycle to channels {missing} before enabling them')
        self._set_enabled(True)
        self._enabled = True

    def disable(self) -> None:
        """Stop the pulses on every channel (an ESC without pulses stops)."""
        self._set_enabled(False)
        self._enabled = False

    def close(self) -> None:
        """Release the outputs; the caller writes neutral first."""

    def _check_channel(self, channel: int) -> None:
        if channel not in self.channels:
            raise PwmError(f'channel {channel} is not one of {self.channels}')

    @abstractmethod
    def _write_duty(self, channel: int, duty_ns: int) -> None: ...

    @abstractmethod
    def _set_enabled(self, enabled: bool) -> None: ...


class SimulatedPwm(PwmBackend):
    """Records the duty cycles instead of driving hardware (the simulated car reads them)."""

    def __init__(self, channels: Iterable[int] = DEFAULT_CHANNELS,
                 on_write: WriteObserver | None = None) -> None:
        super().__init__(channels, on_write)

    def _write_duty(self, channel: int, duty_ns: int) -> None:
        pass

    def _set_enabled(self, enabled: bool) -> None:
        pass


def find_pwm_chip(root: str | os.PathLike[str], min_channels: int = 2) -> Path:
    """The first pwmchipN under root (lowest N) with at least min_channels channels."""
    root = Path(root)
    if not root.is_dir():
        raise PwmError(f'{root} does not exist: no PWM support in this kernel '
                       '(or enable the PWM overlay, e.g. a PCA9685 on a Raspberry Pi)')
    chips = sorted((int(m.group(1)), p) for p in root.iterdir()
                   if (m := _CHIP_NAME.match(p.name)))
    seen = []
    for _, chip in chips:
        npwm = SysfsPwm._read_int(chip / 'npwm')
        if npwm is None:
            continue
        seen.append(f'{chip.name} (npwm={npwm})')
        if npwm >= min_channels:
            return chip
    found = ', '.join(seen) if seen else 'none'
    raise PwmError(f'no pwmchip with at least {min_channels} channels under {root}; '
                   f'found: {found}')


class SysfsPwm(PwmBackend):
    """Linux sysfs PWM: /sys/class/pwm/pwmchipN/pwmM/{period,duty_cycle,enable}.

    Set-up (constructor) exports the channels, waits a bounded time for the
    kernel to create them, and sets the period; writes after that never wait.
    """

    def __init__(self, root: str | os.PathLike[str] = spec.PWM.sysfs_root, chip: int = -1,
                 channels: Iterable[int] = DEFAULT_CHANNELS,
                 period_ns: int = spec.PWM.period_ns,
                 on_write: WriteObserver | None = None,
                 export_timeout_s: float = EXPORT_TIMEOUT_S) -> None:
        super().__init__(channels, on_write)
        self.period_ns = int(period_ns)
        if chip < 0:
            self.chip_path = find_pwm_chip(root, min_channels=max(self.channels) + 1)
        else:
            self.chip_path = Path(root) / f'pwmchip{chip}'
            if not self.chip_path.is_dir():
                raise PwmError(f'{self.chip_path} does not exist (pwm_chip={chip}); '
                               'use -1 to take the first chip found')
        self._check_channel_count()
        for channel in self.channels:
            self._export(channel, export_timeout_s)
            self._set_period(channel)
        # duty_cycle stays open: a command costs one pwrite, not an open/write/close.
        self._duty_files: dict[int, int] = {}
        self._duty_lengths: dict[int, int] = {}
        try:
            for channel in self.channels:
                self._duty_files[channel] = self._open_for_writing(
                    self.channel_path(channel) / 'duty_cycle')
        except PwmError:
            self.close()
            raise

    def channel_path(self, channel: int) -> Path:
        return self.chip_path / f'pwm{channel}'

    def _check_channel_count(self) -> None:
        npwm = self._read_int(self.chip_path / 'npwm')
        beyond = [channel for channel in self.channels if npwm is not None and channel >= npwm]
        if beyond:
            raise PwmError(f'{self.chip_path} has {npwm} channels, cannot use channel '
                           f'{", ".join(map(str, beyond))}')

    def _export(self, channel: int, timeout_s: float) -> None:
        channel_dir = self.channel_path(channel)
        if channel_dir.is_dir():
            return
        self._write_file(self.chip_path / 'export', str(channel), ignore_busy=True)
        # The kernel creates pwmN asynchronously (udev then fixes permissions); bounded wait,
        # only here at start-up, never in a command path.
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while not (channel_dir / 'duty_cycle').exists():
            if time.monotonic() >= deadline:
                raise PwmError(f'exported channel {channel} but {channel_dir} did not appear '
                               f'within {timeout_s:.2f} s')
            time.sleep(0.01)

    def _set_period(self, channel: int) -> None:
        channel_dir = self.channel_path(channel)
        current_period = self._read_int(channel_dir / 'period')
        if current_period == self.period_ns:
            return
        # The kernel refuses a period shorter than the duty cycle already set.
        current_duty = self._read_int(channel_dir / 'duty_cycle')
        if current_duty is not None and current_duty > self.period_ns:
            self._write_file(channel_dir / 'duty_cycle', '0')
        self._write_file(channel_dir / 'period', str(self.period_ns))

    def _write_duty(self, channel: int, duty_ns: int) -> None:
        if not 0 <= duty_ns <= self.period_ns:
            raise PwmError(f'duty cycle {duty_ns} ns outside the period {self.period_ns} ns')
        fd = self._duty_files.get(channel)
        if fd is None:
            raise PwmError(f'channel {channel} of {self.chip_path} is closed')
        data = str(duty_ns).encode('ascii')
        try:
            # sysfs takes each write whole whatever the offset; offset 0 and the truncate keep
            # a plain file (a test tree) holding exactly the last value too.
            os.pwrite(fd, data, 0)
            if len(data) < self._duty_lengths.get(channel, 0):
                os.ftruncate(fd, len(data))
        except OSError as error:
            path = self.channel_path(channel) / 'duty_cycle'
            raise PwmError(f'cannot write {duty_ns} to {path}: {error.strerror}') from None
        self._duty_lengths[channel] = len(data)

    def close(self) -> None:
        for fd in self._duty_files.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._duty_files.clear()

    @staticmethod
    def _open_for_writing(path: Path) -> int:
        try:
            return os.open(path, os.O_WRONLY)
        except PermissionError as error:
            raise PwmError(f'no permission to write {path}: run as root or add a udev rule '
                           f'giving your group access to the PWM ({error.strerror})') from None
        except OSError as error:
            raise PwmError(f'cannot open {path}: {error.strerror}') from None

    def _set_enabled(self, enabled: bool) -> None:
        for channel in self.channels:
            self._write_file(self.channel_path(channel) / 'enable', '1' if enabled else '0')

    @staticmethod
    def _read_int(path: Path) -> int | None:
        try:
            with open(path, 'rb') as handle:
                # Attributes are short; a bounded read never hangs on a character device.
                return int(handle.read(64).strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_file(path: Path, text: str, ignore_busy: bool = False) -> None:
        try:
            with open(path, 'w', encoding='ascii') as handle:
                handle.write(text)
        except PermissionError as error:
            raise PwmError(f'no permission to write {path}: run as root or add a udev rule '
                           f'giving your group access to the PWM ({error.strerror})') from None
        except OSError as error:
            if ignore_busy and error.errno == errno.EBUSY:
                return  # already exported by someone else: fine
            raise PwmError(f'cannot write {text!r} to {path}: {error.strerror}') from None
