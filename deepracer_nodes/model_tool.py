"""`deepracer model`: import, validate, list and load DeepRacer models.

    deepracer model import model.tar.gz [--name NAME] [--output DIR] [--force]
    deepracer model import FOLDER        (a folder holding a .pb or model.onnx + metadata)
    deepracer model validate NAME_OR_DIR
    deepracer model list [--models-dir DIR]
    deepracer model load NAME [--node /inference_node]

import extracts the archive safely (core/archive.py), converts the TensorFlow graph to
ONNX once with tf2onnx when the `convert` extra is installed and checks it against
TensorFlow (core/convert.py), then stores model.onnx, model_metadata.json and
import_record.json in the user models folder (~/.deepracer/models), where the inference
node finds it by name and loads it in well under a second. A model is stored only after
Policy.load() accepted it; on any failure nothing is left behind.

load sets the running inference node's `model` parameter through its SetParameters
service: the node loads and checks the new model beside the running one and swaps only
when it is good, otherwise it keeps driving and returns the reason, printed here.
Only `load` needs ROS (imported when used).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from deepracer_nodes import paths
from deepracer_nodes.core import spec
from deepracer_nodes.core.archive import (
    ExtractionLimits, FoundModel, extract_archive, locate_model)
from deepracer_nodes.core.convert import (
    DEFAULT_TOLERANCE, converter_versions, convert_frozen_graph)
from deepracer_nodes.core.metadata import (
    METADATA_FILE_NAME, ContinuousActionSpace, DiscreteActionSpace, MetadataError,
    ModelMetadata, load_metadata)
from deepracer_nodes.core.policy import (
    MODEL_FILE_NAME, ModelError, Policy, default_search_dirs, resolve_model)

IMPORT_RECORD_FILE_NAME = 'import_record.json'
INFERENCE_NODE = '/inference_node'
_ARCHIVE_SUFFIXES = ('.tar.gz', '.tgz', '.tar.bz2', '.tbz2', '.tar.xz', '.txz', '.tar', '.zip')
_NAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')
# Console models steer within the car's limit; a wider angle means another car's model.
_STEERING_SLACK_DEG = 1e-6


class ModelImportError(ValueError):
    """An import that cannot go ahead (name taken, bad name, bad source)."""


# --- import ---------------------------------------------------------------------------------

@dataclass
class ImportResult:
    name: str
    folder: Path
    converted: bool
    record: dict
    summary: str  # action space, input and size, as `validate` prints it
    seconds: float
    load_seconds: float
    notes: list[str] = field(default_factory=list)


def model_name_for(source: Path) -> str:
    """The default model name: the archive's name without its suffixes, or the folder's."""
    name = source.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def check_model_name(name: str) -> str:
    if not _NAME_PATTERN.match(name):
        raise ModelImportError(f'model name {name!r} must start with a letter or digit and '
                               'hold only letters, digits, ".", "_" and "-" '
                               '(give one with --name)')
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _check_metadata_early(found: FoundModel) -> ModelMetadata:
    """Refuse bad metadata before an expensive conversion."""
    try:
        metadata = load_metadata(found.metadata_file)
    except MetadataError as error:
        raise ModelError(_relative(str(error), found.metadata_file.parent)) from None
    if metadata.unsupported_sensors:
        names = ', '.join(s.value for s in metadata.unsupported_sensors)
        raise ModelError(f'the model needs {names}; this stack drives single-camera models '
                         '(FRONT_FACING_CAMERA) only')
    return metadata


def _relative(message: str, folder: Path) -> str:
    """The lower layers' message with the model folder's path left out (noise to a user)."""
    message = message.replace(f'{folder}{os.sep}', '')
    prefix = f'{folder}: '
    return message[len(prefix):] if message.startswith(prefix) else message


def import_model(source: str | Path, models_dir: str | Path | None = None,
                 name: str | None = None, force: bool = False,
                 limits: ExtractionLimits = ExtractionLimits(),
                 tolerance: float = DEFAULT_TOLERANCE) -> ImportResult:
    """Import an archive or folder into models_dir/<name>; see the module docstring.

    Raises ArchiveError, MetadataError, ConversionError (ConverterUnavailable), ModelError
    or ModelImportError, all ValueErrors with a message for the user; nothing is left behind.
    """
    start = time.perf_counter()
    source = Path(source).expanduser()
    if not source.exists():
        raise ModelImportError(f'{source} does not exist')
    models_dir = Path(models_dir).expanduser() if models_dir else paths.user_models_dir()
    name = check_model_name(name or model_name_for(source))
    destination = models_dir / name
    if destination.exists() and not force:
        raise ModelImportError(f'a model named {name!r} already exists in {models_dir}; '
                               'use --force to replace it or --name to pick another name')
    models_dir.mkdir(parents=True, exist_ok=True)
    # Staged beside the destination, so the final rename stays on one filesystem (atomic).
    staging = Path(tempfile.mkdtemp(prefix=f'.{name}.import-', dir=models_dir))
    try:
        if source.is_dir():
            unpacked = source
        else:
            unpacked = staging / 'unpacked'
            extract_archive(source, unpacked, limits)
        found = locate_model(unpacked)
        _check_metadata_early(found)
        built = staging / name
        built.mkdir()
        record = _build(found, unpacked, built, source, tolerance)
        load_start = time.perf_counter()
        policy = Policy.load(built, intra_op_threads=1)  # stored only if it can drive
        load_seconds = time.perf_counter() - load_start
        summary = describe_policy(policy)
        _move_into_place(built, destination, staging)
        return ImportResult(name, destination, not found.is_onnx, record, summary,
                            time.perf_counter() - start, load_seconds)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build(found: FoundModel, unpacked: Path, built: Path, source: Path,
           tolerance: float) -> dict:
    """Write model.onnx, model_metadata.json and import_record.json into built."""
    shutil.copyfile(found.metadata_file, built / METADATA_FILE_NAME)
    record: dict = {
        'source': source.name,
        'source_sha256': _sha256(found.model_file if source.is_dir() else source),
        'model_file': str(found.model_file.relative_to(unpacked)),
        'imported_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    if found.is_onnx:
        shutil.copyfile(found.model_file, built / MODEL_FILE_NAME)
        record['conversion'] = None
    else:
        report = convert_frozen_graph(found.model_file, built / MODEL_FILE_NAME, tolerance)
        record['conversion'] = {
            'tool': 'tf2onnx', 'opset': report.opset, 'versions': report.versions,
            'input': report.signature.input_name, 'output': report.signature.output_name,
            'algorithm': report.signature.algorithm,
            'frames_compared': report.frames_compared,
            'max_abs_diff_vs_tensorflow': report.max_abs_diff, 'tolerance': report.tolerance,
            'seconds': round(report.seconds, 3)}
    record['versions'] = converter_versions()
    record['model_sha256'] = _sha256(built / MODEL_FILE_NAME)
    (built / IMPORT_RECORD_FILE_NAME).write_text(json.dumps(record, indent=2) + '\n',
                                                 encoding='utf-8')
    return record


def _move_into_place(built: Path, destination: Path, staging: Path) -> None:
    """Rename built to destination; an existing destination (--force) is moved aside into
    staging first and deleted with it, so a failed rename puts it back."""
    if destination.exists() or destination.is_symlink():
        aside = staging / '.replaced'
        os.rename(destination, aside)
        try:
            os.rename(built, destination)
        except OSError:
            os.rename(aside, destination)
            raise
    else:
        os.rename(built, destination)  # fails, never merges, if a folder appeared meanwhile


# --- validate -------------------------------------------------------------------------------

@dataclass
class Validation:
    folder: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    policy: Policy | None = None
    load_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def range_problems(metadata: ModelMetadata) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the action space in plain words."""
    problems: list[str] = []
    warnings: list[str] = []
    max_steering = math.degrees(spec.CAR.max_steering_rad)
    space = metadata.action_space
    if isinstance(space, DiscreteActionSpace):
        for index, action in enumerate(space.actions):
            if action.speed_mps <= 0:
                problems.append(f'action {index} has speed {action.speed_mps:g} m/s: every '
                                'action must move the car forward (speed > 0)')
            if abs(action.steering_angle_deg) > max_steering + _STEERING_SLACK_DEG:
                problems.append(f'action {index} steers {action.steering_angle_deg:g} deg, '
                                f'beyond the car\'s +-{max_steering:g} deg')
        fastest = space.max_speed_mps
    else:
        steering, speed = space.steering_angle_deg, space.speed_mps
        if speed.low <= 0:
            problems.append(f'the speed range starts at {speed.low:g} m/s: it must be > 0')
        if max(abs(steering.low), abs(steering.high)) > max_steering + _STEERING_SLACK_DEG:
            problems.append(f'the steering range {steering.low:g}..{steering.high:g} deg goes '
                            f'beyond the car\'s +-{max_steering:g} deg')
        fastest = speed.high
    if fastest > spec.CAR.max_speed_mps:
        warnings.append(f'top speed {fastest:g} m/s is above the {spec.CAR.max_speed_mps:g} '
                        'm/s DeepRacer trains with')
    return problems, warnings


