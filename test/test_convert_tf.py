"""The TensorFlow -> ONNX import path, on DeepRacer-shaped TF1 frozen graphs built here.

Runs only where the `convert` extra (tensorflow-cpu, tf2onnx) is installed; CI never
installs it. Each graph has DeepRacer's exact tensor names, takes raw 0-255 NHWC
[1, 120, 160, 1] and divides by 255 itself, is frozen (variables -> constants) and packed
into a model.tar.gz laid out like the console's (agent/model.pb + model_metadata.json).
The README records when this file last passed and with which versions.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

try:
    import tensorflow as tf
    import tf2onnx  # noqa: F401  (its presence is what this file tests)
except ImportError as missing:
    pytest.skip(f'the TensorFlow conversion test needs the convert extra ({missing.name} is '
                "not installed): pip install 'deepracer_nodes[convert]'",
                allow_module_level=True)

from deepracer_nodes import model_tool  # noqa: E402
from deepracer_nodes.core import convert, onnx_build, spec  # noqa: E402
from deepracer_nodes.core.metadata import dumps_metadata  # noqa: E402
from deepracer_nodes.core.policy import Policy  # noqa: E402

H, W = spec.MODEL_INPUT.height, spec.MODEL_INPUT.width
PPO_INPUT = 'main_level/agent/main/online/network_0/FRONT_FACING_CAMERA/FRONT_FACING_CAMERA'
SAC_INPUT = 'main_level/agent/policy/online/network_0/FRONT_FACING_CAMERA/FRONT_FACING_CAMERA'


def frozen_deepracer_graph(input_name: str, output_name: str, outputs: int,
                           continuous: bool, seed: int = 0) -> bytes:
    """A small DeepRacer-like CNN in TF1 graph mode, frozen; returns the GraphDef bytes."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        image = tf.compat.v1.placeholder(tf.float32, [None, H, W, 1], name=input_name)
        scaled = image / 255.0
        init = tf.compat.v1.glorot_uniform_initializer(seed=seed)
        net = scaled
        for index, (filters, kernel, stride) in enumerate(((16, 8, 4), (32, 4, 2))):
            weights = tf.compat.v1.get_variable(f'conv{index}_w', [kernel, kernel,
                                                                   net.shape[-1], filters],
                                                initializer=init)
            bias = tf.compat.v1.get_variable(f'conv{index}_b', [filters],
                                             initializer=tf.compat.v1.constant_initializer(0.1))
            net = tf.nn.relu(tf.nn.conv2d(net, weights, [1, stride, stride, 1], 'VALID') + bias)
        flat_size = int(np.prod(net.shape[1:]))
        net = tf.reshape(net, [-1, flat_size])
        dense_w = tf.compat.v1.get_variable('dense_w', [flat_size, 64], initializer=init)
        net = tf.nn.relu(tf.matmul(net, dense_w))
        head_w = tf.compat.v1.get_variable('head_w', [64, outputs], initializer=init)
        head = tf.matmul(net, head_w) * 4.0  # sharper than chance, so the argmax means something
        if continuous:
            tf.tanh(head, name=output_name)
        else:
            tf.nn.softmax(head, name=output_name)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [output_name])
    return frozen.SerializeToString()


def console_archive(path: Path, graph: bytes, metadata_text: str, extra_members=()) -> Path:
    """model.tar.gz as the DeepRacer console lays it out."""
    with tarfile.open(path, 'w:gz') as archive:
        for name, data in (('model_metadata.json', metadata_text.encode()),
                           ('agent/model.pb', graph), *extra_members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def tensorflow_output(graph_bytes: bytes, input_name: str, output_name: str,
                      frame: np.ndarray) -> np.ndarray:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name='')
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(f'{output_name}:0', {f'{input_name}:0': frame})


