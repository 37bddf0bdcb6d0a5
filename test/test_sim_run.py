"""`deepracer sim`: the whole stack (simulator, inference node, servo node on its sim
backend) on real ROS 2 topics, and the files a race leaves behind.

The model is onnx_build's balance network with a negative steering gain: it steers away
from the brighter half of the image (the white border and the floor beside it), at a
constant 2.5 m/s (tanh(0) = the middle of its 1-4 m/s range). It keeps the car on the
'loop' track for a lap of about 11.4 s.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepracer_nodes import sim_run
from deepracer_nodes.core import onnx_build
from deepracer_nodes.sim import results as sim_results
from deepracer_nodes.sim import track_library
from deepracer_nodes.sim.session import StepRecord

LAP_S = 11.4


@pytest.fixture(scope='module')
def line_follower(tmp_path_factory) -> Path:
    return onnx_build.write_model_folder(
        tmp_path_factory.mktemp('models') / 'line_follower',
        onnx_build.balance_network(steering_gain=-4.0, speed_gain=0.0, speed_bias=0.0),
        onnx_build.continuous_metadata(speed_mps=(1.0, 4.0)))


def run_sim(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sim_run.add_arguments(parser)
    return sim_run.run(parser.parse_args(['--no-progress', *map(str, argv)]))


def load_results(output: Path) -> dict:
    return json.loads((output / 'results.json').read_text())


def test_a_race_on_the_full_stack_completes_and_leaves_its_files(
        tmp_path, line_follower, capsys):
    reward_file = tmp_path / 'reward.py'
    reward_file.write_text(textwrap.dedent('''
        def reward_function(params):
            if not params['all_wheels_on_track']:
                return 1e-3
            return 1.0 - params['distance_from_center'] / (0.5 * params['track_width'])
        '''))
    output = tmp_path / 'race'
    code = run_sim('--model', line_follower, '--laps', 1, '--track', 'loop', '--output', output,
                   '--reward-function', reward_file)
    assert code == sim_run.EXIT_COMPLETED
    results = load_results(output)
    assert results['completed'] and results['status'] == 'finished'
    assert results['laps_completed'] == results['laps_target'] == 1
    assert results['lap_times_s'][0] == pytest.approx(LAP_S, abs=1.5)
    assert results['off_track_count'] == 0 and results['completion_percent'] == 100.0
    # Every frame went through inference and the servo node, whose Twist drove the car.
    perf = results['performance']
    steps = results['steps']
    assert perf['frames'] >= steps >= 100
    assert perf['commands_received'] >= steps
    assert perf['response_timeouts'] == 0
    assert perf['sim_time_s'] == pytest.approx(results['race_time_s'])
    assert perf['real_time_factor'] > 1.0 and perf['render_ms_per_frame'] > 0.0
    trajectory = results['trajectory']
    assert len(trajectory) == steps
    speeds = [s['speed_mps'] for s in trajectory[30:]]
    assert np.median(speeds) == pytest.approx(2.5, abs=0.1)  # the servo's round trip
    xs = [s['x'] for s in trajectory]
    assert max(xs) - min(xs) > 8.0  # it went round the 11 m wide oval
    # Rewards: one per step, logged and plotted.
    rewards = results['rewards']['per_step']
    assert len(rewards) == steps and all(0.0 < r <= 1.0 for r in rewards)
    assert results['settings']['reward_function'] == str(reward_file)
    # Files: a plot with the reward panel, an MP4 of every step.
    plot = cv2.imread(str(output / 'race.png'))
    assert plot is not None and plot.shape[1] > plot.shape[0] * 1.5 and plot.std() > 10
    video = cv2.VideoCapture(str(output / 'race.mp4'))
    assert video.isOpened()
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == steps
    ok, frame = video.read()
    assert ok and frame.shape[0] == sim_results.VIDEO_HEIGHT_PX and frame.std() > 10
    video.release()
    printed = capsys.readouterr().out
    assert 'lap 1' in printed and 'real-time factor' in printed and 'off track' in printed


def test_an_exception_in_the_reward_function_stops_the_race_and_is_reported(
        tmp_path, line_follower, capsys):
    reward_file = tmp_path / 'broken_reward.py'
    reward_file.write_text(textwrap.dedent('''
        def reward_function(params):
            if params['steps'] == 20:
                raise KeyError('speeed')
            return 1.0
        '''))
    output = tmp_path / 'broken'
    code = run_sim('--model', line_follower, '--laps', 1, '--output', output, '--no-video',
                   '--reward-function', reward_file)
    assert code == sim_run.EXIT_NOT_COMPLETED
    results = load_results(output)
    assert results['status'] == 'failed' and not results['completed']
    assert results['steps'] == 20 and len(results['rewards']['per_step']) == 19
    for text in ("KeyError('speeed')", 'at step 20', "raise KeyError('speeed')",
                 str(reward_file)):
        assert text in results['error']
    assert "raise KeyError('speeed')" in capsys.readouterr().out


def test_a_race_that_runs_out_of_time_is_not_completed(tmp_path, line_follower):
    output = tmp_path / 'short'
    code = run_sim('--model', line_follower, '--laps', 2, '--output', output, '--no-video',
                   '--time-limit', 3.0)
    assert code == sim_run.EXIT_NOT_COMPLETED
    results = load_results(output)
    assert results['status'] == 'time_limit' and results['laps_completed'] == 0
    assert 0.0 < results['completion_percent'] < 50.0
    assert results['race_time_s'] == pytest.approx(3.0, abs=0.1)
    assert 'files' in results and (output / 'race.png').is_file()


@pytest.mark.parametrize('argv, message', [
    (['--model', '/no/such/model'], 'does not exist'),
    (['--model', 'no_such_model_name'], 'no model named'),
    (['--track', 'nowhere'], 'neither a bundled track'),
    (['--laps', '0'], '--laps'),
    (['--max-speed-scale', '1.5'], '--max-speed-scale'),
    (['--reward-function', '/no/such/reward.py'], 'does not exist'),
])
def test_a_race_that_cannot_start_says_why(tmp_path, line_follower, capsys, argv, message):
    defaults = ['--model', line_follower, '--output', tmp_path / 'never']
    assert run_sim(*defaults, *argv) == sim_run.EXIT_CANNOT_START
    assert message in capsys.readouterr().err


def test_a_reward_file_that_does_not_load_is_reported_before_the_race(tmp_path, line_follower,
                                                                      capsys):
    reward_file = tmp_path / 'syntax.py'
    reward_file.write_text('def reward_function(params)\n    return 1.0\n')
    code = run_sim('--model', line_follower, '--output', tmp_path / 'out',
                   '--reward-function', reward_file)
    assert code == sim_run.EXIT_CANNOT_START
    assert 'SyntaxError' in capsys.readouterr().err


# --- results files without ROS -----------------------------------------------------------------

def record(step: int, x: float, y: float, lap_time: float | None = None) -> StepRecord:
    return StepRecord(time_s=step / 15.0, x=x, y=y, yaw=0.0, speed_mps=1.0, steering_rad=0.0,
                      speed_cmd_mps=1.0, steering_cmd_rad=0.0, progress=step * 0.5, lap=0,
                      all_wheels_on_track=True, is_offtrack=step == 5, lap_time_s=lap_time,
                      reward=None)


def test_recorder_keeps_frames_within_its_budget():
    frame = np.zeros((120, 160, 3), np.uint8)
    recorder = sim_results.RaceRecorder(budget_bytes=10 * frame.nbytes)
    recorder(None, frame)  # before the green light: not recorded
    for step in range(100):
        recorder(record(step, step * 0.1, 0.0), frame)
    assert len(recorder.records) == 100
    assert len(recorder.frames) <= 10 and recorder.frame_stride >= 8
    steps = [round(f.record.time_s * 15) for f in recorder.frames]
    assert steps == sorted(steps) and steps[0] == 0
    assert set(np.diff(steps)) <= {recorder.frame_stride, recorder.frame_stride // 2}


def test_video_falls_back_to_gif_and_plot_marks_off_track(tmp_path):
    track = track_library.make_track('loop')
    frames = [sim_results.VideoFrame(record(i, 0.1 * i, 0.0),
                                     np.full((120, 160, 3), 40 + i, np.uint8))
              for i in range(12)]
    gif = sim_results.write_video(tmp_path / 'race.gif', track, frames, fps=15.0, laps_target=1)
    assert gif.suffix == '.gif' and gif.stat().st_size > 10_000
    from PIL import Image
    with Image.open(gif) as image:
        assert image.n_frames == 12
    png = sim_results.plot_race(tmp_path / 'race.png', track, [f.record for f in frames])
    assert cv2.imread(str(png)).std() > 10
    with pytest.raises(ValueError, match='no frames'):
        sim_results.write_video(tmp_path / 'empty.mp4', track, [], fps=15.0)