def validate_folder(folder: str | Path) -> Validation:
    """Every check before a model may drive, each problem in plain words."""
    folder = Path(folder)
    result = Validation(folder)
    if not folder.is_dir():
        result.problems.append(f'{folder} is not a folder')
        return result
    metadata = None
    if not (folder / MODEL_FILE_NAME).is_file():
        graphs = sorted(str(p.relative_to(folder)) for p in folder.rglob('*.pb'))
        hint = (f'; it holds the TensorFlow graph {graphs[0]}: convert it with '
                f'`deepracer model import {folder}`') if graphs else ''
        result.problems.append(f'missing file {MODEL_FILE_NAME}{hint}')
    if not (folder / METADATA_FILE_NAME).is_file():
        result.problems.append(f'missing file {METADATA_FILE_NAME}: without it the outputs '
                               'of the network mean nothing')
    else:
        try:
            metadata = load_metadata(folder / METADATA_FILE_NAME)
        except MetadataError as error:
            result.problems.append(_relative(str(error), folder))
    if metadata is not None:
        if metadata.unsupported_sensors:
            names = ', '.join(s.value for s in metadata.unsupported_sensors)
            result.problems.append(f'sensor {names} is not supported: this stack drives '
                                   'single-camera models (FRONT_FACING_CAMERA) only')
        problems, warnings = range_problems(metadata)
        result.problems += problems
        result.warnings += warnings
    if result.problems:
        return result
    start = time.perf_counter()
    try:
        result.policy = Policy.load(folder, intra_op_threads=1)
    except ModelError as error:
        result.problems.append(_relative(str(error), folder))
    result.load_seconds = time.perf_counter() - start
    return result