def test_ppo_console_archive_imports_matches_tensorflow_and_drives(tmp_path):
    graph = frozen_deepracer_graph(PPO_INPUT, convert.PPO_OUTPUT, 5, continuous=False)
    metadata = onnx_build.steering_sweep_metadata(5, speeds_mps=(1.0, 1.5, 2.0, 1.5, 1.0))
    archive = console_archive(tmp_path / 'model.tar.gz', graph, dumps_metadata(metadata),
                              [('ip/hyperparameters.json', b'{"batch_size": 64}')])
    models = tmp_path / 'models'

    result = model_tool.import_model(archive, models, name='ppo_model')

    folder = models / 'ppo_model'
    assert sorted(p.name for p in folder.iterdir()) == [
        'import_record.json', 'model.onnx', 'model_metadata.json']
    record = json.loads((folder / 'import_record.json').read_text())
    conversion = record['conversion']
    assert conversion['input'] == PPO_INPUT and conversion['algorithm'] == 'clipped_ppo'
    assert conversion['max_abs_diff_vs_tensorflow'] <= convert.DEFAULT_TOLERANCE
    assert conversion['frames_compared'] == convert.DEFAULT_SAMPLE_FRAMES
    assert {'tensorflow', 'tf2onnx', 'onnxruntime'} <= set(conversion['versions'])
    assert record['model_file'] == 'agent/model.pb' and record['source'] == 'model.tar.gz'
    assert result.converted and [p.name for p in models.iterdir()] == ['ppo_model']

    # The stored model drives exactly like TensorFlow on a camera-sized grey frame.
    policy = Policy.load(folder)
    rng = np.random.default_rng(3)
    for _ in range(3):
        frame = rng.integers(0, 256, (H, W), dtype=np.uint8)
        expected = tensorflow_output(graph, PPO_INPUT, convert.PPO_OUTPUT,
                                     frame.astype(np.float32)[None, :, :, None])[0]
        decision = policy.act(frame)
        assert decision.probabilities is not None
        np.testing.assert_allclose(decision.probabilities, expected, atol=1e-4)
        assert decision.action_index == int(np.argmax(expected))


def test_sac_continuous_graph_is_detected_and_converted(tmp_path):
    graph = frozen_deepracer_graph(SAC_INPUT, convert.SAC_OUTPUT, 2, continuous=True, seed=4)
    archive = console_archive(tmp_path / 'sac.tar.gz', graph,
                              dumps_metadata(onnx_build.continuous_metadata()))
    result = model_tool.import_model(archive, tmp_path / 'models')
    assert result.name == 'sac'
    assert result.record['conversion']['algorithm'] == 'sac'
    assert result.record['conversion']['output'] == convert.SAC_OUTPUT
    frame = np.full((H, W), 128, np.uint8)
    expected = tensorflow_output(graph, SAC_INPUT, convert.SAC_OUTPUT,
                                 frame.astype(np.float32)[None, :, :, None])[0]
    decision = Policy.load(result.folder).act(frame)
    steering = np.clip(expected[0], -1, 1)
    assert decision.steering_angle_rad == pytest.approx(np.radians(30.0 * steering), abs=1e-4)


def test_command_imports_and_validates_a_console_archive(tmp_path, capsys):
    graph = frozen_deepracer_graph(PPO_INPUT, convert.PPO_OUTPUT, 3, continuous=False, seed=7)
    archive = console_archive(tmp_path / 'my-model.tar.gz', graph,
                              dumps_metadata(onnx_build.steering_sweep_metadata(3)))
    models = tmp_path / 'models'
    parser = _parser()
    code = model_tool.run(parser.parse_args(['import', str(archive), '--output', str(models)]))
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'imported my-model' in out and 'max difference vs TensorFlow on 12 frames' in out
    code = model_tool.run(parser.parse_args(['validate', str(models / 'my-model')]))
    out = capsys.readouterr().out
    assert code == 0 and out.startswith('OK my-model: discrete, 3 actions'), out
    assert 'converted with tf2onnx' in out


def test_graph_without_deepracer_names_is_refused_and_leaves_nothing(tmp_path):
    graph = frozen_deepracer_graph('camera', 'probabilities', 3, continuous=False)
    archive = console_archive(tmp_path / 'odd.tar.gz', graph,
                              dumps_metadata(onnx_build.steering_sweep_metadata(3)))
    models = tmp_path / 'models'
    with pytest.raises(convert.ConversionError, match='no DeepRacer camera input.*camera'):
        model_tool.import_model(archive, models)
    assert list(models.iterdir()) == []


def test_a_conversion_that_disagrees_with_tensorflow_is_not_kept(tmp_path):
    graph = tmp_path / 'model.pb'
    graph.write_bytes(frozen_deepracer_graph(PPO_INPUT, convert.PPO_OUTPUT, 3,
                                             continuous=False))
    onnx_path = tmp_path / 'model.onnx'
    # A negative tolerance no real comparison can meet: the check itself must refuse.
    with pytest.raises(convert.ConversionError, match='differs from TensorFlow'):
        convert.convert_frozen_graph(graph, onnx_path, tolerance=-1.0)
    assert not onnx_path.exists()


def _parser():
    import argparse
    parser = argparse.ArgumentParser(prog='deepracer model')
    model_tool.add_arguments(parser)
    return parser
