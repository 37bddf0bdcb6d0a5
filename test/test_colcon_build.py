"""The package builds with colcon as on a car, and installs what ros2 run and launch need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLCON = Path(sys.executable).with_name('colcon')
TRACKED_FOLDERS = ('deepracer_nodes', 'launch', 'config', 'models', 'worlds', 'resource')


@pytest.fixture(scope='module')
def colcon_install(tmp_path_factory):
    if not COLCON.exists():
        pytest.fail(f'colcon is not installed beside {sys.executable} (pip install .[test])')
    workspace = tmp_path_factory.mktemp('ws')
    source = workspace / 'src' / 'deepracer_nodes'
    source.mkdir(parents=True)
    for name in ('package.xml', 'setup.py', 'setup.cfg'):
        shutil.copy(ROOT / name, source / name)
    for folder in TRACKED_FOLDERS:
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    result = subprocess.run([str(COLCON), 'build'], cwd=workspace, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return workspace / 'install' / 'deepracer_nodes'


@pytest.mark.parametrize('executable', ['camera_node', 'inference_node', 'servo_node', 'sim_node',
                                        'deepracer'])
def test_ros2_run_finds_each_executable(colcon_install, executable):
    script = colcon_install / 'lib' / 'deepracer_nodes' / executable
    assert script.is_file() and os.access(script, os.X_OK)


def test_share_folder_holds_launch_config_models_worlds(colcon_install):
    share = colcon_install / 'share' / 'deepracer_nodes'
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'car.launch.py').is_file()
    for name in ('camera.yaml', 'inference.yaml', 'servo.yaml'):
        assert (share / 'config' / name).is_file()
    assert (share / 'models').is_dir() and (share / 'worlds').is_dir()
    marker = colcon_install / 'share' / 'ament_index' / 'resource_index' / 'packages'
    assert (marker / 'deepracer_nodes').is_file()


def test_installed_package_finds_its_share_folder(colcon_install):
    """Through the ament index, as on a car after sourcing install/setup.bash."""
    site = next(colcon_install.glob('lib/python3*/site-packages'))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(colcon_install), PYTHONPATH=str(site))
    code = 'from deepracer_nodes.paths import share_dir; print(share_dir())'
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                         text=True, cwd='/', timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == colcon_install / 'share' / 'deepracer_nodes'
