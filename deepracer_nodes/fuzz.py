"""Fuzzing every parser of outside input: the properties, written once for the tests and
`deepracer bench`.

Each target is a parser that takes something from outside the car's control (a file a
user downloaded, a message from the network) with a hypothesis strategy that generates
such inputs, valid, nearly valid and hostile, and a check that feeds one input through the
real code and classifies the result:

- accepted: the parser returned, and what it returned is sane (values in range, the
  duty cycles inside the calibration, files only inside the target folder, ...);
- rejected: the project's own error type (a ValueError subclass) with a message that
  says what is wrong: the "clear error" of the contract;
- otherwise a FuzzFailure: a crash (any other exception), an out-of-range output, or a
  rejection without a usable message.

Targets: model_metadata.json, calibration.json, model archives, image messages through
the inference node's frame path, drive commands through the servo node's callbacks into
a sysfs PWM tree, route .npy files. The image and drive targets run the real nodes
in-process on a private rclpy context.

    report = run_target('metadata', max_examples=10_000)   # counts, never raises
    run_target('metadata', 300, raise_failures=True)       # a test: hypothesis shrinks

hypothesis is a test dependency; it is imported only when a target runs.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import stat
import tarfile
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# A rejection must explain itself: the project's error type and at least this much text.
MIN_MESSAGE_CHARS = 10
# Failing inputs kept per report (their repr, cut to this length).
KEPT_FAILURES = 8
KEPT_REPR_CHARS = 300
# Hostile numbers for every numeric field.
HOSTILE_FLOATS = (math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.0,
                  1.7976931348623157e308)
HOSTILE_INTS = (0, -1, 1, 2**31, 2**63, -2**63, 10**20, 10**400, -10**400)
HOSTILE_TEXT = ('', ' ', '\x00', 'null', 'NaN', '../../etc/passwd', '\u202e', 'é' * 3,
                'discrete', 'continuous')


class FuzzFailure(AssertionError):
    """An input the parser did not handle: kind is 'crash', 'out_of_range' or 'unclear_error'."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f'{kind}: {detail}')
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Outcome:
    """What became of one input that was handled: accepted, or rejected with a message."""

    accepted: bool
    message: str = ''


def _accepted(note: str = '') -> Outcome:
    return Outcome(True, note)


def _rejected(error: BaseException, error_type: type[BaseException],
              must_mention: str | None = None) -> Outcome:
    """A rejection when `error` is the parser's own error type with a clear message."""
    if not isinstance(error, error_type):
        raise FuzzFailure('crash', f'{type(error).__name__}: {str(error)[:200]}') from error
    message = str(error).strip()
    if len(message) < MIN_MESSAGE_CHARS or (must_mention and must_mention not in message):
        raise FuzzFailure('unclear_error', f'{type(error).__name__} {message!r}')
    return Outcome(False, message)


def _require(condition: bool, detail: str) -> None:
    if not condition:
        raise FuzzFailure('out_of_range', detail)


# --- shared strategies -------------------------------------------------------------------------

