"""model_metadata.json parsing and writing."""

from __future__ import annotations

import copy
import json

import pytest

from deepracer_nodes.core.metadata import (
    Action, ActionSpaceType, ContinuousActionSpace, DiscreteActionSpace, MetadataError,
    ModelMetadata, Range, Sensor, TrainingAlgorithm, dumps_metadata, load_metadata,
    loads_metadata, parse_metadata, write_metadata)

CONSOLE_DISCRETE = {
    'action_space': [
        {'steering_angle': -30, 'speed': 0.8, 'index': 0},
        {'steering_angle': 0, 'speed': 1.6, 'index': 1},
        {'steering_angle': 30.0, 'speed': 0.8, 'index': 2},
    ],
    'sensor': ['FRONT_FACING_CAMERA'],
    'neural_network': 'DEEP_CONVOLUTIONAL_NETWORK_SHALLOW',
    'training_algorithm': 'clipped_ppo',
    'action_space_type': 'discrete',
    'version': '5',
}
CONTINUOUS = {
    'action_space': {'steering_angle': {'low': -30.0, 'high': 30.0},
                     'speed': {'low': 0.5, 'high': 2.5}},
    'sensor': ['FRONT_FACING_CAMERA'],
    'neural_network': 'DEEP_CONVOLUTIONAL_NETWORK_SHALLOW',
    'training_algorithm': 'sac',
    'action_space_type': 'continuous',
    'version': '4',
}


def test_console_discrete_export_with_index_keys():
    metadata = parse_metadata(CONSOLE_DISCRETE)
    assert metadata.action_space == DiscreteActionSpace(
        (Action(-30.0, 0.8), Action(0.0, 1.6), Action(30.0, 0.8)))
    assert metadata.action_space_type is ActionSpaceType.DISCRETE
    assert metadata.action_space.output_size == 3
    assert metadata.action_space.max_speed_mps == 1.6
    assert metadata.action_space.max_abs_steering_deg == 30.0
    assert metadata.sensors == (Sensor.FRONT_FACING_CAMERA,)
    assert metadata.training_algorithm is TrainingAlgorithm.CLIPPED_PPO
    assert metadata.neural_network == 'DEEP_CONVOLUTIONAL_NETWORK_SHALLOW'
    assert metadata.version == '5'
    assert not metadata.unsupported_sensors


def test_continuous_space():
    metadata = parse_metadata(CONTINUOUS)
    assert metadata.action_space == ContinuousActionSpace(Range(-30.0, 30.0), Range(0.5, 2.5))
    assert metadata.action_space.output_size == 2
    assert metadata.action_space.max_speed_mps == 2.5
    assert metadata.training_algorithm is TrainingAlgorithm.SAC


def test_old_minimal_file_takes_the_defaults():
    metadata = parse_metadata({'action_space': [{'steering_angle': 0, 'speed': 1}]})
    assert metadata.action_space_type is ActionSpaceType.DISCRETE
    assert metadata.sensors == (Sensor.OBSERVATION,)
    assert metadata.training_algorithm is TrainingAlgorithm.CLIPPED_PPO
    assert metadata.neural_network is None and metadata.version is None


def test_unknown_informative_keys_are_kept_and_written_back(tmp_path):
    data = dict(CONSOLE_DISCRETE, lidar_config={'num_sectors': 8}, preprocess_type='GREY_SCALE')
    metadata = parse_metadata(data)
    assert metadata.extra == {'lidar_config': {'num_sectors': 8}, 'preprocess_type': 'GREY_SCALE'}
    path = write_metadata(tmp_path, metadata)
    assert path == tmp_path / 'model_metadata.json'
    assert load_metadata(path) == metadata
    assert json.loads(path.read_text())['preprocess_type'] == 'GREY_SCALE'


@pytest.mark.parametrize('data', [CONSOLE_DISCRETE, CONTINUOUS])
def test_round_trip(data, tmp_path):
    metadata = parse_metadata(data)
    assert loads_metadata(dumps_metadata(metadata)) == metadata
    written = json.loads(dumps_metadata(metadata))
    assert written['action_space_type'] == data['action_space_type']


def test_writing_refuses_what_reading_would_refuse(tmp_path):
    bad = ModelMetadata(action_space=ContinuousActionSpace(Range(10.0, -10.0), Range(0.5, 1.0)))
    with pytest.raises(MetadataError, match='steering_angle.high'):
        write_metadata(tmp_path / 'model_metadata.json', bad)
    assert not (tmp_path / 'model_metadata.json').exists()


