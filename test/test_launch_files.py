"""Launch files checked statically: `launch` cannot be installed here, so every executable,
parameter file, launch argument and parameter name they use is checked against the package."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from deepracer_nodes.core import spec

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's entry points."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'entry_points':
            scripts = ast.literal_eval(node.value)['console_scripts']
            return dict(s.replace(' ', '').split('=', 1) for s in scripts)
    raise AssertionError('setup.py has no console_scripts')


def call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, 'attr', '')


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and call_name(n) == name]


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def assigned_value(tree, name: ast.Name):
    """The expression last assigned to a variable in the launch file."""
    values = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == name.id for t in n.targets)]
    assert values, f'{name.id} is never assigned'
    return values[-1]


def node_package(tree, call: ast.Call) -> str:
    """The package= of a Node action: a literal, or a module constant (possibly spec's)."""
    value = keyword(call, 'package')
    if isinstance(value, ast.Name):
        value = assigned_value(tree, value)
    if isinstance(value, ast.Attribute) and getattr(value.value, 'id', None) == 'spec':
        return getattr(spec, value.attr)
    return ast.literal_eval(value)


def our_nodes(tree) -> list[ast.Call]:
    """Node actions of this package (others, e.g. a Gazebo bridge, have tests of their own)."""
    return [c for c in calls(tree, 'Node') if node_package(tree, c) == 'deepracer_nodes']


def node_class(executable: str):
    """The rclpy Node subclass behind a console script."""
    from rclpy.node import Node
    module = importlib.import_module(console_scripts()[executable].split(':')[0])
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Node) and c is not Node and c.__module__ == module.__name__]
    assert len(classes) == 1, f'{module.__name__} should define one Node class'
    return classes[0]


def declared_parameters(executable: str, ros_context) -> set[str]:
    node = node_class(executable)(context=ros_context)
    try:
        return set(node._parameters)
    finally:
        node.destroy_node()


@pytest.fixture(params=LAUNCH_FILES, ids=lambda p: p.name)
def launch_tree(request):
    path = request.param
    return path, ast.parse(path.read_text(), filename=str(path))


def test_there_is_a_car_launch_file():
    assert (ROOT / 'launch' / 'car.launch.py') in LAUNCH_FILES


def test_launch_file_defines_generate_launch_description(launch_tree):
    _, tree = launch_tree
    names = [f.name for f in tree.body if isinstance(f, ast.FunctionDef)]
    assert 'generate_launch_description' in names


def test_every_executable_is_a_console_script_of_this_package(launch_tree):
    _, tree = launch_tree
    nodes = our_nodes(tree)
    assert nodes, 'no Node actions of this package'
    scripts = console_scripts()
    for call in nodes:
        executable = ast.literal_eval(keyword(call, 'executable'))
        assert executable in scripts, f'{executable} is not an entry point in setup.py'


def test_every_parameter_file_exists(launch_tree):
    _, tree = launch_tree
    names = [ast.literal_eval(c.args[0]) for c in calls(tree, 'config_file')]
    assert names, 'no parameter files named'
    for name in names:
        assert (ROOT / 'config' / name).is_file(), f'config/{name} is missing'


def test_every_launch_configuration_is_declared(launch_tree):
    _, tree = launch_tree
    declared = {ast.literal_eval(c.args[0]) for c in calls(tree, 'DeclareLaunchArgument')}
    used = {ast.literal_eval(c.args[0]) for c in calls(tree, 'LaunchConfiguration')}
    assert used <= declared, f'undeclared launch arguments: {used - declared}'
    for call in calls(tree, 'DeclareLaunchArgument'):
        assert keyword(call, 'description') is not None, 'every argument needs a description'


def test_parameter_overrides_and_files_name_declared_parameters(launch_tree, ros_context):
    _, tree = launch_tree
    for call in our_nodes(tree):
        executable = ast.literal_eval(keyword(call, 'executable'))
        node_name = ast.literal_eval(keyword(call, 'name'))
        declared = declared_parameters(executable, ros_context)
        for item in keyword(call, 'parameters').elts:
            item = assigned_value(tree, item) if isinstance(item, ast.Name) else item
            if isinstance(item, ast.Dict):
                for key in item.keys:
                    name = ast.literal_eval(key)
                    assert name in declared, f'{executable} declares no parameter {name!r}'
            elif isinstance(item, ast.Call) and call_name(item) == 'config_file':
                path = ROOT / 'config' / ast.literal_eval(item.args[0])
                params = yaml.safe_load(path.read_text())[node_name]['ros__parameters']
                unknown = set(params) - declared
                assert not unknown, f'{path.name} sets undeclared parameters {unknown}'


def test_default_model_is_bundled(launch_tree):
    """A model argument's default must name a model folder that ships with the package."""
    _, tree = launch_tree
    for call in calls(tree, 'DeclareLaunchArgument'):
        if ast.literal_eval(call.args[0]) != 'model':
            continue
        default = keyword(call, 'default_value')
        assert isinstance(default, ast.Attribute) and default.attr == 'BUNDLED_MODEL', \
            'the model argument defaults to spec.BUNDLED_MODEL'
        folder = ROOT / 'models' / spec.BUNDLED_MODEL
        assert (folder / 'model.onnx').is_file() and (folder / 'model_metadata.json').is_file()