def _hostile_json_values(st):
    """Any JSON value, biased to what breaks parsers: NaN, huge ints, wrong types."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(HOSTILE_FLOATS), st.sampled_from(HOSTILE_INTS),
        st.text(max_size=12), st.sampled_from(HOSTILE_TEXT))
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _number_or_hostile(st, valid):
    """Mostly a valid number, sometimes anything a JSON file can hold."""
    return st.one_of(valid, valid, valid, _hostile_json_values(st))


def _json_bytes(st, documents):
    """A document as the bytes of a file: JSON (NaN allowed, as Python writes it), with or
    without a byte-order mark, or damaged (cut, a byte flipped, bytes that are not UTF-8)."""
    def encode(document: Any, form: str, cut: int, flip: int) -> bytes:
        data = json.dumps(document).encode('utf-8')
        if form == 'bom':
            return b'\xef\xbb\xbf' + data
        if form == 'cut':
            return data[:cut % (len(data) + 1)]
        if form == 'flip' and data:
            index = flip % len(data)
            return data[:index] + bytes([data[index] ^ 0xA5]) + data[index + 1:]
        return data
    return st.builds(encode, documents,
                     st.sampled_from(['plain', 'plain', 'plain', 'bom', 'cut', 'flip']),
                     st.integers(0, 10_000), st.integers(0, 10_000))


def _pathological_json(st):
    """Text that is valid JSON (or nearly) but pathological: deep nesting, huge numbers."""
    return st.one_of(
        st.builds(lambda depth, opener: (opener * depth).encode(),
                  st.sampled_from([10, 1_000, 5_000, 100_000]), st.sampled_from(['[', '{"a":'])),
        st.builds(lambda digits: ('{"x": ' + '9' * digits + '}').encode(),
                  st.sampled_from([20, 400, 4_300, 5_000, 50_000])),
        st.binary(max_size=300))


def _file_inputs(st, documents):
    return st.one_of(_json_bytes(st, documents), _json_bytes(st, documents),
                     _json_bytes(st, _hostile_json_values(st)), _pathological_json(st))


# --- model_metadata.json -----------------------------------------------------------------------

def metadata_strategy():
    from hypothesis import strategies as st

    def document(angle, speed, sensors, index=st.nothing()):
        action = st.fixed_dictionaries({'steering_angle': angle, 'speed': speed},
                                       optional={'index': index})
        continuous = st.fixed_dictionaries({
            'steering_angle': st.fixed_dictionaries({'low': angle, 'high': angle}),
            'speed': st.fixed_dictionaries({'low': speed, 'high': speed})})
        return st.one_of(
            st.fixed_dictionaries({'action_space': st.lists(action, min_size=1, max_size=6)},
                                  optional={
                'action_space_type': st.just('discrete'), 'sensor': sensors,
                'training_algorithm': st.sampled_from(['clipped_ppo', 'sac']),
                'version': st.sampled_from(['3', '4', 5])}),
            st.fixed_dictionaries({'action_space': continuous,
                                   'action_space_type': st.just('continuous')},
                                  optional={'sensor': sensors}))

    from deepracer_nodes.core.metadata import Sensor
    sensor_lists = st.lists(st.sampled_from([s.value for s in Sensor]), min_size=1, max_size=3)
    clean = document(st.floats(-89.0, 89.0), st.floats(0.0, 5.0), sensor_lists)
    hostile = document(_number_or_hostile(st, st.floats(-89.0, 89.0)),
                       _number_or_hostile(st, st.floats(0.0, 5.0)),
                       st.one_of(sensor_lists, _hostile_json_values(st)),
                       index=st.integers(-1, 6))
    anything = st.fixed_dictionaries(
        {'action_space': _hostile_json_values(st)},
        optional={'action_space_type': _hostile_json_values(st),
                  'sensor': _hostile_json_values(st),
                  'training_algorithm': _hostile_json_values(st),
                  'neural_network': _hostile_json_values(st),
                  'version': _hostile_json_values(st),
                  'lidar_config': _hostile_json_values(st)})
    return _file_inputs(st, st.one_of(clean, hostile, anything))


@contextmanager
def metadata_checker() -> Iterator[Callable[[bytes], Outcome]]:
    from deepracer_nodes.core import metadata as md

    with tempfile.TemporaryDirectory(prefix='fuzz-metadata-') as folder:
        path = Path(folder) / md.METADATA_FILE_NAME

        def check(data: bytes) -> Outcome:
            path.write_bytes(data)
            try:
                loaded = md.load_metadata(path)
            except Exception as error:  # noqa: BLE001 - classified, not swallowed
                return _rejected(error, md.MetadataError)
            _check_metadata_sane(loaded, md)
            return _accepted(loaded.action_space_type.value)
        yield check


def _check_metadata_sane(loaded, md) -> None:
    space = loaded.action_space
    _require(space.output_size >= 1, f'no outputs: {space}')
    _require(math.isfinite(space.max_speed_mps) and space.max_speed_mps >= 0,
             f'max speed {space.max_speed_mps}')
    _require(space.max_abs_steering_deg < md.MAX_ABS_STEERING_DEG,
             f'steering {space.max_abs_steering_deg} deg')
    if isinstance(space, md.ContinuousActionSpace):
        for name in ('steering_angle_deg', 'speed_mps'):
            bounds = getattr(space, name)
            _require(bounds.low < bounds.high, f'{name} {bounds}')
    # What we accept we can write back and read again unchanged.
    again = md.loads_metadata(md.dumps_metadata(loaded))
    _require(again.action_space == space, 'round trip changed the action space')


# --- calibration.json --------------------------------------------------------------------------

def calibration_strategy():
    from hypothesis import strategies as st

    ns = _number_or_hostile(st, st.integers(1_000_000, 2_000_000))
    polarity = _number_or_hostile(st, st.sampled_from([1, -1]))
    channel = st.fixed_dictionaries({'min': ns, 'mid': ns, 'max': ns, 'polarity': polarity})
    factory_like = st.fixed_dictionaries({
        'min': st.integers(1_100_000, 1_350_000), 'mid': st.integers(1_400_000, 1_500_000),
        'max': st.integers(1_550_000, 1_800_000), 'polarity': st.sampled_from([1, -1])})
    document = st.fixed_dictionaries(
        {'Calibration': st.fixed_dictionaries(
            {'Servo': st.one_of(channel, factory_like, factory_like),
             'Motor': st.one_of(channel, factory_like, factory_like)},
            optional={'version': _hostile_json_values(st)})},
        optional={'deepracer_nodes': st.fixed_dictionaries({}, optional={
            'max_speed_mps': _number_or_hostile(st, st.floats(0.1, 10.0)),
            'max_speed_scale': _number_or_hostile(st, st.floats(0.0, 1.0))})})
    return _file_inputs(st, document)


# Ratios and speeds a calibration is driven with once accepted: it must hold them all.
_PROBE_VALUES = (-1.0, -0.5, 0.0, 0.5, 1.0, *HOSTILE_FLOATS)


@contextmanager
def calibration_checker() -> Iterator[Callable[[bytes], Outcome]]:
    from deepracer_nodes.core import calibration as cal
    from deepracer_nodes.core import drive

    with tempfile.TemporaryDirectory(prefix='fuzz-calibration-') as folder:
        path = Path(folder) / 'calibration.json'

        def check(data: bytes) -> Outcome:
            path.write_bytes(data)
            try:
                loaded = cal.load_calibration(path)
            except Exception as error:  # noqa: BLE001
                return _rejected(error, cal.CalibrationError, must_mention=str(path))
            calibration = loaded.calibration
            for name in ('steering', 'throttle'):
                channel = getattr(calibration, name)
                _require(0 < channel.min_ns < channel.mid_ns < channel.max_ns
                         < channel.period_ns and channel.polarity in (1, -1),
                         f'{name} accepted as {channel}')
            for value in _PROBE_VALUES:
                for steering in _PROBE_VALUES:
                    duties = drive.drive_to_duties(value * 4.0, steering, calibration)
                    _check_duties(duties, calibration, f'speed {value * 4.0} steering {steering}')
            return _accepted()
        yield check


def _check_duties(duties, calibration, what: str) -> None:
    for name, duty in (('throttle', duties.throttle_ns), ('steering', duties.steering_ns)):
        channel = getattr(calibration, name)
        _require(isinstance(duty, int) and channel.min_ns <= duty <= channel.max_ns,
                 f'{what}: {name} duty {duty} outside [{channel.min_ns}, {channel.max_ns}]')


# --- model archives (model.tar.gz, zip) --------------------------------------------------------

_MEMBER_NAMES = ('model_metadata.json', 'agent/model.pb', 'model.onnx', 'a/b/c.txt', 'dir/',
                 '../escape.txt', '../../etc/evil', '/abs/path', 'C:\\win\\path', 'a/../../b',
                 'a\\..\\..\\b', '.', '', './model.pb', 'x\x00y', 'agent/../agent/model.pb',
                 'é/ü.pb', 'a' * 300)
_MEMBER_KINDS = ('file', 'file', 'file', 'dir', 'symlink', 'hardlink', 'fifo', 'chardev')


def archive_strategy():
    from hypothesis import strategies as st

    member = st.tuples(st.one_of(st.sampled_from(_MEMBER_NAMES), st.text(max_size=20)),
                       st.sampled_from(_MEMBER_KINDS), st.binary(max_size=64),
                       st.sampled_from(['', '../outside', '/etc/passwd', 'model.pb']),
                       st.sampled_from([None, 0, 10**9, 10**12]))
    model_member = st.tuples(st.sampled_from(['model_metadata.json', 'agent/model.pb',
                                              'model.onnx', 'agent/', 'README']),
                             st.sampled_from(['file', 'file', 'dir']), st.binary(max_size=64),
                             st.just(''), st.none())
    archive = st.builds(
        _build_archive, st.one_of(st.lists(member, max_size=6),
                                  st.lists(model_member, min_size=1, max_size=4)),
        st.sampled_from(['tar', 'tar.gz', 'tar.bz2', 'tar.xz', 'zip']),
        st.sampled_from(['none', 'none', 'none', 'cut', 'flip']), st.integers(0, 100_000))
    return st.one_of(archive, archive, archive, st.binary(max_size=600))


def _build_archive(members, kind: str, damage: str, where: int) -> bytes:
    data = _zip_bytes(members) if kind == 'zip' else _tar_bytes(members, kind)
    if damage == 'cut':
        return data[:where % (len(data) + 1)]
    if damage == 'flip' and data:
        index = where % len(data)
        return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
    return data


def _tar_bytes(members, kind: str) -> bytes:
    buffer = io.BytesIO()
    mode = {'tar': 'w', 'tar.gz': 'w:gz', 'tar.bz2': 'w:bz2', 'tar.xz': 'w:xz'}[kind]
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.GNU_FORMAT) as archive:
        for name, member_kind, payload, link, declared in members:
            info = tarfile.TarInfo(name)
            info.type = {'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE,
                         'symlink': tarfile.SYMTYPE, 'hardlink': tarfile.LNKTYPE,
                         'fifo': tarfile.FIFOTYPE, 'chardev': tarfile.CHRTYPE}[member_kind]
            info.linkname = link
            info.mode = 0o6777  # setuid, setgid, executable: must never survive extraction
            if member_kind == 'file':
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
            else:
                archive.addfile(info)
    data = buffer.getvalue()
    return data


def _zip_bytes(members) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, 'w') as archive:
        warnings.simplefilter('ignore')  # duplicate names are wanted: the extractor refuses them
        for name, member_kind, payload, link, _ in members:
            if not name or '\x00' in name:
                continue  # zipfile refuses to write these; the tar form covers them
            info = zipfile.ZipInfo(name)
            mode = {'file': stat.S_IFREG | 0o6777, 'dir': stat.S_IFDIR | 0o777,
                    'symlink': stat.S_IFLNK | 0o777, 'hardlink': stat.S_IFREG | 0o644,
                    'fifo': stat.S_IFIFO | 0o644, 'chardev': stat.S_IFCHR | 0o644}[member_kind]
            info.external_attr = mode << 16
            archive.writestr(info, link.encode() if member_kind == 'symlink' else payload)
    return buffer.getvalue()


def archive_available() -> bool:
    try:
        import deepracer_nodes.core.archive  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def archive_checker() -> Iterator[Callable[[bytes], Outcome]]:
    from deepracer_nodes.core import archive as arc

    with tempfile.TemporaryDirectory(prefix='fuzz-archive-') as folder:
        work = Path(folder) / 'work'
        work.mkdir()
        source = Path(folder) / 'model.tar.gz'
        target = work / 'target'
        # Limits small enough that a header claiming gigabytes is refused cheaply.
        limits = arc.ExtractionLimits(max_members=50, max_member_bytes=1 << 20,
                                      max_total_bytes=4 << 20)

        def check(data: bytes) -> Outcome:
            source.write_bytes(data)
            try:
                try:
                    written = arc.extract_archive(source, target, limits)
                except Exception as error:  # noqa: BLE001
                    outcome = _rejected(error, arc.ArchiveError)
                    _require(not target.exists(), 'a refused archive left its target folder')
                else:
                    _check_extracted(target, written)
                    try:
                        arc.locate_model(target)
                        outcome = _accepted('model found')
                    except Exception as error:  # noqa: BLE001
                        _rejected(error, arc.ArchiveError)
                        outcome = _accepted('extracted, no model')
                _require(sorted(p.name for p in work.iterdir()) in ([], ['target']),
                         f'written outside the target: {sorted(os.listdir(work))}')
                return outcome
            finally:
                shutil.rmtree(target, ignore_errors=True)
        yield check


def _check_extracted(target: Path, written: list) -> None:
    root = target.resolve()
    for directory, folders, files in os.walk(target):
        for name in folders + files:
            path = Path(directory) / name
            mode = path.lstat().st_mode
            _require(stat.S_ISREG(mode) or stat.S_ISDIR(mode), f'{path} is not a file or folder')
            _require(root in path.resolve().parents, f'{path} outside {root}')
            if stat.S_ISREG(mode):
                _require(not mode & (stat.S_ISUID | stat.S_ISGID | 0o111),
                         f'{path} kept mode {oct(mode)}')
    for relative in written:
        _require((target / relative).is_file(), f'reported {relative} is not a file')


# --- image messages through the inference node ------------------------------------------------

def image_strategy():
    from hypothesis import strategies as st
    from deepracer_nodes.core.images import ENCODINGS

    unknown = ['', 'BGR8', 'bgr16', '32FC1', 'yuv422', 'rgb8 ', 'mono8\x00', 'jpeg']
    encodings = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.sampled_from(unknown),
                          st.text(max_size=8))
    side = st.one_of(st.integers(1, 64), st.integers(0, 640), st.sampled_from(
        [0, 1, 8192, 8193, 2**31, 2**32 - 1]))
    return st.builds(_image_fields, side, side, encodings,
                     st.one_of(st.just(0), st.integers(-8, 8)),
                     st.sampled_from(['exact', 'exact', 'any']), st.integers(0, 2**32 - 1),
                     st.one_of(st.just(0), st.integers(-16, 16)), st.integers(0, 1),
                     st.integers(0, 2**32 - 1))


_MAX_FUZZ_IMAGE_BYTES = 1 << 21


def _image_fields(height, width, encoding, step_delta, step_form, any_step, data_delta,
                  bigendian, seed) -> dict:
    """Fields of a sensor_msgs/Image: sizes near consistent, or not at all; data from a seed
    (generated in numpy, so large frames cost hypothesis nothing)."""
    from deepracer_nodes.core.images import ENCODINGS
    channels, dtype = ENCODINGS.get(encoding, (3, np.uint8))
    row = width * channels * np.dtype(dtype).itemsize
    step = max(0, row + step_delta) if step_form == 'exact' else any_step
    step = min(step, 2**32 - 1)
    length = min(max(0, step * height + data_delta), _MAX_FUZZ_IMAGE_BYTES)
    data = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    return {'height': height, 'width': width, 'encoding': encoding, 'step': step,
            'is_bigendian': bigendian, 'data': data}


@contextmanager
def image_checker() -> Iterator[Callable[[dict], Outcome]]:
    """images.to_bgr/to_grey on the fields, then the same message through a live inference
    node's frame callback (with a model loaded): it must take every frame or reject it."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from deepracer_nodes.core import images, onnx_build
    from deepracer_nodes.inference_node import InferenceNode
    from deepracer_nodes.ros_conversions import image_to_raw
    from deepracer_nodes.ros_runtime import ros_graph

    with tempfile.TemporaryDirectory(prefix='fuzz-image-') as folder, ros_graph() as context:
        model = onnx_build.write_model_folder(
            Path(folder) / 'model', onnx_build.brightest_strip_network(3),
            onnx_build.steering_sweep_metadata(3))
        node = InferenceNode(context=context, parameter_overrides=[
            Parameter('model', value=str(model))])
        sequence = [0]

        def check(fields: dict) -> Outcome:
            msg = Image(**{k: v for k, v in fields.items() if k != 'data'})
            msg.data = fields['data']
            raw = image_to_raw(msg)
            outcome = None
            for convert, channels in ((images.to_bgr, 3), (images.to_grey, 1)):
                try:
                    pixels = convert(raw)
                except Exception as error:  # noqa: BLE001
                    outcome = _rejected(error, images.ImageFormatError)
                    continue
                expected = (msg.height, msg.width, 3) if channels == 3 else (msg.height, msg.width)
                _require(pixels.shape == expected and pixels.dtype == np.uint8,
                         f'{convert.__name__} gave {pixels.shape} {pixels.dtype}')
            stats = node.statistics
            with stats.lock:
                before = (stats.processed, stats.rejected_images, stats.inference_errors)
            sequence[0] += 1
            try:
                node._on_image(msg, {'publication_sequence_number': sequence[0]})
            except Exception as error:  # noqa: BLE001
                raise FuzzFailure('crash', f'inference node frame callback: {error!r}') from None
            with stats.lock:
                after = (stats.processed, stats.rejected_images, stats.inference_errors)
            deltas = tuple(a - b for a, b in zip(after, before))
            if outcome is None:
                _require(deltas == (1, 0, 0), f'a valid image was not processed: {deltas}')
                return _accepted()
            _require(deltas == (0, 1, 0), f'a rejected image was not counted: {deltas}')
            return outcome
        try:
            yield check
        finally:
            node.destroy_node()


