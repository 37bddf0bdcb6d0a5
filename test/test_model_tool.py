"""`deepracer model import / validate / list / load` on small ONNX models built here.

No TensorFlow anywhere (CI never installs it): ONNX archives import without it, and a
.pb archive without the extra must end in a plain message. `load` runs against a real
InferenceNode in-process on a private rclpy context.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter

from deepracer_nodes import model_tool
from deepracer_nodes.core import convert, onnx_build
from deepracer_nodes.core.archive import ArchiveError
from deepracer_nodes.core.metadata import Sensor, dumps_metadata
from deepracer_nodes.core.policy import ModelError, Policy
from deepracer_nodes.core.spec import BUNDLED_MODEL, MODEL_INPUT
from deepracer_nodes.inference_node import InferenceNode

H, W = MODEL_INPUT.height, MODEL_INPUT.width


def command(*argv: str, context=None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog='deepracer model')
    model_tool.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = model_tool.run(parser.parse_args(list(argv)), out, err, context=context)
    return code, out.getvalue(), err.getvalue()


def strip_files(actions: int = 3, metadata_actions: int | None = None) -> dict[str, bytes]:
    metadata = onnx_build.steering_sweep_metadata(metadata_actions or actions)
    return {'model.onnx': onnx_build.brightest_strip_network(actions).SerializeToString(),
            'model_metadata.json': dumps_metadata(metadata).encode()}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, 'w:gz') as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty $DEEPRACER_HOME, so the user models folder is tmp_path/home/models."""
    monkeypatch.setenv('DEEPRACER_HOME', str(tmp_path / 'home'))
    return tmp_path / 'home'


@pytest.fixture
def no_tensorflow(monkeypatch):
    """Imports of tensorflow and tf2onnx fail, as on CI and on a car."""
    monkeypatch.setitem(sys.modules, 'tensorflow', None)
    monkeypatch.setitem(sys.modules, 'tf2onnx', None)


def leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


# --- import -------------------------------------------------------------------------------