def describe_action_space(metadata: ModelMetadata) -> str:
    space = metadata.action_space
    if isinstance(space, ContinuousActionSpace):
        steering, speed = space.steering_angle_deg, space.speed_mps
        return (f'continuous, steering {steering.low:g}..{steering.high:g} deg, '
                f'speed {speed.low:g}..{speed.high:g} m/s')
    angles = [a.steering_angle_deg for a in space.actions]
    speeds = [a.speed_mps for a in space.actions]
    speed_text = f'{min(speeds):g}' if min(speeds) == max(speeds) \
        else f'{min(speeds):g}..{max(speeds):g}'
    return (f'discrete, {len(space.actions)} actions, steering {min(angles):g}..'
            f'{max(angles):g} deg, speed {speed_text} m/s')


def describe_policy(policy: Policy) -> str:
    spec_in = policy.input_spec
    dims = 'x'.join(str(d) for d in spec_in.shape)
    return (f'{describe_action_space(policy.metadata)}; input {spec_in.layout.value} {dims}; '
            f'{_size_text(policy.folder)}')


def _size_text(folder: Path) -> str:
    total = sum(p.stat().st_size for p in folder.rglob('*') if p.is_file())
    return f'{total / 1e6:.1f} MB'


# --- list -----------------------------------------------------------------------------------

@dataclass
class ListedModel:
    name: str
    folder: Path
    summary: str
    status: str  # 'ok', 'not converted', 'broken: ...', 'shadowed by ...'
    bundled: bool


def _bundled_models_dir() -> Path | None:
    try:
        return paths.share_path('models').resolve()
    except FileNotFoundError:
        return None