# --- drive commands through the servo node -----------------------------------------------------

def drive_command_strategy():
    from hypothesis import strategies as st

    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(HOSTILE_FLOATS), st.floats(-5.0, 5.0))
    command = st.tuples(st.sampled_from(['stamped', 'twist']),
                        st.lists(number, min_size=6, max_size=6), st.integers(0, 2**63 - 1))
    return st.lists(command, min_size=1, max_size=5)


@contextmanager
def drive_command_checker() -> Iterator[Callable[[list], Outcome]]:
    """A live servo node (enabled, sysfs tree): every duty cycle written, and what the
    duty_cycle files hold after each command, must be inside the calibration."""
    from geometry_msgs.msg import Twist, TwistStamped
    from rclpy.parameter import Parameter

    from deepracer_nodes.core import spec
    from deepracer_nodes.core.sysfs_tree import duty_ns, make_pwm_tree
    from deepracer_nodes.ros_conversions import ns_to_stamp
    from deepracer_nodes.ros_runtime import ros_graph
    from deepracer_nodes.servo_node import ServoNode

    with tempfile.TemporaryDirectory(prefix='fuzz-drive-') as folder, ros_graph() as context:
        root = make_pwm_tree(Path(folder))
        node = ServoNode(context=context, parameter_overrides=[
            Parameter('pwm_root', value=str(root)),
            Parameter('calibration_file', value=str(Path(folder) / 'calibration.json'))])
        calibration = node.outputs.calibration
        channels = {spec.PWM.throttle_channel: calibration.throttle,
                    spec.PWM.steering_channel: calibration.steering}
        outside: list[str] = []

        def observe(channel: int, duty: int, _t_ns: int) -> None:
            limits = channels[channel]
            if not limits.min_ns <= duty <= limits.max_ns:
                outside.append(f'channel {channel} written {duty}')

        node.backend.on_write = observe
        node._enabled = True  # as after /servo/enable; the service is tested elsewhere

        def check(commands: list) -> Outcome:
            neutral = False
            for kind, values, stamp_ns in commands:
                twist = Twist()
                (twist.linear.x, twist.linear.y, twist.linear.z,
                 twist.angular.x, twist.angular.y, twist.angular.z) = values
                try:
                    if kind == 'stamped':
                        msg = TwistStamped(twist=twist)
                        msg.header.stamp = ns_to_stamp(stamp_ns)
                        node._on_auto_cmd_vel(msg)
                    else:
                        node._on_cmd_vel(twist)
                except Exception as error:  # noqa: BLE001
                    raise FuzzFailure('crash', f'servo node command callback: {error!r}') from None
                _require(not outside, '; '.join(outside))
                for channel, limits in channels.items():
                    duty = duty_ns(root, channel)
                    _require(limits.min_ns <= duty <= limits.max_ns,
                             f'duty_cycle of channel {channel} holds {duty}')
                if not math.isfinite(values[0]):
                    _require(duty_ns(root, spec.PWM.throttle_channel)
                             == calibration.throttle.mid_ns, 'non-finite speed not neutral')
                    neutral = True
            return _accepted('neutral' if neutral else '')
        try:
            yield check
        finally:
            node.destroy_node()


