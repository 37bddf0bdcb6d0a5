"""DeepRacer model_metadata.json: parse it into frozen dataclasses, and write it back.

The file comes from the DeepRacer console (or our own training) and tells the car
what the network's outputs mean. Angles in the file are DEGREES (positive = left)
and speeds m/s; the policy converts to radians (REP 103). Every problem raises
MetadataError naming the field and the bad value, so a user knows what to fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Union

from deepracer_nodes.core.json_input import JsonInputError, parse_json

METADATA_FILE_NAME = 'model_metadata.json'
# A steering angle of 90 degrees or more has no meaning for a car (tan() blows up).
MAX_ABS_STEERING_DEG = 90.0
# Keys the device reads; anything else in the file is informative and kept for round trips.
_KNOWN_KEYS = ('action_space', 'action_space_type', 'sensor', 'training_algorithm',
               'neural_network', 'version')


class MetadataError(ValueError):
    """A model_metadata.json that cannot be trusted to drive the car."""


class Sensor(str, Enum):
    """Sensors a DeepRacer model can be trained with."""

    FRONT_FACING_CAMERA = 'FRONT_FACING_CAMERA'
    STEREO_CAMERAS = 'STEREO_CAMERAS'
    LEFT_CAMERA = 'LEFT_CAMERA'
    LIDAR = 'LIDAR'
    SECTOR_LIDAR = 'SECTOR_LIDAR'
    # Old models name their single camera input 'observation'.
    OBSERVATION = 'observation'


class TrainingAlgorithm(str, Enum):
    CLIPPED_PPO = 'clipped_ppo'
    SAC = 'sac'


class ActionSpaceType(str, Enum):
    DISCRETE = 'discrete'
    CONTINUOUS = 'continuous'


# Sensors that feed one greyscale camera image, which is all this stack drives with.
SINGLE_CAMERA_SENSORS = frozenset({Sensor.FRONT_FACING_CAMERA, Sensor.LEFT_CAMERA,
                                   Sensor.OBSERVATION})


@dataclass(frozen=True)
class Action:
    """One discrete action: steering in degrees (positive = left), speed in m/s."""

    steering_angle_deg: float
    speed_mps: float


@dataclass(frozen=True)
class DiscreteActionSpace:
    """The network outputs one probability per action, in this order."""

    actions: tuple[Action, ...]

    type = ActionSpaceType.DISCRETE

    @property
    def output_size(self) -> int:
        return len(self.actions)

    @property
    def max_speed_mps(self) -> float:
        return max(action.speed_mps for action in self.actions)

    @property
    def max_abs_steering_deg(self) -> float:
        return max(abs(action.steering_angle_deg) for action in self.actions)


@dataclass(frozen=True)
class Range:
    low: float
    high: float


@dataclass(frozen=True)
class ContinuousActionSpace:
    """The network outputs [steering, speed] in [-1, 1], rescaled to these ranges."""

    steering_angle_deg: Range
    speed_mps: Range

    type = ActionSpaceType.CONTINUOUS
    output_size = 2

    @property
    def max_speed_mps(self) -> float:
        return self.speed_mps.high

    @property
    def max_abs_steering_deg(self) -> float:
        return max(abs(self.steering_angle_deg.low), abs(self.steering_angle_deg.high))


ActionSpace = Union[DiscreteActionSpace, ContinuousActionSpace]


@dataclass(frozen=True)
class ModelMetadata:
    action_space: ActionSpace
    sensors: tuple[Sensor, ...] = (Sensor.OBSERVATION,)
    training_algorithm: TrainingAlgorithm = TrainingAlgorithm.CLIPPED_PPO
    neural_network: str | None = None
    version: str | None = None
    # Informative keys we do not interpret (lidar_config, console extras), kept for writing.
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}),
                                     hash=False)

    @property
    def action_space_type(self) -> ActionSpaceType:
        return self.action_space.type

    @property
    def unsupported_sensors(self) -> tuple[Sensor, ...]:
        """Sensors this single-camera stack cannot feed (LiDAR, stereo)."""
        return tuple(s for s in self.sensors if s not in SINGLE_CAMERA_SENSORS)


# --- parsing ---------------------------------------------------------------------------------

def _number(value: Any, where: str) -> float:
    # bool is an int in Python; true/false is never a valid angle or speed.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetadataError(f'{where} must be a number, got {value!r}')
    if not math.isfinite(value):
        raise MetadataError(f'{where} must be finite, got {value!r}')
    return float(value)


def _steering(value: Any, where: str) -> float:
    angle = _number(value, where)
    if abs(angle) >= MAX_ABS_STEERING_DEG:
        raise MetadataError(
            f'{where} must be within +-{MAX_ABS_STEERING_DEG:g} degrees, got {value!r}')
    return angle


def _speed(value: Any, where: str) -> float:
    speed = _number(value, where)
    if speed < 0:
        raise MetadataError(f'{where} must be >= 0 m/s, got {value!r}')
    return speed


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MetadataError(f'{where} must be a JSON object, got {value!r}')
    return value


def _required(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise MetadataError(f'{where} has no {key!r} (keys: {sorted(mapping)})')
    return mapping[key]


def _parse_discrete(value: Any) -> DiscreteActionSpace:
    if not isinstance(value, list) or not value:
        raise MetadataError(
            f'action_space of a discrete model must be a non-empty list of actions, got {value!r}')
    actions = []
    for position, entry in enumerate(value):
        where = f'action_space[{position}]'
        entry = _object(entry, where)
        # Console exports number their actions; the network's output order is the list order,
        # so a disagreeing index would make us drive the wrong action: refuse it.
        if 'index' in entry and entry['index'] != position:
            raise MetadataError(
                f'{where}.index is {entry["index"]!r} but the action is at position {position}; '
                'indices must follow the list order')
        actions.append(Action(
            steering_angle_deg=_steering(_required(entry, 'steering_angle', where),
                                         f'{where}.steering_angle'),
            speed_mps=_speed(_required(entry, 'speed', where), f'{where}.speed')))
    return DiscreteActionSpace(tuple(actions))


def _parse_range(value: Any, where: str, check) -> Range:
    value = _object(value, where)
    low = check(_required(value, 'low', where), f'{where}.low')
    high = check(_required(value, 'high', where), f'{where}.high')
    if not high > low:
        raise MetadataError(f'{where}.high ({high:g}) must be greater than {where}.low ({low:g})')
    return Range(low, high)


def _parse_continuous(value: Any) -> ContinuousActionSpace:
    value = _object(value, 'action_space of a continuous model')
    return ContinuousActionSpace(
        steering_angle_deg=_parse_range(_required(value, 'steering_angle', 'action_space'),
                                        'action_space.steering_angle', _steering),
        speed_mps=_parse_range(_required(value, 'speed', 'action_space'),
                               'action_space.speed', _speed))


def _enum_value(enum: type[Enum], value: Any, where: str) -> Enum:
    try:
        return enum(value)
    except ValueError:
        known = ', '.join(repr(member.value) for member in enum)
        raise MetadataError(f'{where} {value!r} is not one of {known}') from None


def _parse_sensors(value: Any) -> tuple[Sensor, ...]:
    if not isinstance(value, list) or not value:
        raise MetadataError(f'sensor must be a non-empty list of sensor names, got {value!r}')
    return tuple(_enum_value(Sensor, name, f'sensor[{i}]') for i, name in enumerate(value))


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MetadataError(f'{key} must be text, got {value!r}')
    return str(value)


def parse_metadata(data: Any) -> ModelMetadata:
    """Build ModelMetadata from the decoded JSON of a model_metadata.json."""
    data = _object(data, 'model_metadata.json')
    space_type = _enum_value(ActionSpaceType, data.get('action_space_type', 'discrete'),
                             'action_space_type')
    action_space_json = _required(data, 'action_space', 'model_metadata.json')
    if space_type is ActionSpaceType.DISCRETE:
        if isinstance(action_space_json, dict):
            raise MetadataError(
                'action_space is an object (a continuous range) but action_space_type is '
                "'discrete'; set action_space_type to 'continuous'")
        action_space: ActionSpace = _parse_discrete(action_space_json)
    else:
        action_space = _parse_continuous(action_space_json)
    sensors = _parse_sensors(data['sensor']) if 'sensor' in data else (Sensor.OBSERVATION,)
    algorithm = _enum_value(TrainingAlgorithm, data.get('training_algorithm', 'clipped_ppo'),
                            'training_algorithm')
    extra = {key: value for key, value in data.items() if key not in _KNOWN_KEYS}
    return ModelMetadata(action_space=action_space, sensors=sensors,
                         training_algorithm=algorithm,
                         neural_network=_optional_text(data, 'neural_network'),
                         version=_optional_text(data, 'version'),
                         extra=MappingProxyType(extra))


def loads_metadata(text: str, source: str = 'model_metadata.json') -> ModelMetadata:
    """Parse the text of a model_metadata.json; source names it in error messages."""
    try:
        data = parse_json(text)
    except JsonInputError as error:
        raise MetadataError(f'{source}: {error}') from None
    try:
        return parse_metadata(data)
    except MetadataError as error:
        raise MetadataError(f'{source}: {error}') from None


def load_metadata(path: str | Path) -> ModelMetadata:
    """Read and parse a model_metadata.json file."""
    path = Path(path)
    try:
        # utf-8-sig: files edited on Windows often start with a byte-order mark.
        text = path.read_text(encoding='utf-8-sig')
    except FileNotFoundError:
        raise MetadataError(f'{path} does not exist') from None
    except (OSError, UnicodeDecodeError) as error:
        raise MetadataError(f'cannot read {path}: {error}') from None
    return loads_metadata(text, str(path))


# --- writing ---------------------------------------------------------------------------------

def metadata_to_dict(metadata: ModelMetadata) -> dict[str, Any]:
    """The JSON object of a model_metadata.json, as the DeepRacer console writes it."""
    space = metadata.action_space
    if isinstance(space, DiscreteActionSpace):
        action_space: Any = [
            {'steering_angle': action.steering_angle_deg, 'speed': action.speed_mps,
             'index': index}
            for index, action in enumerate(space.actions)]
    else:
        action_space = {
            'steering_angle': {'low': space.steering_angle_deg.low,
                               'high': space.steering_angle_deg.high},
            'speed': {'low': space.speed_mps.low, 'high': space.speed_mps.high}}
    data: dict[str, Any] = {
        'action_space': action_space,
        'action_space_type': space.type.value,
        'sensor': [sensor.value for sensor in metadata.sensors],
        'training_algorithm': metadata.training_algorithm.value,
    }
    if metadata.neural_network is not None:
        data['neural_network'] = metadata.neural_network
    if metadata.version is not None:
        data['version'] = metadata.version
    data.update(metadata.extra)
    return data


def dumps_metadata(metadata: ModelMetadata) -> str:
    # Round trip first, so we never write a file we would refuse to read.
    data = metadata_to_dict(metadata)
    parse_metadata(data)
    return json.dumps(data, indent=2) + '\n'


def write_metadata(path: str | Path, metadata: ModelMetadata) -> Path:
    """Write model_metadata.json (path may be the file or its folder); return the file path."""
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_FILE_NAME
    path.write_text(dumps_metadata(metadata), encoding='utf-8')
    return path