def find_models(search_dirs: list[Path]) -> list[tuple[Path, list[ListedModel]]]:
    """The model folders of each search folder (in lookup order) with their state."""
    bundled_dir = _bundled_models_dir()
    seen: dict[str, Path] = {}
    listing = []
    for directory in search_dirs:
        models = []
        candidates = sorted(p for p in directory.iterdir() if p.is_dir()
                            and not p.name.startswith('.')) if directory.is_dir() else []
        for folder in candidates:
            if not any((folder / f).exists() for f in (MODEL_FILE_NAME, METADATA_FILE_NAME)) \
                    and not any(folder.rglob('*.pb')):
                continue  # not a model folder
            models.append(_listed(folder, directory.resolve() == bundled_dir, seen))
            seen.setdefault(folder.name, directory)
        listing.append((directory, models))
    return listing


def _listed(folder: Path, bundled: bool, seen: dict[str, Path]) -> ListedModel:
    validation = validate_folder(folder)
    if validation.ok and validation.policy is not None:
        summary = describe_policy(validation.policy)
        status = 'ok'
    else:
        try:
            summary = describe_action_space(load_metadata(folder / METADATA_FILE_NAME))
        except MetadataError:
            summary = '-'
        not_converted = not (folder / MODEL_FILE_NAME).exists() and any(folder.rglob('*.pb'))
        status = ('not converted (TensorFlow .pb): run `deepracer model import '
                  f'{folder}`') if not_converted else f'BROKEN: {validation.problems[0]}'
        summary += f'; {_size_text(folder)}'
    if folder.name in seen:
        status += f' (shadowed by the model of that name in {seen[folder.name]})'
    return ListedModel(folder.name, folder, summary, status, bundled)


# --- load (ROS) -----------------------------------------------------------------------------

class NodeUnavailable(RuntimeError):
    """The inference node does not answer; the message says how to start it."""


def set_model_parameter(model: str, node_name: str = INFERENCE_NODE, timeout_s: float = 5.0,
                        context=None) -> str | None:
    """Set the inference node's `model` parameter; None when swapped, else the node's
    reason. Raises NodeUnavailable when the node does not answer within timeout_s."""
    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    own_context = context is None
    context = context or Context()
    if own_context:
        rclpy.init(context=context)
    node = rclpy.create_node('deepracer_model_load', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    prefix = node_name if node_name.startswith('/') else f'/{node_name}'
    try:
        client = node.create_client(SetParameters, f'{prefix}/set_parameters')
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                raise NodeUnavailable(
                    f'no inference node at {prefix} (ROS_DOMAIN_ID must match the car): start '
                    'it with `ros2 launch deepracer_nodes car.launch.py` or '
                    '`ros2 run deepracer_nodes inference_node`')
            executor.spin_once(timeout_sec=0.05)
        request = SetParameters.Request(
            parameters=[Parameter('model', value=model).to_parameter_msg()])
        # A load of a large model takes a moment on the car: wait for the answer in full.
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=max(timeout_s, 30.0))
        if not future.done() or future.result() is None:
            raise NodeUnavailable(f'{prefix} did not answer the parameter change')
        result = future.result().results[0]
        return None if result.successful else (result.reason or 'refused without a reason')
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        if own_context:
            context.try_shutdown()


# --- command line ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest='model_command', metavar='ACTION', required=True)
    importer = actions.add_parser(
        'import', help='import a DeepRacer console model (model.tar.gz or a folder)',
        description='Extract safely, convert the TensorFlow graph to ONNX (needs the convert '
                    'extra) or take model.onnx as is, check, and store it by name.')
    importer.add_argument('source', help='model.tar.gz (.tgz, .tar, .zip) or a folder')
    importer.add_argument('--name', help='model name (default: the archive or folder name)')
    importer.add_argument('--output', help='models folder to store it in (default '
                                           f'{paths.user_models_dir()})')
    importer.add_argument('--force', action='store_true',
                          help='replace an existing model of that name')
    importer.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                          help='largest output difference allowed between TensorFlow and '
                               'the converted model (default %(default)g)')
    validator = actions.add_parser('validate', help='check a model folder; exits 1 if it '
                                                    'cannot drive')
    validator.add_argument('model', help='model folder, or a model name')
    validator.add_argument('--models-dir', help='extra folder searched first for names')
    lister = actions.add_parser('list', help='the installed models, in lookup order')
    lister.add_argument('--models-dir', help='extra folder searched first (as the inference '
                                             "node's models_dir parameter)")
    loader = actions.add_parser('load', help='swap the model of the running inference node')
    loader.add_argument('model', help='model name (or folder path on the car)')
    loader.add_argument('--node', default=INFERENCE_NODE,
                        help='inference node name (default %(default)s)')
    loader.add_argument('--timeout', type=float, default=5.0,
                        help='seconds to wait for the node (default %(default)g)')


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    result = import_model(args.source, args.output, args.name, args.force,
                          tolerance=args.tolerance)
    out.write(f'imported {result.name} -> {result.folder}\n')
    conversion = result.record.get('conversion')
    if conversion:
        versions = conversion['versions']
        out.write(f'  converted {result.record["model_file"]} with tf2onnx '
                  f'{versions.get("tf2onnx", "?")} (TensorFlow {versions.get("tensorflow", "?")}'
                  f', opset {conversion["opset"]}); max difference vs TensorFlow on '
                  f'{conversion["frames_compared"]} frames: '
                  f'{conversion["max_abs_diff_vs_tensorflow"]:.2g}\n')
    else:
        out.write(f'  took {result.record["model_file"]} as is (no conversion needed)\n')
    out.write(f'  {result.summary}\n')
    out.write(f'  import {result.seconds:.2f} s, load check {result.load_seconds:.3f} s\n')
    out.write(f'drive it: deepracer model load {result.name}   (or the car launch file\'s '
              f'model:={result.name})\n')
    return 0


