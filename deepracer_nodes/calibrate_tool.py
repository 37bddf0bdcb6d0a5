"""`deepracer calibrate`: calibrate the steering servo and the ESC of a car on a stand.

    deepracer calibrate                       interactive, through the running servo node
    deepracer calibrate show
    deepracer calibrate set steering --min 1200000 --mid 1450000 --max 1700000 [--reverse]
    deepracer calibrate set speed --max-speed-mps 4.0 --max-speed-scale 0.8
    deepracer calibrate import calibration.json      (DeepRacer's format)
    deepracer calibrate export out.json | -          (DeepRacer's format)
    deepracer calibrate reset                         (factory defaults)

The non-interactive forms edit the calibration file (atomically, validated); a running
servo node picks the change up within a second.

The interactive form drives the servo node's calibration mode over ROS rather than
writing the PWM itself, because that is the safer path: the node stays the only writer
of the PWM (no fight with a running node), its calibration timeout brings the ESC back
to neutral if this tool, the laptop or the network dies, every value goes through the
node's validation, and the node saves each accepted change atomically. It works the
same on the car and from a laptop on the car's network.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from deepracer_nodes.core import calibration as cal
from deepracer_nodes.core import spec

SERVO_NODE = 'servo_node'
FINE_STEP_NS = 1_000
COARSE_STEP_NS = 10_000
# No hobby servo or ESC takes pulses outside 0.5-2.5 ms: nudging never leaves this envelope.
HARD_MIN_NS = 500_000
HARD_MAX_NS = 2_500_000
# Calibration mode returns to neutral when not refreshed (the node's calibration_timeout,
# 1 s by default): refresh well within it.
REFRESH_PERIOD_S = 0.2
ARM_SECONDS = 2.0
ARROWS = {'[A': 'up', '[B': 'down', '[C': 'right', '[D': 'left'}
HELP = """keys: s steering, t throttle | d/right +1 us, a/left -1 us, D/up +10 us, A/down -10 us
      c go to centre | n set min, m set centre, x set max (at the current value)
      r reverse direction | w keep (save) | q quit (unsaved changes are undone) | ? help"""


# --- the calibration file ------------------------------------------------------------------

def _print_calibration(loaded: cal.LoadedCalibration, out: TextIO) -> None:
    c = loaded.calibration
    source = 'factory defaults, file not found' if loaded.factory_defaults else 'file'
    out.write(f'calibration: {loaded.path} ({source})\n')
    for name, key in (('steering', cal.STEERING_KEY), ('throttle', cal.THROTTLE_KEY)):
        ch = getattr(c, name)
        out.write(f'{name} ({key}): min {ch.min_ns}  mid {ch.mid_ns}  max {ch.max_ns} ns  '
                  f'polarity {ch.polarity:+d}\n')
    out.write(f'speed curve: max_speed_mps {c.max_speed_mps:g} m/s, '
              f'max_speed_scale {c.max_speed_scale:g}\n')


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    _print_calibration(cal.load_calibration(args.file), out)
    return 0


def cmd_set(args: argparse.Namespace, out: TextIO) -> int:
    changes: dict[str, Any] = {}
    if args.channel == 'speed':
        if args.min is not None or args.mid is not None or args.max is not None \
                or args.reverse is not None:
            raise cal.CalibrationError('set speed takes --max-speed-mps and --max-speed-scale')
    else:
        for option in ('min', 'mid', 'max'):
            value = getattr(args, option)
            if value is not None:
                changes[f'{args.channel}_{option}_ns'] = value
        if args.reverse is not None:
            changes[f'{args.channel}_polarity'] = -1 if args.reverse else 1
    if args.max_speed_mps is not None:
        changes['max_speed_mps'] = args.max_speed_mps
    if args.max_speed_scale is not None:
        changes['max_speed_scale'] = args.max_speed_scale
    if not changes:
        raise cal.CalibrationError('nothing to set: give --min, --mid, --max, --reverse, '
                                   '--max-speed-mps or --max-speed-scale')
    current = cal.load_calibration(args.file).calibration
    updated = cal.with_flat_changes(current, changes)
    cal.save_calibration(args.file, updated)
    _print_calibration(cal.load_calibration(args.file), out)
    return 0


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    source = Path(args.source)
    try:
        content = json.loads(source.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise cal.CalibrationError(f'{source}: cannot be imported: {error}') from None
    try:
        imported = cal.from_json_dict(content)
    except cal.CalibrationError as error:
        raise cal.CalibrationError(f'{source}: {error}') from None
    if isinstance(content, dict) and cal.EXTRA_KEY not in content:
        # A file from the official device has no speed settings: keep the ones we have.
        try:
            current = cal.load_calibration(args.file).calibration
        except cal.CalibrationError:
            current = cal.FACTORY_CALIBRATION
        imported = imported.with_changes(max_speed_mps=current.max_speed_mps,
                                         max_speed_scale=current.max_speed_scale)
    cal.save_calibration(args.file, imported)
    out.write(f'imported {source}\n')
    _print_calibration(cal.load_calibration(args.file), out)
    return 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    calibration = cal.load_calibration(args.file).calibration
    content = cal.to_json_dict(calibration)
    if args.deepracer_only:
        content.pop(cal.EXTRA_KEY)
    if args.destination == '-':
        out.write(json.dumps(content, indent=4) + '\n')
        return 0
    cal.write_text_atomically(args.destination, json.dumps(content, indent=4) + '\n')
    out.write(f'exported to {args.destination}\n')
    return 0


def cmd_reset(args: argparse.Namespace, out: TextIO) -> int:
    cal.save_calibration(args.file, cal.FACTORY_CALIBRATION)
    _print_calibration(cal.load_calibration(args.file), out)
    return 0


# --- the servo node over ROS --------------------------------------------------------------

class ServoNodeUnavailable(RuntimeError):
    """The servo node does not answer; the message says how to start it."""


class ServoCalibrationClient:
    """The servo node's calibration parameters and calibration mode, over ROS services."""

    def __init__(self, node_name: str = SERVO_NODE, context=None,
                 timeout_s: float = 5.0) -> None:
        import rclpy
        from rcl_interfaces.srv import GetParameters, SetParametersAtomically
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self._own_context = context is None
        self.context = context or Context()
        if self._own_context:
            rclpy.init(context=self.context)
        self.timeout_s = timeout_s
        self.node = rclpy.create_node('deepracer_calibrate', context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        prefix = node_name if node_name.startswith('/') else f'/{node_name}'
        self._get = self.node.create_client(GetParameters, f'{prefix}/get_parameters')
        self._set = self.node.create_client(SetParametersAtomically,
                                            f'{prefix}/set_parameters_atomically')
        self.node_name = prefix

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._get.service_is_ready() and self._set.service_is_ready():
                return
            self._executor.spin_once(timeout_sec=0.05)
        raise ServoNodeUnavailable(
            f'no servo node at {self.node_name} (ROS_DOMAIN_ID must match the car): start it '
            'with `ros2 run deepracer_nodes servo_node` (or the car launch file)')

    def _call(self, client, request):
        future = client.call_async(request)
        self._executor.spin_until_future_complete(future, timeout_sec=self.timeout_s)
        if not future.done() or future.result() is None:
            raise ServoNodeUnavailable(f'{self.node_name} did not answer within '
                                       f'{self.timeout_s:g} s')
        return future.result()

    def calibration(self) -> cal.Calibration:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self._call(self._get, GetParameters.Request(names=list(cal.FLAT_NAMES)))
        values = dict(zip(cal.FLAT_NAMES,
                          (parameter_value_to_python(v) for v in response.values)))
        return cal.with_flat_changes(cal.FACTORY_CALIBRATION, values)

    def set(self, **values: Any) -> str | None:
        """Set parameters all at once; None when accepted, else the node's reason."""
        from rcl_interfaces.srv import SetParametersAtomically
        from rclpy.parameter import Parameter

        request = SetParametersAtomically.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        result = self._call(self._set, request).result
        return None if result.successful else result.reason

    def close(self) -> None:
        self._executor.remove_node(self.node)
        self.node.destroy_node()
        self._executor.shutdown(timeout_sec=1.0)
        if self._own_context:
            self.context.try_shutdown()


# --- the interactive session --------------------------------------------------------------

class KeyReader:
    """Keys from a stream, read on a thread so the session can refresh while waiting.

    Arrow keys (ESC [ A..D) come out as 'up', 'down', 'right', 'left'; end of input as None.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._keys: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            char = self._stream.read(1)
            if not char:
                self._keys.put(None)
                return
            if char == '\x1b':
                sequence = self._stream.read(2)
                self._keys.put(ARROWS.get(sequence, 'escape'))
            else:
                self._keys.put(char)

    def next_key(self, timeout_s: float) -> str | None | bool:
        """A key, None at end of input, or False when nothing came within timeout_s."""
        try:
            return self._keys.get(timeout=timeout_s)
        except queue.Empty:
            return False


@dataclass
class CalibrationSession:
    """Nudge a channel in ns while the wheels move; set min / centre / max; reverse; keep."""

    client: ServoCalibrationClient
    out: TextIO
    arm_seconds: float = ARM_SECONDS
    channel: str = 'steering'
    values: dict[str, int] = field(default_factory=dict)
    saved: bool = False
    original: cal.Calibration = cal.FACTORY_CALIBRATION
    calibration: cal.Calibration = cal.FACTORY_CALIBRATION

    def run(self, keys: KeyReader) -> int:
        """The session with a servo node the client has found (client.wait_ready())."""
        self.original = self.client.calibration()
        self.calibration = self.original
        self.values = {'steering': self.original.steering.mid_ns,
                       'throttle': self.original.throttle.mid_ns}
        try:
            self._arm()
            self.out.write(HELP + '\n')
            self._status('ready')
            while True:
                key = keys.next_key(REFRESH_PERIOD_S)
                if key is False:
                    self._drive()  # keep calibration mode alive
                    continue
                if key is None or key in ('q', '\x03', '\x04'):
                    break
                self._handle(key)
        finally:
            self._finish()
        return 0

    def _arm(self) -> None:
        """Both outputs at neutral for arm_seconds: an ESC arms only after a steady neutral."""
        self.out.write(f'arming the ESC at neutral for {self.arm_seconds:g} s: '
                       'keep the wheels off the ground\n')
        deadline = time.monotonic() + self.arm_seconds
        self._drive()
        while time.monotonic() < deadline:
            time.sleep(min(REFRESH_PERIOD_S, max(deadline - time.monotonic(), 0.0)))
            self._drive()

    def _drive(self, **calibration_changes: Any) -> str | None:
        reason = self.client.set(**calibration_changes, calibration_mode='ns',
                                 calibration_throttle=float(self.values['throttle']),
                                 calibration_steering=float(self.values['steering']))
        if reason is None and calibration_changes:
            self.calibration = cal.with_flat_changes(self.calibration, calibration_changes)
        return reason

    def _handle(self, key: str) -> None:
        steps = {'d': FINE_STEP_NS, 'right': FINE_STEP_NS, 'a': -FINE_STEP_NS,
                 'left': -FINE_STEP_NS, 'D': COARSE_STEP_NS, 'up': COARSE_STEP_NS,
                 'A': -COARSE_STEP_NS, 'down': -COARSE_STEP_NS}
        channel = getattr(self.calibration, self.channel)
        if key in ('s', 't'):
            self.channel = 'steering' if key == 's' else 'throttle'
            self._status('selected')
        elif key in steps:
            self._nudge(self.values[self.channel] + steps[key])
        elif key == 'c':
            self._nudge(channel.mid_ns)
        elif key in ('n', 'm', 'x'):
            field_name = {'n': 'min_ns', 'm': 'mid_ns', 'x': 'max_ns'}[key]
            value = self.values[self.channel]
            self._apply({f'{self.channel}_{field_name}': value},
                        f'{field_name[:3]} set to {value} ns')
        elif key == 'r':
            self._apply({f'{self.channel}_polarity': -channel.polarity}, 'direction reversed')
        elif key == 'w':
            self.saved = True
            self._status('kept: the servo node saved it to its calibration file')
        elif key == '?':
            self.out.write(HELP + '\n')
        else:
            self._status(f'unknown key {key!r} (? for help)')

    def _nudge(self, value: int) -> None:
        if not HARD_MIN_NS <= value <= HARD_MAX_NS:
            self._status(f'{value} ns is outside {HARD_MIN_NS}..{HARD_MAX_NS} ns: refused')
            return
        channel = getattr(self.calibration, self.channel)
        widen: dict[str, int] = {}
        # Past an end of the range, the range follows (saved by the node, undone on quit
        # unless kept), so no duty cycle outside the calibration is ever written.
        if value < channel.min_ns:
            widen[f'{self.channel}_min_ns'] = value
        elif value > channel.max_ns:
            widen[f'{self.channel}_max_ns'] = value
        previous = self.values[self.channel]
        self.values[self.channel] = value
        reason = self._drive(**widen)
        if reason is not None:
            self.values[self.channel] = previous
            self._status(f'refused: {reason}')
        else:
            self._status('range widened' if widen else '')

    def _apply(self, changes: dict[str, int], done: str) -> None:
        reason = self._drive(**changes)
        self._status(done if reason is None else f'refused: {reason}')

    def _status(self, message: str) -> None:
        channel = getattr(self.calibration, self.channel)
        self.out.write(f'{self.channel:8s} {self.values[self.channel]:8d} ns | min '
                       f'{channel.min_ns} mid {channel.mid_ns} max {channel.max_ns} polarity '
                       f'{channel.polarity:+d} | {message}\n')
        self.out.flush()

    def _finish(self) -> None:
        """Undo unkept changes, then leave calibration mode (the node goes to neutral)."""
        try:
            if not self.saved and self.calibration != self.original:
                reason = self.client.set(calibration_mode='off',
                                         **cal.to_flat(self.original))
                self.out.write('changes undone\n' if reason is None
                               else f'could not undo the changes: {reason}\n')
            reason = self.client.set(calibration_mode='off')
            self.out.write('calibration mode off: outputs at neutral\n' if reason is None
                           else f'could not leave calibration mode: {reason}\n')
        except ServoNodeUnavailable as error:
            self.out.write(f'{error}; the node returns to neutral on its own timeout\n')


@contextmanager
def _cbreak(stream: TextIO) -> Iterator[None]:
    """Keys without Enter on a terminal (Ctrl-C still interrupts); nothing for a pipe."""
    if not stream.isatty():
        yield
        return
    import termios
    import tty
    saved = termios.tcgetattr(stream.fileno())
    try:
        tty.setcbreak(stream.fileno())
        yield
    finally:
        termios.tcsetattr(stream.fileno(), termios.TCSADRAIN, saved)


def cmd_interactive(args: argparse.Namespace, out: TextIO, keys_in: TextIO = sys.stdin,
                    context=None) -> int:
    client = ServoCalibrationClient(args.node, context=context, timeout_s=args.timeout)
    try:
        client.wait_ready()  # before any key is read: no node, no session
        session = CalibrationSession(client, out, arm_seconds=args.arm_seconds)
        with _cbreak(keys_in):
            try:
                return session.run(KeyReader(keys_in))
            except KeyboardInterrupt:
                return 130
    finally:
        client.close()


# --- command line -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--file', default=spec.DEEPRACER_CALIBRATION_FILE,
                        help='calibration file (DeepRacer\'s calibration.json), default '
                             '%(default)s')
    commands = parser.add_subparsers(dest='calibrate_command', metavar='ACTION')
    interactive = commands.add_parser(
        'interactive', help='nudge the outputs with keys through the running servo node '
                            '(the default)')
    _add_interactive_arguments(interactive)
    _add_interactive_arguments(parser)
    commands.add_parser('show', help='print the calibration')
    setter = commands.add_parser('set', help='change values in the calibration file')
    setter.add_argument('channel', choices=('steering', 'throttle', 'speed'))
    setter.add_argument('--min', type=int, help='duty cycle (ns) for ratio -1')
    setter.add_argument('--mid', type=int, help='duty cycle (ns) at neutral / centre')
    setter.add_argument('--max', type=int, help='duty cycle (ns) for ratio +1')
    setter.add_argument('--reverse', action=argparse.BooleanOptionalAction, default=None,
                        help='polarity -1 (--no-reverse: polarity 1)')
    setter.add_argument('--max-speed-mps', type=float,
                        help='speed (m/s) the speed curve maps to full throttle')
    setter.add_argument('--max-speed-scale', type=float, help='throttle scale in [0, 1]')
    importer = commands.add_parser('import', help="read DeepRacer's calibration.json")
    importer.add_argument('source')
    exporter = commands.add_parser('export', help="write DeepRacer's calibration.json")
    exporter.add_argument('destination', help="a file, or - for standard output")
    exporter.add_argument('--deepracer-only', action='store_true',
                          help='leave out our speed-curve settings')
    commands.add_parser('reset', help='factory defaults')


def _add_interactive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--node', default=SERVO_NODE, help='servo node name')
    parser.add_argument('--arm-seconds', type=float, default=ARM_SECONDS,
                        help='seconds at neutral before the ESC is nudged')
    parser.add_argument('--timeout', type=float, default=5.0,
                        help='seconds to wait for the servo node')


COMMANDS = {'show': cmd_show, 'set': cmd_set, 'import': cmd_import, 'export': cmd_export,
            'reset': cmd_reset}


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    command = args.calibrate_command or 'interactive'
    try:
        if command == 'interactive':
            return cmd_interactive(args, out)
        return COMMANDS[command](args, out)
    except (cal.CalibrationError, ServoNodeUnavailable) as error:
        err.write(f'deepracer calibrate {command}: {error}\n')
        return 1