def test_lidar_and_stereo_models_parse_but_are_flagged():
    metadata = parse_metadata(dict(CONSOLE_DISCRETE, sensor=['STEREO_CAMERAS', 'LIDAR']))
    assert metadata.unsupported_sensors == (Sensor.STEREO_CAMERAS, Sensor.LIDAR)
    assert not parse_metadata(dict(CONSOLE_DISCRETE, sensor=['observation'])).unsupported_sensors


def _without(data, key):
    data = copy.deepcopy(data)
    del data[key]
    return data


def _with_action(change):
    data = copy.deepcopy(CONSOLE_DISCRETE)
    change(data['action_space'][1])
    return data


def _continuous_with(path, value):
    data = copy.deepcopy(CONTINUOUS)
    data['action_space'][path[0]][path[1]] = value
    return data


MALFORMED = [
    ([], 'must be a JSON object'),
    (_without(CONSOLE_DISCRETE, 'action_space'), "no 'action_space'"),
    (dict(CONSOLE_DISCRETE, action_space=[]), 'non-empty list'),
    (dict(CONSOLE_DISCRETE, action_space='fast'), "'fast'"),
    (dict(CONSOLE_DISCRETE, action_space=[1, 2]), r'action_space\[0\] must be a JSON object'),
    (_with_action(lambda a: a.pop('speed')), r"action_space\[1\] has no 'speed'"),
    (_with_action(lambda a: a.update(speed='1.6')), r"action_space\[1\].speed must be a number"),
    (_with_action(lambda a: a.update(speed=True)), r'action_space\[1\].speed must be a number'),
    (_with_action(lambda a: a.update(speed=-1)), r'action_space\[1\].speed must be >= 0'),
    (_with_action(lambda a: a.update(steering_angle=float('nan'))), 'must be finite'),
    (_with_action(lambda a: a.update(steering_angle=95)), r'within \+-90'),
    (_with_action(lambda a: a.update(index=7)), r'index is 7 but the action is at position 1'),
    (dict(CONSOLE_DISCRETE, action_space_type='discrete_ish'), "'discrete_ish' is not one of"),
    (dict(CONSOLE_DISCRETE, action_space_type='continuous'), 'continuous model must be a JSON'),
    (dict(CONTINUOUS, action_space_type='discrete'), "set action_space_type to 'continuous'"),
    (_continuous_with(('speed', 'high'), 0.5), r'speed.high \(0.5\) must be greater'),
    (_continuous_with(('steering_angle', 'low'), 40), r'steering_angle.high \(30\) must be'),
    (_continuous_with(('speed', 'low'), None), 'action_space.speed.low must be a number'),
    (dict(CONTINUOUS, action_space={'speed': {'low': 1, 'high': 2}}), "no 'steering_angle'"),
    (dict(CONSOLE_DISCRETE, sensor='FRONT_FACING_CAMERA'), 'sensor must be a non-empty list'),
    (dict(CONSOLE_DISCRETE, sensor=[]), 'sensor must be a non-empty list'),
    (dict(CONSOLE_DISCRETE, sensor=['SONAR']), r"sensor\[0\] 'SONAR' is not one of"),
    (dict(CONSOLE_DISCRETE, training_algorithm='dqn'), "training_algorithm 'dqn' is not one"),
    (dict(CONSOLE_DISCRETE, version=['5']), 'version must be text'),
]


@pytest.mark.parametrize('data,message', MALFORMED)
def test_every_malformed_case_names_field_and_value(data, message):
    with pytest.raises(MetadataError, match=message):
        parse_metadata(data)


def test_metadata_error_is_a_value_error():
    assert issubclass(MetadataError, ValueError)


def test_garbled_json_names_the_file_and_position(tmp_path):
    path = tmp_path / 'model_metadata.json'
    path.write_text('{"action_space": [ {"steering_angle": 0, ')
    with pytest.raises(MetadataError, match=f'{path}: not valid JSON: .*line 1'):
        load_metadata(path)


def test_file_errors(tmp_path):
    with pytest.raises(MetadataError, match='does not exist'):
        load_metadata(tmp_path / 'model_metadata.json')
    binary = tmp_path / 'binary.json'
    binary.write_bytes(b'\xff\xfe\x00garbage')
    with pytest.raises(MetadataError, match='cannot read'):
        load_metadata(binary)
    bad_field = tmp_path / 'bad.json'
    bad_field.write_text(json.dumps(dict(CONSOLE_DISCRETE, training_algorithm='dqn')))
    with pytest.raises(MetadataError, match=f"{bad_field}: training_algorithm 'dqn'"):
        load_metadata(bad_field)


def test_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / 'model_metadata.json'
    path.write_bytes(b'\xef\xbb\xbf' + json.dumps(CONSOLE_DISCRETE).encode())
    assert load_metadata(path).action_space.output_size == 3