# --- route .npy files --------------------------------------------------------------------------

def route_strategy():
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    arrays = hnp.arrays(
        dtype=st.sampled_from([np.float64, np.float32, np.int32, np.uint8, np.complex64,
                               np.bool_, '<U3']),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=70))
    plausible_loop = st.builds(_jittered_loop, st.integers(20, 150), st.floats(2.0, 9.0),
                               st.floats(0.6, 1.2), st.floats(0.0, 0.02),
                               st.integers(0, 2**32 - 1), st.just(None))
    wild_loop = st.builds(_jittered_loop, st.integers(3, 80), st.floats(0.1, 30.0),
                          st.floats(0.0, 2.0), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1),
                          st.sampled_from([None, math.nan, math.inf, 1e6]))
    loop = st.one_of(plausible_loop, wild_loop)
    header_mutation = st.builds(_mutated_npy_header, loop,
                                st.sampled_from(['shape', 'descr', 'order', 'cut', 'magic']),
                                st.sampled_from(["(9999999999, 6)", "(-1, 6)", "(3,)", "()",
                                                 "'|O'", "'<f16'", "True", "(65, 6, 1)"]),
                                st.integers(0, 5000))
    as_file = st.one_of(arrays.map(_npy_bytes), loop.map(_npy_bytes), loop.map(_npy_bytes),
                        header_mutation, st.binary(max_size=300),
                        st.builds(lambda a: _npy_bytes(a, pickle=True),
                                  st.just(np.array([{'x': 1}], dtype=object))))
    return st.one_of(as_file, arrays.map(lambda a: ('array', a)),
                     loop.map(lambda a: ('array', a)))