def test_onnx_archive_imports_without_tensorflow_and_drives(tmp_path, home, no_tensorflow):
    archive = tar_gz(tmp_path / 'strip3.tar.gz', strip_files(3))
    code, out, err = command('import', str(archive))
    assert code == 0, err
    folder = home / 'models' / 'strip3'
    assert sorted(p.name for p in folder.iterdir()) == [
        'import_record.json', 'model.onnx', 'model_metadata.json']
    record = json.loads((folder / 'import_record.json').read_text())
    assert record['conversion'] is None and record['source'] == 'strip3.tar.gz'
    assert record['model_file'] == 'model.onnx' and len(record['source_sha256']) == 64
    assert 'imported strip3' in out and 'no conversion needed' in out
    assert 'deepracer model load strip3' in out
    # The node finds it by name and it drives: the brightest third is the chosen action.
    frame = np.full((H, W), 20, np.uint8)
    frame[:, 2 * W // 3:] = 230
    assert Policy.load(folder).act(frame).action_index == 2
    assert leftovers(home / 'models') == ['strip3']


def test_folder_imports_into_output_and_keeps_the_source(tmp_path, no_tensorflow):
    source = write_tree(tmp_path / 'downloaded', strip_files(3))
    models = tmp_path / 'models'
    result = model_tool.import_model(source, models, name='mine')
    assert result.folder == models / 'mine' and not result.converted
    assert (models / 'mine' / 'model.onnx').read_bytes() == \
        (source / 'model.onnx').read_bytes()
    assert sorted(p.name for p in source.iterdir()) == ['model.onnx', 'model_metadata.json']


def test_graph_archive_without_the_extra_says_how_to_install_it(tmp_path, home,
                                                                no_tensorflow):
    archive = tar_gz(tmp_path / 'console.tar.gz', {
        'model_metadata.json': strip_files()['model_metadata.json'],
        'agent/model.pb': b'\x0a\x05frozen graph bytes'})
    code, out, err = command('import', str(archive))
    assert code == 1 and out == ''
    assert "pip install 'deepracer_nodes[convert]'" in err
    assert 'Traceback' not in err and err.count('\n') == 1
    assert leftovers(home / 'models') == []


def test_existing_model_is_kept_unless_forced(tmp_path, home):
    models = home / 'models'
    model_tool.import_model(tar_gz(tmp_path / 'm.tar.gz', strip_files(3)), models)
    first = (models / 'm' / 'model.onnx').read_bytes()
    (tmp_path / 'five').mkdir()
    five = tar_gz(tmp_path / 'five' / 'm.tar.gz', strip_files(5))
    code, _, err = command('import', str(five))
    assert code == 1 and 'already exists' in err and '--force' in err
    assert (models / 'm' / 'model.onnx').read_bytes() == first
    code, out, err = command('import', str(five), '--force')
    assert code == 0, err
    assert 'discrete, 5 actions' in out
    assert Policy.load(models / 'm').metadata.action_space.output_size == 5
    assert leftovers(models) == ['m']


@pytest.mark.parametrize('files, match', [
    ({**strip_files(), 'model_metadata.json': b'{"action_space": [oops'}, 'not valid JSON'),
    (strip_files(3, metadata_actions=5), 'has 3 values but model_metadata.json describes'),
    ({**strip_files(), 'model_metadata.json': dumps_metadata(onnx_build.steering_sweep_metadata(
        3, sensor=Sensor.LIDAR)).encode()}, 'needs LIDAR'),
    ({'model.onnx': b'garbage, not a protobuf', **{
        'model_metadata.json': strip_files()['model_metadata.json']}}, 'onnxruntime cannot load'),
    ({'model.onnx': strip_files()['model.onnx']}, 'no model_metadata.json'),
    ({**strip_files(), 'other/second.onnx': b''}, 'several ONNX models'),
])
def test_a_bad_model_is_refused_with_the_reason_and_leaves_nothing(tmp_path, files, match):
    models = tmp_path / 'models'
    with pytest.raises(ValueError, match=match):
        model_tool.import_model(tar_gz(tmp_path / 'bad.tar.gz', files), models)
    assert leftovers(models) == []


def test_a_hostile_archive_is_refused_and_nothing_is_written(tmp_path, home):
    escaped = tmp_path / 'escaped.txt'
    archive = tar_gz(tmp_path / 'evil.tar.gz',
                     {**strip_files(), f'../../../{escaped.relative_to("/")}': b'x',
                      str(escaped): b'x'})
    code, _, err = command('import', str(archive))
    assert code == 1 and "'..'" in err
    assert not escaped.exists() and leftovers(home / 'models') == []


def test_names_come_from_the_archive_and_must_be_plain():
    assert model_tool.model_name_for(Path('My-Model_v2.tar.gz')) == 'My-Model_v2'
    assert model_tool.model_name_for(Path('x.TGZ')) == 'x'
    assert model_tool.model_name_for(Path('folder')) == 'folder'
    for bad in ('', '.hidden', 'a/b', '..', 'with space', 'x' * 200):
        with pytest.raises(ValueError, match='model name'):
            model_tool.check_model_name(bad)


def test_missing_source_is_reported(tmp_path, home):
    code, _, err = command('import', str(tmp_path / 'nowhere.tar.gz'))
    assert code == 1 and 'does not exist' in err


# --- validate -------------------------------------------------------------------------------

def metadata_bytes(data: dict) -> bytes:
    return json.dumps(data).encode()


def test_validate_ok_prints_a_summary(tmp_path):
    folder = write_tree(tmp_path / 'good', strip_files(3))
    code, out, _ = command('validate', str(folder))
    assert code == 0
    assert out.startswith('OK good: discrete, 3 actions, steering -30..30 deg, speed 1 m/s; '
                          'input NHWC 1x120x160x1;')


def test_validate_finds_a_model_by_name(tmp_path):
    write_tree(tmp_path / 'extra' / 'named', strip_files(3))
    code, out, _ = command('validate', 'named', '--models-dir', str(tmp_path / 'extra'))
    assert code == 0 and out.startswith('OK named')
    code, out, _ = command('validate', BUNDLED_MODEL)
    assert code == 0, out


def _discrete(*actions, sensor='FRONT_FACING_CAMERA'):
    return {'action_space': [{'steering_angle': a, 'speed': s} for a, s in actions],
            'sensor': [sensor]}


@pytest.mark.parametrize('files, expected', [
    ({'model_metadata.json': strip_files()['model_metadata.json'], 'agent/model.pb': b'g'},
     ['missing file model.onnx; it holds the TensorFlow graph agent/model.pb: convert it']),
    ({'model.onnx': strip_files()['model.onnx']},
     ['missing file model_metadata.json']),
    (strip_files(3, metadata_actions=5),
     ["has 3 values but model_metadata.json describes a discrete action space of 5"]),
    ({**strip_files(), 'model_metadata.json': metadata_bytes(
        _discrete((30, 1), (0, 1), (-30, 1), sensor='SONAR'))},
     ["sensor[0] 'SONAR' is not one of"]),
    ({**strip_files(), 'model_metadata.json': metadata_bytes(
        _discrete((30, 1), (0, 1), (-30, 1), sensor='LIDAR'))},
     ['sensor LIDAR is not supported']),
    ({**strip_files(), 'model_metadata.json': metadata_bytes(
        _discrete((45, 1), (0, 0), (-30, 1)))},
     ["action 0 steers 45 deg, beyond the car's +-30 deg",
      'action 1 has speed 0 m/s']),
    ({**strip_files(), 'model_metadata.json': metadata_bytes({
        'action_space_type': 'continuous', 'action_space': {
            'steering_angle': {'low': -30, 'high': 30}, 'speed': {'low': 2, 'high': 1}}})},
     ['action_space.speed.high (1) must be greater than action_space.speed.low (2)']),
    ({**strip_files(), 'model_metadata.json': metadata_bytes({
        'action_space_type': 'continuous', 'action_space': {
            'steering_angle': {'low': -40, 'high': 30}, 'speed': {'low': 0, 'high': 1}}})},
     ['the speed range starts at 0 m/s', 'the steering range -40..30 deg goes beyond']),
])
def test_validate_says_what_is_wrong_in_plain_words(tmp_path, files, expected):
    folder = write_tree(tmp_path / 'model', files)
    code, out, _ = command('validate', str(folder))
    assert code == 1
    assert out.startswith(f'INVALID {folder}:')
    problems = [line[4:] for line in out.splitlines() if line.startswith('  - ')]
    assert len(problems) == len(expected), out
    for problem, start in zip(problems, expected):
        assert start in problem, out
    assert not any(problem.startswith(str(tmp_path)) for problem in problems), \
        'the folder is in the heading, not in every line'


def test_validate_warns_about_speeds_beyond_the_simulator(tmp_path):
    folder = write_tree(tmp_path / 'fast', {
        **strip_files(), 'model_metadata.json': metadata_bytes(
            _discrete((30, 5.0), (0, 1), (-30, 1)))})
    code, out, _ = command('validate', str(folder))
    assert code == 0 and out.startswith('warning: top speed 5 m/s')


def test_validate_of_nothing_is_invalid(tmp_path):
    code, out, _ = command('validate', 'no_such_model', '--models-dir', str(tmp_path))
    assert code == 1 and out.startswith("INVALID: no model named 'no_such_model'")


# --- list -----------------------------------------------------------------------------------

def test_list_shows_every_folder_and_marks_bundled_broken_and_shadowed(tmp_path, home):
    extra = tmp_path / 'extra'
    write_tree(extra / 'good', strip_files(3))
    write_tree(extra / 'broken', strip_files(3, metadata_actions=5))
    write_tree(extra / 'tf_only', {'model_metadata.json': strip_files()['model_metadata.json'],
                                   'agent/model.pb': b'g'})
    write_tree(extra / 'notes', {'readme.txt': b'not a model'})
    write_tree(home / 'models' / 'good', strip_files(5))
    code, out, _ = command('list', '--models-dir', str(extra))
    assert code == 0
    extra_section, home_section = out.split(f'{home / "models"}\n')
    assert extra_section.startswith(f'{extra}\n')
    entries = {line.split()[0]: line for line in extra_section.splitlines()[1:]}
    assert sorted(entries) == ['broken', 'good', 'tf_only']
    assert entries['broken'].split()[1] == 'BROKEN:'
    assert 'has 3 values but' in entries['broken']
    assert 'not converted (TensorFlow .pb)' in entries['tf_only']
    assert 'ok: discrete, 3 actions' in entries['good']
    assert home_section.startswith(f'  good  ok (shadowed by the model of that name in {extra})'
                                   ': discrete, 5 actions')
    assert '(bundled with the package)' in home_section
    assert f'  {BUNDLED_MODEL}  ok: discrete' in home_section


# --- the conversion's TensorFlow-free parts -------------------------------------------------

PPO_IN = 'main_level/agent/main/online/network_0/FRONT_FACING_CAMERA/FRONT_FACING_CAMERA'


def test_signature_detection_of_ppo_sac_and_old_models():
    ppo = convert.detect_signature([(PPO_IN, 'Placeholder'), (convert.PPO_OUTPUT, 'Softmax')])
    assert (ppo.input_name, ppo.output_name, ppo.algorithm) == (
        PPO_IN, convert.PPO_OUTPUT, 'clipped_ppo')
    sac_in = PPO_IN.replace('/main/', '/policy/')
    sac = convert.detect_signature([(sac_in, 'Placeholder'), (convert.SAC_OUTPUT, 'Tanh')])
    assert sac.algorithm == 'sac' and sac.output_name == convert.SAC_OUTPUT
    old_in = 'main_level/agent/main/online/network_0/observation/observation'
    assert convert.detect_signature([(old_in, 'Placeholder'),
                                     (convert.PPO_OUTPUT, 'Softmax')]).input_name == old_in


@pytest.mark.parametrize('nodes, match', [
    ([('image', 'Placeholder'), ('probabilities', 'Softmax')],
     r'no DeepRacer camera input in the graph \(placeholders: image\)'),
    ([(PPO_IN, 'Const'), (convert.PPO_OUTPUT, 'Softmax')], 'placeholders: none'),
    ([(PPO_IN, 'Placeholder'), ('main_level/agent/main/online/network_1/other/policy', 'X')],
     r'not its output .*ppo_head_0/policy \(nodes ending in /policy: .*other/policy\)'),
    ([(PPO_IN, 'Placeholder'), (PPO_IN.replace('/main/', '/policy/'), 'Placeholder')],
     'several DeepRacer camera inputs'),
])
def test_foreign_graphs_are_refused_naming_what_they_hold(nodes, match):
    with pytest.raises(convert.ConversionError, match=match):
        convert.detect_signature(nodes)


def test_sample_frames_are_structured_then_random_raw_pixels():
    frames = convert.sample_frames([1, H, W, 1], count=9)
    assert len(frames) == 9
    assert all(f.shape == (1, H, W, 1) and f.dtype == np.float32 for f in frames)
    assert frames[0].max() == 0 and frames[1].min() == 255
    assert all(0 <= f.min() and f.max() <= 255 for f in frames)
    assert len({f.tobytes() for f in frames}) == 9
    with pytest.raises(ValueError):
        convert.sample_frames([H, W])


def test_the_comparison_catches_a_different_model(tmp_path):
    same = tmp_path / 'a.onnx'
    same.write_bytes(onnx_build.brightest_strip_network(3).SerializeToString())
    other = tmp_path / 'b.onnx'
    other.write_bytes(onnx_build.brightest_strip_network(3, sharpness=10).SerializeToString())
    run_a, shape = convert.onnx_runner(same)
    run_b, _ = convert.onnx_runner(other)
    frames = convert.sample_frames(convert.concrete_shape(shape))
    assert convert.max_abs_difference(run_a, run_a, frames) == 0.0
    assert convert.max_abs_difference(run_a, run_b, frames) > 0.01
    five, _ = convert.onnx_runner(_strip_model(tmp_path, 5))
    assert convert.max_abs_difference(run_a, five, frames) == float('inf')
    assert convert.concrete_shape(['N', 120, 160, 1]) == [1, 120, 160, 1]


def _strip_model(tmp_path: Path, actions: int) -> Path:
    path = tmp_path / f'strip{actions}.onnx'
    path.write_bytes(onnx_build.brightest_strip_network(actions).SerializeToString())
    return path


def test_converter_unavailable_is_a_plain_value_error(no_tensorflow, tmp_path):
    with pytest.raises(convert.ConverterUnavailable, match=r"deepracer_nodes\[convert\]"):
        convert.convert_frozen_graph(tmp_path / 'model.pb', tmp_path / 'model.onnx')
    assert issubclass(convert.ConverterUnavailable, ValueError)
    assert issubclass(ArchiveError, ValueError) and issubclass(ModelError, ValueError)


# --- load, against a real inference node -----------------------------------------------------

@pytest.fixture
def running_node(tmp_path, ros_context, executor):
    models = tmp_path / 'car_models'
    for name, actions in (('three', 3), ('five', 5)):
        write_tree(models / name, strip_files(actions))
    write_tree(models / 'broken', strip_files(3, metadata_actions=5))
    node = InferenceNode(context=ros_context, parameter_overrides=[
        Parameter('models_dir', value=str(models)), Parameter('model', value='three')])
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield node
    executor.shutdown(timeout_sec=2.0)
    spinner.join(timeout=5.0)


def driving(node: InferenceNode) -> str:
    return node.loaded_model.policy.name


def test_load_swaps_a_good_model_and_keeps_the_old_one_on_refusal(running_node, ros_context):
    assert driving(running_node) == 'three'
    code, out, err = command('load', 'five', context=ros_context)
    assert (code, err) == (0, '') and out == '/inference_node now drives five\n'
    assert driving(running_node) == 'five'
    assert running_node.get_parameter('model').value == 'five'

    code, out, err = command('load', 'broken', '--node', 'inference_node', context=ros_context)
    assert code == 1 and out == ''
    assert err.startswith('refused by inference_node, the running model keeps driving: ')
    assert 'has 3 values but model_metadata.json describes a discrete action space of 5' in err
    assert driving(running_node) == 'five'
    assert running_node.get_parameter('model').value == 'five'

    code, _, err = command('load', 'no_such_model', context=ros_context)
    assert code == 1 and "no model named 'no_such_model'" in err
    assert driving(running_node) == 'five'


def test_load_without_a_node_says_how_to_start_one(ros_context):
    code, out, err = command('load', 'five', '--node', '/nobody_here', '--timeout', '0.3',
                             context=ros_context)
    assert code == 1 and out == ''
    assert 'no inference node at /nobody_here' in err and 'inference_node' in err
