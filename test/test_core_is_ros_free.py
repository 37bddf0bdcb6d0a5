"""The functional core (deepracer_nodes.core and .sim) must never import rclpy."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / 'deepracer_nodes'
ROS_MODULES = ('rclpy', 'sensor_msgs', 'geometry_msgs', 'std_msgs', 'std_srvs',
               'diagnostic_msgs', 'rosgraph_msgs', 'builtin_interfaces', 'launch')
CORE_FILES = sorted([*PACKAGE.glob('core/*.py'), *PACKAGE.glob('sim/*.py')])


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize('path', CORE_FILES, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_core_module_imports_no_ros(path):
    ros = [m for m in imported_modules(path) if m.split('.')[0] in ROS_MODULES]
    assert not ros, f'{path.name} imports {ros}'
