"""A real directory tree shaped like /sys/class/pwm, for tests and benchmarks of SysfsPwm.

    root = make_pwm_tree(tmp_path)              # pwmchip0 with pwm0/ and pwm1/ exported
    root = make_pwm_tree(tmp_path, exported=()) # nothing exported: export must create them
    duty_ns(root, channel=1)                    # what the code last wrote

Regular files cannot react to a write to ``export`` the way the kernel does, so
with exported=() the channel folders only appear if the test creates them
(export_channel) or runs an ExportResponder thread that plays the kernel.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from deepracer_nodes.core import spec


def make_pwm_tree(base: Path, chip: int = 0, npwm: int = 5,
                  exported: tuple[int, ...] = (spec.PWM.throttle_channel,
                                               spec.PWM.steering_channel),
                  extra_chips: dict[int, int] | None = None) -> Path:
    """Create base/pwm/pwmchip<chip>/ (and extra chips {index: npwm}); return base/pwm."""
    root = Path(base) / 'pwm'
    root.mkdir(parents=True, exist_ok=True)
    for index, channels in {**(extra_chips or {}), chip: npwm}.items():
        chip_dir = root / f'pwmchip{index}'
        chip_dir.mkdir(exist_ok=True)
        (chip_dir / 'npwm').write_text(f'{channels}\n')
        (chip_dir / 'export').write_text('')
        (chip_dir / 'unexport').write_text('')
    for channel in exported:
        export_channel(root / f'pwmchip{chip}', channel)
    return root


def export_channel(chip_dir: Path, channel: int) -> Path:
    """Create pwm<channel>/ with the files the kernel gives a freshly exported channel."""
    channel_dir = Path(chip_dir) / f'pwm{channel}'
    channel_dir.mkdir(exist_ok=True)
    for name, value in (('period', '0'), ('duty_cycle', '0'), ('enable', '0'),
                        ('polarity', 'normal')):
        path = channel_dir / name
        if not path.exists():
            path.write_text(f'{value}\n')
    return channel_dir


def chip_dir(root: Path, chip: int = 0) -> Path:
    return Path(root) / f'pwmchip{chip}'


def read_value(root: Path, channel: int, name: str, chip: int = 0) -> str:
    """A channel attribute. A regular file is truncated then written (sysfs is not), so a
    read racing a write from another thread can see it empty for a moment: read again."""
    path = chip_dir(root, chip) / f'pwm{channel}' / name
    for _ in range(1000):
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.0005)
    return text


def duty_ns(root: Path, channel: int, chip: int = 0) -> int:
    """The duty cycle (ns) last written to a channel."""
    return int(read_value(root, channel, 'duty_cycle', chip))


def period_ns(root: Path, channel: int, chip: int = 0) -> int:
    return int(read_value(root, channel, 'period', chip))


def enabled(root: Path, channel: int, chip: int = 0) -> bool:
    return read_value(root, channel, 'enable', chip) == '1'


class ExportResponder:
    """Plays the kernel: when a channel number is written to export, create pwm<N>/.

    Use as a context manager; polls the export file from a background thread.
    """

    def __init__(self, chip_path: Path, delay_s: float = 0.05) -> None:
        self.chip_path = Path(chip_path)
        self.delay_s = delay_s
        self.exported: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ExportResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        export_file = self.chip_path / 'export'
        while not self._stop.wait(0.005):
            text = export_file.read_text().strip()
            if not text:
                continue
            export_file.write_text('')
            if self._stop.wait(self.delay_s):
                return
            channel = int(text)
            export_channel(self.chip_path, channel)
            self.exported.append(channel)
