"""Calibration: DeepRacer's ratio -> duty mapping, validation, calibration.json both ways."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepracer_nodes.core import calibration as cal
from deepracer_nodes.core.calibration import (
    Calibration, CalibrationError, ChannelCalibration, FACTORY_STEERING, FACTORY_THROTTLE)

# DeepRacer's factory calibration.json, as the device writes it (REFERENCE.md).
FACTORY_JSON = {'Calibration': {
    'Servo': {'max': 1700000, 'mid': 1450000, 'min': 1200000, 'polarity': 1},
    'Motor': {'max': 1603500, 'mid': 1446000, 'min': 1311000, 'polarity': -1},
    'version': 1}}


def test_factory_defaults_are_deepracers():
    assert (FACTORY_STEERING.min_ns, FACTORY_STEERING.mid_ns, FACTORY_STEERING.max_ns,
            FACTORY_STEERING.polarity) == (1_200_000, 1_450_000, 1_700_000, 1)
    assert (FACTORY_THROTTLE.min_ns, FACTORY_THROTTLE.mid_ns, FACTORY_THROTTLE.max_ns,
            FACTORY_THROTTLE.polarity) == (1_311_000, 1_446_000, 1_603_500, -1)


@pytest.mark.parametrize('ratio, expected', [
    (0.0, 1_450_000), (1.0, 1_700_000), (-1.0, 1_200_000), (0.5, 1_575_000),
    (-0.5, 1_325_000), (0.1, 1_475_000)])
def test_steering_ratio_maps_like_deepracer(ratio, expected):
    assert FACTORY_STEERING.duty_ns(ratio) == expected


@pytest.mark.parametrize('ratio, expected', [
    # Polarity -1: forward throttle (positive ratio) goes DOWN from mid towards min.
    (0.0, 1_446_000), (1.0, 1_311_000), (-1.0, 1_603_500), (0.5, 1_378_500),
    (-0.5, 1_524_750)])
def test_throttle_polarity_reverses_direction(ratio, expected):
    assert FACTORY_THROTTLE.duty_ns(ratio) == expected


@pytest.mark.parametrize('ratio', [math.nan, math.inf, -math.inf, 'garbage', None, [1]])
def test_non_finite_or_garbage_ratio_gives_neutral(ratio):
    assert FACTORY_STEERING.duty_ns(ratio) == FACTORY_STEERING.mid_ns


@pytest.mark.parametrize('ratio, expected', [(7.0, 1_700_000), (-1e300, 1_200_000)])
def test_ratio_outside_unit_range_is_clamped(ratio, expected):
    assert FACTORY_STEERING.duty_ns(ratio) == expected


channels = st.tuples(st.integers(1, 19_999_997), st.integers(1, 19_999_997),
                     st.integers(1, 19_999_997), st.sampled_from([1, -1])).map(
    lambda t: (sorted(t[:3]), t[3])).filter(
    lambda t: t[0][0] < t[0][1] < t[0][2]).map(
    lambda t: ChannelCalibration(*t[0], polarity=t[1]))


@given(channel=channels, ratio=st.floats(allow_nan=True, allow_infinity=True))
def test_duty_always_inside_calibrated_range(channel, ratio):
    duty = channel.duty_ns(ratio)
    assert isinstance(duty, int)
    assert channel.min_ns <= duty <= channel.max_ns


@given(channel=channels, ratio=st.floats(-1.0, 1.0))
def test_ratio_from_duty_inverts_duty(channel, ratio):
    duty = channel.duty_ns(ratio)
    span = min(channel.mid_ns - channel.min_ns, channel.max_ns - channel.mid_ns)
    # Duty cycles are whole ns: the round trip is exact to half a ns over the span.
    assert channel.ratio_from_duty(duty) == pytest.approx(ratio, abs=0.5 / span + 1e-12)


@pytest.mark.parametrize('kwargs, message', [
    (dict(min_ns=1_500_000, mid_ns=1_450_000, max_ns=1_700_000),
     'min_ns (1500000) must be less than mid_ns (1450000)'),
    (dict(min_ns=1_200_000, mid_ns=1_450_000, max_ns=1_450_000),
     'mid_ns (1450000) must be less than max_ns (1450000)'),
    (dict(min_ns=0, mid_ns=1_450_000, max_ns=1_700_000),
     'min_ns must be inside (0, 20000000) ns, got 0'),
    (dict(min_ns=1_200_000, mid_ns=1_450_000, max_ns=20_000_000),
     'max_ns must be inside (0, 20000000) ns, got 20000000'),
    (dict(min_ns=1_200_000, mid_ns=1_450_000, max_ns=1_700_000, polarity=0),
     'polarity must be 1 or -1, got 0'),
    (dict(min_ns=1_200_000.0, mid_ns=1_450_000, max_ns=1_700_000),
     'min_ns must be an integer, got 1200000.0'),
    (dict(min_ns=1_200_000, mid_ns=True, max_ns=1_700_000),
     'mid_ns must be an integer, got True'),
])
def test_invalid_channel_raises_exact_message(kwargs, message):
    with pytest.raises(CalibrationError) as raised:
        ChannelCalibration(**kwargs)
    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_speed_scale=1.5), 'max_speed_scale must be in [0, 1], got 1.5'),
    (dict(max_speed_scale=math.nan), 'max_speed_scale must be in [0, 1], got nan'),
    (dict(max_speed_mps=0.0), 'max_speed_mps must be a positive number, got 0.0'),
    (dict(max_speed_mps='fast'), "max_speed_mps must be a number, got 'fast'"),
])
def test_invalid_speed_settings_raise(kwargs, message):
    with pytest.raises(CalibrationError) as raised:
        Calibration(**kwargs)
    assert str(raised.value) == message


def test_with_changes_validates():
    changed = cal.FACTORY_CALIBRATION.with_changes(max_speed_scale=0.5)
    assert changed.max_speed_scale == 0.5
    with pytest.raises(CalibrationError):
        cal.FACTORY_CALIBRATION.with_changes(max_speed_scale=-0.1)


def test_reads_deepracers_factory_file(tmp_path):
    path = tmp_path / 'calibration.json'
    path.write_text(json.dumps(FACTORY_JSON))
    loaded = cal.load_calibration(path)
    assert not loaded.factory_defaults
    assert loaded.calibration == cal.FACTORY_CALIBRATION


def test_missing_file_gives_factory_defaults_and_says_so(tmp_path):
    loaded = cal.load_calibration(tmp_path / 'nope.json')
    assert loaded.factory_defaults
    assert loaded.calibration == cal.FACTORY_CALIBRATION
    assert 'not found' in loaded.message and 'factory defaults' in loaded.message


def test_written_file_keeps_deepracers_part_identical(tmp_path):
    path = tmp_path / 'calibration.json'
    custom = Calibration(
        steering=ChannelCalibration(1_100_000, 1_400_000, 1_750_000, -1),
        throttle=FACTORY_THROTTLE, max_speed_mps=3.0, max_speed_scale=0.6)
    cal.save_calibration(path, custom)
    content = json.loads(path.read_text())
    assert content['Calibration'] == {
        'Servo': {'max': 1_750_000, 'mid': 1_400_000, 'min': 1_100_000, 'polarity': -1},
        'Motor': FACTORY_JSON['Calibration']['Motor'], 'version': 1}
    assert content[cal.EXTRA_KEY] == {'max_speed_mps': 3.0, 'max_speed_scale': 0.6}
    assert cal.load_calibration(path).calibration == custom
    # Only the file itself is left in the folder: the temporary file was renamed over it.
    assert os.listdir(tmp_path) == ['calibration.json']


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / 'calibration.json'
    path.write_text('old')
    cal.save_calibration(path, cal.FACTORY_CALIBRATION)
    assert cal.load_calibration(path).calibration == cal.FACTORY_CALIBRATION


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / 'calibration.json'
    path.write_text(json.dumps(FACTORY_JSON))

    def disk_full(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(cal.os, 'fsync', disk_full)
    with pytest.raises(CalibrationError, match='cannot be written: .*No space left'):
        cal.save_calibration(path, Calibration(max_speed_scale=0.3))
    assert json.loads(path.read_text()) == FACTORY_JSON
    assert os.listdir(tmp_path) == ['calibration.json']


def test_save_into_a_folder_that_is_a_file_raises(tmp_path):
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    with pytest.raises(CalibrationError, match='cannot be written'):
        cal.save_calibration(blocker / 'calibration.json', cal.FACTORY_CALIBRATION)


def _broken(mutate):
    content = json.loads(json.dumps(FACTORY_JSON))
    mutate(content)
    return json.dumps(content)


@pytest.mark.parametrize('text, message', [
    ('{"Calibration": ', 'not valid JSON: Expecting value: line 1 column 17 (char 16)'),
    ('[]', 'top level must be a JSON object'),
    ('{}', 'missing "Calibration"'),
    (_broken(lambda c: c['Calibration'].pop('Servo')), 'missing "Calibration.Servo" (steering)'),
    (_broken(lambda c: c['Calibration']['Motor'].pop('mid')),
     'missing "Calibration.Motor.mid" (throttle)'),
    (_broken(lambda c: c['Calibration']['Servo'].update(min=1_500_000)),
     '"Calibration.Servo" (steering): min_ns (1500000) must be less than mid_ns (1450000)'),
    (_broken(lambda c: c['Calibration']['Motor'].update(polarity=2)),
     '"Calibration.Motor" (throttle): polarity must be 1 or -1, got 2'),
    (_broken(lambda c: c['Calibration']['Motor'].update(max='big')),
     '"Calibration.Motor" (throttle): max_ns must be an integer, got \'big\''),
    (_broken(lambda c: c.update(deepracer_nodes={'max_speed_scale': 2})),
     '"deepracer_nodes": max_speed_scale must be in [0, 1], got 2.0'),
])
def test_corrupt_file_raises_with_path_and_exact_problem(tmp_path, text, message):
    path = tmp_path / 'calibration.json'
    path.write_text(text)
    with pytest.raises(CalibrationError) as raised:
        cal.load_calibration(path)
    assert str(raised.value) == f'{path}: {message}'


def test_integral_floats_are_accepted(tmp_path):
    content = json.loads(json.dumps(FACTORY_JSON))
    content['Calibration']['Servo']['mid'] = 1_450_000.0
    assert cal.from_json_dict(content).steering.mid_ns == 1_450_000


def test_unreadable_file_raises(tmp_path):
    path = tmp_path / 'calibration.json'
    path.mkdir()  # a folder where the file should be
    with pytest.raises(CalibrationError, match='cannot be read'):
        cal.load_calibration(path)


def test_flat_names_round_trip():
    flat = cal.to_flat(cal.FACTORY_CALIBRATION)
    assert flat['steering_min_ns'] == 1_200_000 and flat['throttle_polarity'] == -1
    assert set(flat) == set(cal.FLAT_NAMES)
    assert cal.with_flat_changes(cal.FACTORY_CALIBRATION, flat) == cal.FACTORY_CALIBRATION


def test_flat_changes_apply_together():
    # Moving the whole range down needs min, mid and max at once: one at a time would fail.
    changed = cal.with_flat_changes(cal.FACTORY_CALIBRATION, {
        'steering_min_ns': 900_000, 'steering_mid_ns': 1_000_000, 'steering_max_ns': 1_100_000,
        'max_speed_scale': 0.25})
    assert (changed.steering.min_ns, changed.steering.mid_ns, changed.steering.max_ns) == (
        900_000, 1_000_000, 1_100_000)
    assert changed.max_speed_scale == 0.25 and changed.throttle == FACTORY_THROTTLE


@pytest.mark.parametrize('changes, message', [
    ({'steering_mid_ns': 1_100_000},
     'steering: min_ns (1200000) must be less than mid_ns (1100000)'),
    ({'throttle_polarity': 3}, 'throttle: polarity must be 1 or -1, got 3'),
    ({'steering_offset': 3}, 'unknown calibration values: steering_offset'),
])
def test_flat_changes_are_validated(changes, message):
    with pytest.raises(CalibrationError) as raised:
        cal.with_flat_changes(cal.FACTORY_CALIBRATION, changes)
    assert str(raised.value) == message