def _jittered_loop(count: int, radius: float, width: float, jitter: float, seed: int,
                   poison: float | None) -> np.ndarray:
    """An ellipse-like closed route of `count` points, jittered, sometimes poisoned."""
    rng = np.random.default_rng(seed)
    angle = np.linspace(0.0, 2.0 * math.pi, count)
    ring = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    route = np.concatenate([ring * radius, ring * (radius - width / 2),
                            ring * (radius + width / 2)], axis=1)
    route += rng.normal(0.0, jitter, route.shape)
    if poison is not None:
        route[rng.integers(0, count), rng.integers(0, 6)] = poison
    return route


def _npy_bytes(array: np.ndarray, pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=pickle)
    return buffer.getvalue()


def _mutated_npy_header(route: np.ndarray, part: str, replacement: str, cut: int) -> bytes:
    data = _npy_bytes(route)
    header_end = data.index(b'\n') + 1
    header, body = data[:header_end].decode('latin1'), data[header_end:]
    if part == 'cut':
        return data[:cut % len(data)]
    if part == 'magic':
        return b'\x93NUMPZ' + data[6:]
    key = {'shape': "'shape': ", 'descr': "'descr': ", 'order': "'fortran_order': "}[part]
    start = header.index(key) + len(key)
    end = header.index(', ', start) if part != 'shape' else header.index('), ', start) + 1
    header = header[:start] + replacement + header[end:]
    return header.encode('latin1') + body


