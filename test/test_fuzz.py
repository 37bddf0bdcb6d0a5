"""Fuzzing every parser of outside input (deepracer_nodes.fuzz holds the properties; the
benchmark runs the same ones with 10 000 examples per parser).

Each property: every generated input is either accepted (and what comes out is sane:
duty cycles inside the calibration, files only inside the target folder, ...) or
rejected with the parser's own error type and a message saying what is wrong. Anything
else (another exception, a value out of range) fails the test with the input, shrunk.
CI size: FUZZ_EXAMPLES per parser (environment DEEPRACER_FUZZ_EXAMPLES overrides it).
"""

from __future__ import annotations

import json
import os

import pytest

from deepracer_nodes import fuzz
from deepracer_nodes.core import calibration as cal
from deepracer_nodes.core import metadata as md

FUZZ_EXAMPLES = int(os.environ.get('DEEPRACER_FUZZ_EXAMPLES', '300'))


@pytest.mark.parametrize('target', sorted(fuzz.TARGETS))
def test_parser_accepts_or_rejects_clearly(target):
    if not fuzz.TARGETS[target].available():
        pytest.skip(f'{target}: its parser is not in the tree yet')
    report = fuzz.run_target(target, FUZZ_EXAMPLES, raise_failures=True)
    assert report.clean, report.failures
    assert report.examples >= FUZZ_EXAMPLES
    # The strategies must reach both sides, or the property proves little.
    assert report.accepted > 0, f'{target}: no generated input was accepted'
    if target != 'drive_command':  # a command is never refused: bad values mean neutral
        assert report.rejected > 0, f'{target}: no generated input was rejected'


def test_counting_mode_keeps_going_after_a_failure(monkeypatch):
    """The benchmark's mode: a failure is counted with its input, and the run goes on."""
    calls = []

    def flaky_checker():
        from contextlib import contextmanager

        @contextmanager
        def opened():
            def check(data):
                calls.append(data)
                if len(calls) % 2:
                    raise fuzz.FuzzFailure('crash', 'odd call')
                return fuzz.Outcome(False, 'rejected for a reason')
            yield check
        return opened()

    target = fuzz.TARGETS['metadata']
    monkeypatch.setitem(fuzz.TARGETS, 'metadata', fuzz.FuzzTarget(
        target.name, target.parser, target.strategy, flaky_checker))
    report = fuzz.run_target('metadata', 40)
    assert report.examples == len(calls) >= 40
    assert report.crashes == (len(calls) + 1) // 2 and report.rejected == len(calls) // 2
    assert report.failures and 'odd call' in report.failures[0]
    assert not report.clean


def test_a_parser_error_of_another_type_is_a_crash():
    with pytest.raises(fuzz.FuzzFailure, match='crash: KeyError'):
        fuzz._rejected(KeyError('x'), md.MetadataError)
    with pytest.raises(fuzz.FuzzFailure, match='unclear_error'):
        fuzz._rejected(md.MetadataError(''), md.MetadataError)
    assert not fuzz._rejected(md.MetadataError('action_space is missing'),
                              md.MetadataError).accepted


# --- the bugs the fuzzing found, each as its smallest input -----------------------------------

NESTED_JSON = '[' * 100_000
HUGE_NUMBER_JSON = '{"x": ' + '9' * 5_000 + '}'
HUGE_INTEGER_ANGLE = json.dumps({'action_space': [{'steering_angle': 10**400, 'speed': 1.0}]})
HUGE_INTEGER_SPEED = json.dumps({'Calibration': {
    'Servo': cal.FACTORY_STEERING.to_deepracer(), 'Motor': cal.FACTORY_THROTTLE.to_deepracer()},
    'deepracer_nodes': {'max_speed_mps': 10**400}})


@pytest.mark.parametrize('text', [NESTED_JSON, HUGE_NUMBER_JSON, HUGE_INTEGER_ANGLE],
                         ids=['deeply-nested', 'number-over-4300-digits', 'integer-beyond-float'])
def test_hostile_metadata_is_a_metadata_error(tmp_path, text):
    path = tmp_path / md.METADATA_FILE_NAME
    path.write_text(text)
    with pytest.raises(md.MetadataError, match=str(path)):
        md.load_metadata(path)


@pytest.mark.parametrize('text', [NESTED_JSON, HUGE_NUMBER_JSON, HUGE_INTEGER_SPEED],
                         ids=['deeply-nested', 'number-over-4300-digits', 'integer-beyond-float'])
def test_hostile_calibration_is_a_calibration_error(tmp_path, text):
    path = tmp_path / 'calibration.json'
    path.write_text(text)
    with pytest.raises(cal.CalibrationError, match=str(path)):
        cal.load_calibration(path)


def test_route_file_with_an_unbalanced_header_is_a_value_error(tmp_path):
    import io

    import numpy as np

    from deepracer_nodes.sim.track import load_route

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((10, 6)))
    path = tmp_path / 'route.npy'
    path.write_bytes(buffer.getvalue().replace(b"'shape': (10, 6), ", b"'shape': (10, 6, "))
    with pytest.raises(ValueError, match='route'):
        load_route(path)