def _resolve(name_or_path: str, models_dir: str | None) -> Path:
    return resolve_model(name_or_path, default_search_dirs([models_dir] if models_dir else []))


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    try:
        folder = _resolve(args.model, args.models_dir)
    except ModelError as error:
        out.write(f'INVALID: {error}\n')
        return 1
    result = validate_folder(folder)
    for warning in result.warnings:
        out.write(f'warning: {warning}\n')
    if not result.ok:
        out.write(f'INVALID {folder}:\n')
        for problem in result.problems:
            out.write(f'  - {problem}\n')
        return 1
    out.write(f'OK {folder.name}: {describe_policy(result.policy)}; loads in '
              f'{result.load_seconds * 1000:.0f} ms\n')
    record = folder / IMPORT_RECORD_FILE_NAME
    if record.is_file():
        out.write(f'  {_record_summary(record)}\n')
    return 0


def _record_summary(path: Path) -> str:
    try:
        record = json.loads(path.read_text(encoding='utf-8'))
        conversion = record.get('conversion')
        text = f'imported from {record["source"]} on {record["imported_at"]}'
        if conversion:
            difference = conversion['max_abs_diff_vs_tensorflow']
            text += (f', converted with tf2onnx {conversion["versions"].get("tf2onnx", "?")}, '
                     f'max difference vs TensorFlow {difference:.2g}')
        return text
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f'unreadable {IMPORT_RECORD_FILE_NAME}: {error}'


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    listing = find_models(default_search_dirs([args.models_dir] if args.models_dir else []))
    bundled_dir = _bundled_models_dir()
    for directory, models in listing:
        bundled = bundled_dir is not None and directory.resolve() == bundled_dir
        state = '' if directory.is_dir() else ' (does not exist)'
        out.write(f'{directory}{" (bundled with the package)" if bundled else ""}{state}\n')
        if directory.is_dir() and not models:
            out.write('  (no models)\n')
        width = max((len(m.name) for m in models), default=0)
        for model in models:
            out.write(f'  {model.name:<{width}}  {model.status}: {model.summary}\n')
    return 0


def cmd_load(args: argparse.Namespace, out: TextIO, err: TextIO, context=None) -> int:
    reason = set_model_parameter(args.model, args.node, args.timeout, context)
    if reason is not None:
        err.write(f'refused by {args.node}, the running model keeps driving: {reason}\n')
        return 1
    out.write(f'{args.node} now drives {args.model}\n')
    return 0


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None,
        context=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: tests capture them
    command = args.model_command
    try:
        if command == 'import':
            return cmd_import(args, out)
        if command == 'validate':
            return cmd_validate(args, out)
        if command == 'list':
            return cmd_list(args, out)
        if command == 'load':
            return cmd_load(args, out, err, context)
    except (ValueError, NodeUnavailable, OSError) as error:
        # ArchiveError, MetadataError, ConversionError, ModelError, ModelImportError are
        # ValueErrors with a message for the user; OSError: disk full, permissions.
        err.write(f'deepracer model {command}: {error}\n')
        return 1
    raise ValueError(f'unknown action {command!r}')
