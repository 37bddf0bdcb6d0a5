"""The Gazebo launch files, checked statically (`launch` cannot be installed here) for what
is specific to Gazebo: the worlds they load, the foreign packages they start, topics from
spec only, sim time; and the servo configuration they load, run for real."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import yaml
from geometry_msgs.msg import Twist
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool

from conftest import spin_until
from deepracer_nodes.core import spec
from deepracer_nodes.sim import sdf_world, track_library

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = {flavour: ROOT / 'launch' / f'gazebo_{flavour}.launch.py'
          for flavour in sdf_world.FLAVOURS}
# Nodes of other packages a Gazebo launch file may start, by flavour.
FOREIGN_NODES = {'harmonic': {('ros_gz_bridge', 'parameter_bridge')}, 'classic': set()}
# Launch files of other packages each flavour includes.
INCLUDED = {'harmonic': {('ros_gz_sim', 'gz_sim.launch.py')},
            'classic': {('gazebo_ros', 'gzserver.launch.py'),
                        ('gazebo_ros', 'gzclient.launch.py')}}
OUR_NODES = {'inference_node', 'servo_node'}


def tree_of(flavour: str) -> ast.Module:
    path = LAUNCH[flavour]
    return ast.parse(path.read_text(), filename=str(path))


def call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, 'attr', '')


def calls(tree, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and call_name(n) == name]


def keyword(call: ast.Call, name: str):
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def literal(node) -> object:
    """A literal, or the module-level constant a name stands for (PACKAGE)."""
    if isinstance(node, ast.Name):
        return {'PACKAGE': spec.PACKAGE_NAME}[node.id]
    return ast.literal_eval(node)


def nodes(tree) -> list[tuple[str, str, ast.Call]]:
    return [(literal(keyword(c, 'package')), literal(keyword(c, 'executable')), c)
            for c in calls(tree, 'Node')]


def strings(tree) -> list[str]:
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


@pytest.fixture(params=sdf_world.FLAVOURS)
def flavour(request) -> str:
    return request.param


def test_launch_file_exists_for_each_flavour(flavour):
    tree = tree_of(flavour)
    assert 'generate_launch_description' in [f.name for f in tree.body
                                             if isinstance(f, ast.FunctionDef)]


def test_loads_its_flavours_worlds(flavour):
    tree = tree_of(flavour)
    suffixes = [c for c in calls(tree, 'world_suffix')]
    assert [literal(c.args[0]) for c in suffixes] == [flavour]
    track = next(c for c in calls(tree, 'DeclareLaunchArgument')
                 if literal(c.args[0]) == 'track')
    # Default and choices come from the track library, so every choice has its world.
    assert call_name(keyword(track, 'choices')) == 'track_names'
    for name in track_library.track_names():
        assert (ROOT / 'worlds' / (name + sdf_world.world_suffix(flavour))).is_file()


def test_starts_only_known_foreign_nodes_and_launch_files(flavour):
    tree = tree_of(flavour)
    started = {(package, executable) for package, executable, _ in nodes(tree)}
    ours = {executable for package, executable in started if package == spec.PACKAGE_NAME}
    assert ours == OUR_NODES, 'the simulated camera replaces camera_node'
    assert started - {(spec.PACKAGE_NAME, e) for e in ours} == FOREIGN_NODES[flavour]
    included = set()
    for call in calls(tree, 'PathJoinSubstitution'):
        parts = call.args[0].elts
        if isinstance(parts[0], ast.Call) and call_name(parts[0]) == 'FindPackageShare' \
                and len(parts) == 3 and isinstance(parts[2], ast.Constant):
            included.add((literal(parts[0].args[0]), literal(parts[2])))
    # The Classic file wraps gazebo_ros's launch files in a helper taking the file name.
    for call in calls(tree, 'gazebo_ros_launch'):
        included.add(('gazebo_ros', literal(call.args[0])))
    assert INCLUDED[flavour] <= included


def test_bridge_takes_its_topics_from_the_generator():
    for package, _, call in nodes(tree_of('harmonic')):
        if package == 'ros_gz_bridge':
            arguments = keyword(call, 'arguments')
            assert isinstance(arguments, ast.Call) and call_name(arguments) == 'bridge_arguments'
            assert keyword(call, 'remappings') is None, 'topics keep their spec names'


def test_no_topic_name_is_written_in_a_launch_file(flavour):
    topics = set(vars(spec.TOPICS).values())
    literals = set(strings(tree_of(flavour)))
    assert not literals & topics
    assert not any(s.startswith('/') for s in literals), 'topic names come from spec'


def test_our_nodes_run_on_sim_time_with_the_sim_servo_backend(flavour):
    tree = tree_of(flavour)
    assigned = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    for package, executable, call in nodes(tree):
        if package != spec.PACKAGE_NAME:
            continue
        items = [assigned.get(i.id, i) if isinstance(i, ast.Name) else i
                 for i in keyword(call, 'parameters').elts]
        dicts = [ast.literal_eval(i) for i in items if isinstance(i, ast.Dict)
                 and all(isinstance(v, ast.Constant) for v in i.values)]
        assert {'use_sim_time': True} in dicts, f'{executable} must follow /clock'
        files = [literal(i.args[0]) for i in items
                 if isinstance(i, ast.Call) and call_name(i) == 'config_file']
        if executable == 'servo_node':
            # gazebo.yaml after servo.yaml, so its backend wins.
            assert files == ['servo.yaml', *SERVO_OVERRIDES[flavour]]
    config = yaml.safe_load((ROOT / 'config' / 'gazebo.yaml').read_text())
    assert config['servo_node']['ros__parameters']['backend'] == 'sim'


def test_classic_keeps_gazebo_media_and_adds_the_worlds_to_its_resource_path():
    tree = tree_of('classic')
    setters = [c for c in calls(tree, 'SetEnvironmentVariable')
               if literal(c.args[0]) == 'GAZEBO_RESOURCE_PATH']
    assert len(setters) == 1
    parts = setters[0].args[1].elts
    assert call_name(parts[0]) == 'EnvironmentVariable' and literal(parts[0].args[0]) == \
        'GAZEBO_RESOURCE_PATH'
    assert isinstance(parts[-1], ast.Name) and parts[-1].id == 'worlds'


# --- the servo as the Gazebo launch files configure it drives the world's topic ------------

# The servo's parameter files after servo.yaml, per launch file.
SERVO_OVERRIDES = {'harmonic': ['gazebo.yaml'], 'classic': ['gazebo.yaml', 'gazebo_classic.yaml']}


def gazebo_servo_parameters(tmp_path, flavour) -> list[Parameter]:
    values = {}
    for name in ('servo.yaml', *SERVO_OVERRIDES[flavour]):
        values.update(yaml.safe_load((ROOT / 'config' / name).read_text())
                      ['servo_node']['ros__parameters'])
    values['calibration_file'] = str(tmp_path / 'calibration.json')  # factory defaults
    return [Parameter(k, value=v) for k, v in values.items()]


def test_servo_configured_for_gazebo_publishes_the_drive_twist(ros_context, executor,
                                                               tmp_path, flavour):
    """Harmonic's AckermannSteering takes the yaw rate in angular.z, Classic's
    gazebo_ros_ackermann_drive the steering angle: 1 m/s at 0.5 rad/s is atan(0.5 * L)."""
    import rclpy
    from deepracer_nodes.servo_node import ServoNode

    servo = ServoNode(context=ros_context,
                      parameter_overrides=gazebo_servo_parameters(tmp_path, flavour))
    probe = rclpy.create_node('gazebo_drive_probe', context=ros_context)
    received: list[Twist] = []
    probe.create_subscription(Twist, spec.TOPICS.sim_cmd_vel, received.append, 10)
    commands = probe.create_publisher(Twist, spec.TOPICS.cmd_vel, 10)
    enable = probe.create_client(SetBool, spec.TOPICS.servo_enable)
    try:
        executor.add_node(servo)
        executor.add_node(probe)
        assert spin_until(executor, lambda: enable.service_is_ready()
                          and commands.get_subscription_count() > 0, 10.0)
        future = enable.call_async(SetBool.Request(data=True))
        assert spin_until(executor, future.done, 5.0) and future.result().success
        command = Twist()
        command.linear.x, command.angular.z = 1.0, 0.5

        def driving() -> bool:
            commands.publish(command)
            return any(m.linear.x > 0.5 for m in received)
        assert spin_until(executor, driving, 10.0), 'no drive Twist for the world'
        drive = [m for m in received if m.linear.x > 0.5][-1]
        steering = math.atan(0.5 * spec.CAR.wheelbase_m / 1.0)
        if flavour == 'classic':
            assert drive.angular.z == pytest.approx(steering, abs=0.01)
        else:
            assert drive.angular.z == pytest.approx(
                drive.linear.x * math.tan(steering) / spec.CAR.wheelbase_m, abs=0.01)
    finally:
        executor.remove_node(servo)
        executor.remove_node(probe)
        servo.destroy_node()
        probe.destroy_node()