@contextmanager
def route_checker() -> Iterator[Callable[[Any], Outcome]]:
    from deepracer_nodes.sim.track import load_route, route_from_array

    with tempfile.TemporaryDirectory(prefix='fuzz-route-') as folder:
        path = Path(folder) / 'route.npy'

        def check(item) -> Outcome:
            try:
                if isinstance(item, tuple):
                    track = route_from_array(item[1], name='fuzzed')
                else:
                    path.write_bytes(item)
                    track = load_route(path)
            except Exception as error:  # noqa: BLE001
                return _rejected(error, ValueError, must_mention='route')
            _require(math.isfinite(track.length_m) and track.length_m > 0
                     and math.isfinite(track.width_m) and track.width_m > 0,
                     f'track {track!r}')
            try:
                position = track.locate(*track.point_at(0.0)[:2])
            except Exception as error:  # noqa: BLE001
                raise FuzzFailure('crash', f'accepted track cannot locate: {error!r}') from None
            _require(math.isfinite(position.distance_from_center_m),
                     f'locate gave {position}')
            return _accepted()
        yield check


# --- running -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FuzzTarget:
    name: str
    parser: str
    strategy: Callable[[], Any]
    checker: Callable[[], Any]
    available: Callable[[], bool] = lambda: True


TARGETS: dict[str, FuzzTarget] = {t.name: t for t in (
    FuzzTarget('metadata', 'core.metadata.load_metadata (model_metadata.json bytes)',
               metadata_strategy, metadata_checker),
    FuzzTarget('calibration', 'core.calibration.load_calibration (calibration.json bytes)',
               calibration_strategy, calibration_checker),
    FuzzTarget('archive', 'core.archive.extract_archive + locate_model (tar/zip bytes)',
               archive_strategy, archive_checker, archive_available),
    FuzzTarget('image', 'images.to_bgr/to_grey + InferenceNode frame callback '
                        '(sensor_msgs/Image fields)', image_strategy, image_checker),
    FuzzTarget('drive_command', 'ServoNode command callbacks -> sysfs duty cycles '
                                '(Twist / TwistStamped)', drive_command_strategy,
               drive_command_checker),
    FuzzTarget('route', 'sim.track.load_route / route_from_array (.npy bytes, arrays)',
               route_strategy, route_checker),
)}


