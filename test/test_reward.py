"""User reward functions: loaded from a file, called every step with DeepRacer's params,
errors reported with the user's traceback, bad return values refused with a clear reason."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from deepracer_nodes.sim import track_library
from deepracer_nodes.sim.race import RaceConfig
from deepracer_nodes.sim.reward import RewardFunction, RewardFunctionError, check_reward
from deepracer_nodes.sim.session import RaceSession, SessionConfig, Status

REWARD_KEYS = {
    'all_wheels_on_track', 'x', 'y', 'heading', 'distance_from_center', 'is_left_of_center',
    'is_reversed', 'is_offtrack', 'progress', 'steps', 'speed', 'steering_angle',
    'track_width', 'track_length', 'waypoints', 'closest_waypoints'}

# The centre-line example of the DeepRacer documentation, in substance.
CENTRE_LINE = '''
def reward_function(params):
    SEEN.append(dict(params))
    marker = 0.25 * params['track_width']
    if params['distance_from_center'] <= marker:
        return 1.0
    return 1e-3

SEEN = []
'''


def write(folder: Path, text: str, name: str = 'reward.py') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def drive(session: RaceSession, steps: int, speed: float = 1.5,
          steering: float = 0.0) -> None:
    session.set_command(speed, steering)
    for _ in range(steps):
        session.advance()
        if session.status.final:
            break


@pytest.fixture(scope='module')
def loop():
    return track_library.make_track('loop')


def test_called_every_step_with_deepracer_params(tmp_path, loop):
    reward = RewardFunction.load(write(tmp_path, CENTRE_LINE))
    session = RaceSession(loop, RaceConfig(), SessionConfig(), reward)
    drive(session, 30)
    seen = reward.function.__globals__['SEEN']
    assert len(seen) == 30 == len(reward.rewards)
    assert all(set(params) == REWARD_KEYS for params in seen)
    assert [params['steps'] for params in seen] == list(range(1, 31))
    assert seen[-1]['speed'] == 1.5 and seen[-1]['steering_angle'] == 0.0
    assert seen[-1]['progress'] > seen[0]['progress'] > 0.0
    assert len(seen[0]['waypoints']) == loop.waypoint_count
    assert reward.rewards[0] == 1.0  # starts on the centre line
    assert session.state().reward == reward.rewards[-1]


def test_an_exception_stops_the_race_with_the_users_traceback(tmp_path, loop):
    path = write(tmp_path, '''
        def helper(params):
            return 1.0 / (params['steps'] - 3)

        def reward_function(params):
            return helper(params)
        ''')
    session = RaceSession(loop, RaceConfig(), SessionConfig(),
                          RewardFunction.load(path))
    drive(session, 10)
    assert session.status is Status.FAILED
    assert session.state().steps == 3
    error = session.state().error
    assert 'ZeroDivisionError' in error and 'at step 3' in error
    assert str(path) in error
    # The traceback names the user's lines, from the call down to the failing one.
    assert "return helper(params)" in error
    assert "return 1.0 / (params['steps'] - 3)" in error
    assert 'session.py' not in error


@pytest.mark.parametrize('value, reason', [
    ('None', 'got None (NoneType)'),
    ("'1.0'", "got '1.0' (str)"),
    ("float('nan')", 'got nan'),
    ("float('inf')", 'got inf'),
    ('True', 'got True (bool)'),
    ('[1.0]', 'got [1.0] (list)'),
])
def test_bad_return_values_are_refused_with_a_clear_message(tmp_path, value, reason):
    reward = RewardFunction.load(write(tmp_path, f'''
        def reward_function(params):
            return {value}
        '''))
    with pytest.raises(RewardFunctionError) as caught:
        reward({'steps': 7})
    message = str(caught.value)
    assert 'must return a finite int or float' in message and reason in message
    assert 'step 7' in message and str(reward.path) in message
    assert reward.rewards == []


@pytest.mark.parametrize('value', [1, 0.5, -2.0, np.float32(0.25), np.int64(3), 1e-3])
def test_numbers_are_accepted(value):
    assert check_reward(value) == pytest.approx(float(value))
    assert isinstance(check_reward(value), float)


def test_load_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(RewardFunctionError, match='does not exist'):
        RewardFunction.load(tmp_path / 'missing.py')
    with pytest.raises(RewardFunctionError, match='defines no function reward_function'):
        RewardFunction.load(write(tmp_path / 'a', 'def reward(params):\n    return 1.0\n'))
    with pytest.raises(RewardFunctionError) as caught:
        RewardFunction.load(write(tmp_path / 'b', 'def reward_function(params)\n    return 1\n'))
    assert 'SyntaxError' in caught.value.report()
    with pytest.raises(RewardFunctionError) as caught:
        RewardFunction.load(write(tmp_path / 'c', 'import no_such_module_here\n'))
    assert 'no_such_module_here' in caught.value.report()


def test_files_load_in_isolation(tmp_path):
    first = RewardFunction.load(write(tmp_path / 'one', 'def reward_function(p):\n'
                                                        '    return 1.0\n', 'math.py'))
    second = RewardFunction.load(write(tmp_path / 'two', 'def reward_function(p):\n'
                                                         '    return 2.0\n', 'math.py'))
    assert (first({}), second({})) == (1.0, 2.0)
    # A file named like a real module shadows nothing and is not importable by others.
    assert sys.modules['math'] is math
    assert not any(name.startswith('deepracer_user_reward') for name in sys.modules)


def test_rewards_of_a_whole_lap_follow_the_line(tmp_path, loop):
    """A centred car earns the full reward each step, one driven off the line does not."""
    from deepracer_nodes.sim.race import ExpertDriver
    reward = RewardFunction.load(write(tmp_path, CENTRE_LINE))
    session = RaceSession(loop, RaceConfig(), SessionConfig(laps=1, time_limit_s=60.0),
                          reward)
    expert = ExpertDriver(session.track)
    while not session.status.final:
        car = session.car
        session.set_command(*expert.command(car.x, car.y, car.yaw, car.speed))
        session.advance()
    assert session.status is Status.FINISHED
    assert len(reward.rewards) == session.state().steps
    assert np.mean(np.array(reward.rewards) == 1.0) > 0.9
