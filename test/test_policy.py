"""Policy: model folders -> checked onnxruntime sessions -> decisions for known frames."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from deepracer_nodes.core import onnx_build, spec
from deepracer_nodes.core.metadata import Sensor
from deepracer_nodes.core.policy import (
    ModelError, Policy, default_search_dirs, resolve_model, session_options)
from deepracer_nodes.core.preprocess import Layout, PreprocessOptions

H, W = spec.CAMERA.height, spec.CAMERA.width
SPEEDS = (0.5, 1.0, 1.5)


def bright_third(third: int, height: int = H, width: int = W) -> np.ndarray:
    """A dark BGR frame whose left (0), centre (1) or right (2) third is bright."""
    frame = np.full((height, width, 3), 30, np.uint8)
    frame[:, third * width // 3:(third + 1) * width // 3] = 220
    return frame


def halves(left: int, right: int) -> np.ndarray:
    frame = np.empty((H, W, 3), np.uint8)
    frame[:, :W // 2] = left
    frame[:, W // 2:] = right
    return frame


@pytest.fixture
def strip_model(tmp_path):
    return onnx_build.write_model_folder(
        tmp_path / 'strip', onnx_build.brightest_strip_network(3),
        onnx_build.steering_sweep_metadata(3, speeds_mps=SPEEDS))


@pytest.mark.parametrize('layout', [Layout.NHWC, Layout.NCHW])
@pytest.mark.parametrize('third,steering_deg', [(0, 30.0), (1, 0.0), (2, -30.0)])
def test_known_frames_give_known_actions(tmp_path, layout, third, steering_deg):
    folder = onnx_build.write_model_folder(
        tmp_path / 'm', onnx_build.brightest_strip_network(3, layout=layout),
        onnx_build.steering_sweep_metadata(3, speeds_mps=SPEEDS))
    policy = Policy.load(folder)
    assert policy.input_spec.layout is layout
    decision = policy.act(bright_third(third))
    assert decision.action_index == third
    assert decision.steering_angle_rad == pytest.approx(math.radians(steering_deg))
    assert decision.speed_mps == SPEEDS[third]
    assert decision.probabilities.shape == (3,)
    assert decision.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert decision.probabilities[third] > 0.99
    assert decision.inference_s > 0


def test_positive_steering_is_left(strip_model):
    # The bright strip on the LEFT of the image makes the car turn left: positive (REP 103).
    assert Policy.load(strip_model).act(bright_third(0)).steering_angle_rad > 0


def test_grey_frames_are_accepted(strip_model):
    grey = bright_third(2)[..., 0].copy()
    assert Policy.load(strip_model).act(grey).action_index == 2


def test_logits_output_gets_softmax_probabilities(tmp_path):
    folder = onnx_build.write_model_folder(
        tmp_path / 'logits', onnx_build.brightest_strip_network(3, softmax=False, sharpness=5),
        onnx_build.steering_sweep_metadata(3))
    decision = Policy.load(folder).act(bright_third(1))
    assert decision.action_index == 1
    assert decision.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.argmax(decision.probabilities) == 1


def test_preprocessing_options_reach_the_model(strip_model):
    policy = Policy.load(strip_model, PreprocessOptions(mask_top_rows=120))
    # Every row masked: all strips equally dark, the argmax falls on the first action.
    decision = policy.act(bright_third(2))
    assert decision.probabilities == pytest.approx(np.full(3, 1 / 3), abs=1e-5)
    unmasked = policy.with_options(PreprocessOptions())
    assert unmasked.act(bright_third(2)).action_index == 2
    assert unmasked.metadata is policy.metadata


CONTINUOUS_CASES = [
    # (left, right) brightness, expected steering deg, expected speed
    ((0, 0), 0.0, 0.5),           # output (0, -2) -> speed clamped to low
    ((255, 255), 0.0, 2.5),       # output (0, +2) -> speed clamped to high
    ((255, 0), 30.0, 1.5),        # steering 4 clamped to 1 -> high (left)
    ((0, 255), -30.0, 1.5),       # steering -4 clamped to -1 -> low (right)
]


@pytest.mark.parametrize('brightness,steering_deg,speed', CONTINUOUS_CASES)
def test_continuous_clamp_and_rescale(tmp_path, brightness, steering_deg, speed):
    folder = onnx_build.write_model_folder(
        tmp_path / 'c', onnx_build.balance_network(steering_gain=4.0, speed_gain=4.0,
                                                   speed_bias=-2.0, squash=False),
        onnx_build.continuous_metadata((-30.0, 30.0), (0.5, 2.5)))
    decision = Policy.load(folder).act(halves(*brightness))
    assert decision.action_index is None and decision.probabilities is None
    assert decision.steering_angle_rad == pytest.approx(math.radians(steering_deg), abs=1e-5)
    assert decision.speed_mps == pytest.approx(speed, abs=1e-5)


def test_continuous_rescale_is_linear_inside_the_range(tmp_path):
    folder = onnx_build.write_model_folder(
        tmp_path / 'c', onnx_build.balance_network(steering_gain=0.5, squash=False),
        onnx_build.continuous_metadata((-10.0, 30.0), (1.0, 3.0)))
    policy = Policy.load(folder)
    decision = policy.act(halves(255, 0))  # steering output 0.5, speed output 2*0.5-1 = 0
    assert decision.steering_angle_rad == pytest.approx(math.radians(-10 + 0.75 * 40), abs=1e-4)
    assert decision.speed_mps == pytest.approx(2.0, abs=1e-4)
    direct = policy.decide(np.array([[-1.0, 1.0]]))
    assert direct.steering_angle_rad == pytest.approx(math.radians(-10.0))
    assert direct.speed_mps == pytest.approx(3.0)


def test_shallow_cnn_loads_in_both_action_spaces(tmp_path):
    discrete = onnx_build.write_model_folder(tmp_path / 'd', onnx_build.shallow_cnn(5),
                                             onnx_build.steering_sweep_metadata(5))
    continuous = onnx_build.write_model_folder(
        tmp_path / 'c', onnx_build.shallow_cnn(continuous=True, layout=Layout.NCHW),
        onnx_build.continuous_metadata())
    decision = Policy.load(discrete, intra_op_threads=1).act(bright_third(0))
    assert 0 <= decision.action_index < 5
    decision = Policy.load(continuous).act(bright_third(0))
    assert 0.5 <= decision.speed_mps <= 2.0
    assert abs(decision.steering_angle_rad) <= math.radians(30.0) + 1e-9


def test_output_and_metadata_disagree(tmp_path):
    folder = onnx_build.write_model_folder(tmp_path / 'm', onnx_build.brightest_strip_network(3),
                                           onnx_build.steering_sweep_metadata(5))
    with pytest.raises(ModelError, match='has 3 values but .* discrete action space of 5'):
        Policy.load(folder)
    continuous = onnx_build.write_model_folder(
        tmp_path / 'c', onnx_build.brightest_strip_network(3), onnx_build.continuous_metadata())
    with pytest.raises(ModelError, match='continuous action space of 2'):
        Policy.load(continuous)


def test_broken_onnx_is_refused(tmp_path):
    folder = onnx_build.write_model_folder(tmp_path / 'm', b'this is not a protobuf',
                                           onnx_build.steering_sweep_metadata(3))
    with pytest.raises(ModelError, match='onnxruntime cannot load .*model.onnx'):
        Policy.load(folder)


def test_truncated_onnx_is_refused(tmp_path):
    data = onnx_build.shallow_cnn(3).SerializeToString()
    folder = onnx_build.write_model_folder(tmp_path / 'm', data[:len(data) // 2],
                                           onnx_build.steering_sweep_metadata(3))
    with pytest.raises(ModelError, match='onnxruntime cannot load'):
        Policy.load(folder)


def test_graph_that_cannot_run_is_refused_at_load(tmp_path):
    # Reshapes 19200 pixels into 100 values: a bug that only shows when the graph runs.
    graph = helper.make_graph(
        [helper.make_node('Reshape', ['x', 'shape'], ['y'])], 'bad',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 120, 160, 1])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, None])],
        initializer=[helper.make_tensor('shape', TensorProto.INT64, [2], [1, 100])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    folder = onnx_build.write_model_folder(tmp_path / 'm', model,
                                           onnx_build.steering_sweep_metadata(3))
    with pytest.raises(ModelError):
        Policy.load(folder)


def test_output_of_the_wrong_size_is_an_error(strip_model):
    # The load check reads the graph's declared size; decide() re-checks every actual output.
    with pytest.raises(ModelError, match='has 4 values, the discrete action space needs 3'):
        Policy.load(strip_model).decide(np.zeros((1, 4), np.float32))


def test_two_inputs_are_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node('Add', ['a', 'b'], ['y'])], 'two',
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in 'ab'],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    folder = onnx_build.write_model_folder(tmp_path / 'm', model,
                                           onnx_build.steering_sweep_metadata(3))
    with pytest.raises(ModelError, match='2 inputs'):
        Policy.load(folder)


def test_stereo_input_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node('ReduceMean', ['x'], ['y'], axes=[1, 2], keepdims=0)], 'stereo',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 120, 160, 2])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    folder = onnx_build.write_model_folder(tmp_path / 'm', model,
                                           onnx_build.continuous_metadata())
    with pytest.raises(ModelError, match='2 channels .*single-camera greyscale'):
        Policy.load(folder)


def test_missing_files(tmp_path, strip_model):
    with pytest.raises(ModelError, match='does not exist'):
        Policy.load(tmp_path / 'nowhere')
    (strip_model / 'model_metadata.json').unlink()
    with pytest.raises(ModelError, match='has no model_metadata.json'):
        Policy.load(strip_model)
    (strip_model / 'model.onnx').unlink()
    (strip_model / 'agent').mkdir()
    (strip_model / 'agent' / 'model.pb').write_bytes(b'')
    with pytest.raises(ModelError, match='has no model.onnx .*model.pb: convert it to ONNX'):
        Policy.load(strip_model)


def test_garbled_metadata(strip_model):
    (strip_model / 'model_metadata.json').write_text('{"action_space": [')
    with pytest.raises(ModelError, match='model_metadata.json: not valid JSON'):
        Policy.load(strip_model)
    (strip_model / 'model_metadata.json').write_text(json.dumps({'action_space': 'left'}))
    with pytest.raises(ModelError, match="non-empty list of actions, got 'left'"):
        Policy.load(strip_model)


def test_lidar_model_is_refused(tmp_path):
    folder = onnx_build.write_model_folder(
        tmp_path / 'm', onnx_build.brightest_strip_network(3),
        onnx_build.steering_sweep_metadata(3, sensor=Sensor.LIDAR))
    with pytest.raises(ModelError, match='needs LIDAR; this stack drives single-camera'):
        Policy.load(folder)


def test_non_finite_output_is_an_error(strip_model):
    policy = Policy.load(strip_model)
    with pytest.raises(ModelError, match='not finite'):
        policy.decide(np.array([0.1, float('nan'), 0.2]))


def test_session_options():
    options = session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    with pytest.raises(ValueError, match='intra_op_threads'):
        session_options(0)


def test_resolve_model(tmp_path, strip_model, monkeypatch):
    first, second = tmp_path / 'first', tmp_path / 'second'
    (second / 'racer').mkdir(parents=True)
    assert resolve_model('racer', [first, second]) == second / 'racer'
    assert resolve_model(str(strip_model), [first]) == strip_model
    monkeypatch.chdir(tmp_path)
    assert resolve_model('./strip', []).resolve() == strip_model.resolve()
    with pytest.raises(ModelError, match=f"no model named 'ghost'; looked in {first}, {second}"):
        resolve_model('ghost', [first, second])
    with pytest.raises(ModelError, match='does not exist'):
        resolve_model(str(tmp_path / 'ghost'), [second])
    with pytest.raises(ModelError, match='no model given'):
        resolve_model('  ', [second])


def test_default_search_dirs_order(tmp_path, monkeypatch):
    monkeypatch.setenv('DEEPRACER_HOME', str(tmp_path))
    dirs = default_search_dirs([tmp_path / 'extra'])
    assert dirs[0] == tmp_path / 'extra'
    assert dirs[1] == tmp_path / 'models'
    assert str(dirs[-1]) == spec.DEEPRACER_MODELS_DIR