@dataclass
class FuzzReport:
    """What running one target did: counts, and the first failures found."""

    target: str
    parser: str
    examples: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: int = 0
    out_of_range: int = 0
    unclear_errors: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    failure_signatures: dict[str, int] = field(default_factory=dict)
    rejection_samples: list[str] = field(default_factory=list)
    available: bool = True

    @property
    def clean(self) -> bool:
        return self.crashes == self.out_of_range == self.unclear_errors == 0

    def record(self, outcome: Outcome) -> None:
        if outcome.accepted:
            self.accepted += 1
            return
        self.rejected += 1
        if len(self.rejection_samples) < 3 and outcome.message not in self.rejection_samples:
            self.rejection_samples.append(outcome.message[:200])

    def record_failure(self, failure: FuzzFailure, item: Any) -> None:
        counter = {'crash': 'crashes', 'out_of_range': 'out_of_range',
                   'unclear_error': 'unclear_errors'}[failure.kind]
        setattr(self, counter, getattr(self, counter) + 1)
        # One example per kind of failure (kind + exception type + start of the message).
        signature = f'{failure.kind}: {failure.detail[:40]}'
        if signature not in self.failure_signatures and len(self.failures) < KEPT_FAILURES:
            self.failures.append(f'{failure} <- {repr(item)[:KEPT_REPR_CHARS]}')
        self.failure_signatures[signature] = self.failure_signatures.get(signature, 0) + 1

    def as_dict(self) -> dict:
        return {**asdict(self), 'clean': self.clean}


def run_target(name: str, max_examples: int, raise_failures: bool = False,
               seed: int | None = None) -> FuzzReport:
    """Run one target's property on max_examples generated inputs.

    raise_failures=False counts every failure and keeps going (the benchmark);
    True lets hypothesis stop at the first, shrink it and raise it (the tests).
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    target = TARGETS[name]
    report = FuzzReport(name, target.parser)
    if not target.available():
        report.available = False
        return report
    phases = list(Phase) if raise_failures else [Phase.explicit, Phase.generate]
    started = time.perf_counter()
    with target.checker() as check:

        @settings(max_examples=max_examples, deadline=None, database=None, phases=phases,
                  suppress_health_check=list(HealthCheck), print_blob=raise_failures)
        @given(target.strategy())
        def property_holds(item):
            report.examples += 1
            try:
                report.record(check(item))
            except FuzzFailure as failure:
                if raise_failures:
                    raise
                report.record_failure(failure, item)

        if seed is not None:
            property_holds = hypothesis_seed(seed)(property_holds)
        property_holds()
    report.seconds = time.perf_counter() - started
    return report
