"""Race in the embedded simulator: sim -> camera topic -> inference -> servo (sim backend)
-> /sim/cmd_vel -> sim, every node on sim time, parameters from config/sim.yaml.

    ros2 launch deepracer_nodes sim.launch.py track:=hairpin model:=my_model \
        max_speed_scale:=0.8 real_time_factor:=1.0

The car starts stopped, as on the real car; the race clock starts when it first moves:
    ros2 service call /servo/enable std_srvs/srv/SetBool "{data: true}"
Race state (JSON): ros2 topic echo /sim/race_state. Headless with results and a video:
`deepracer sim` (`make sim`).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from deepracer_nodes.core import spec

PACKAGE = spec.PACKAGE_NAME


def config_file(name):
    """A parameter file installed in the package's share/config folder."""
    return PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', name])


def generate_launch_description():
    track = LaunchConfiguration('track')
    laps = LaunchConfiguration('laps')
    model = LaunchConfiguration('model')
    max_speed_scale = LaunchConfiguration('max_speed_scale')
    real_time_factor = LaunchConfiguration('real_time_factor')
    randomise = LaunchConfiguration('randomise')
    reward_function = LaunchConfiguration('reward_function')
    # The simulator publishes /clock; every node follows it.
    common = {'use_sim_time': True}

    return LaunchDescription([
        DeclareLaunchArgument(
            'track', default_value='loop',
            description='Bundled track (loop, hairpin, s_bends) or the path of a DeepRacer '
                        'route .npy file'),
        DeclareLaunchArgument(
            'laps', default_value='0',
            description='Laps to race before the simulation stops; 0 = race on forever'),
        DeclareLaunchArgument(
            'model', default_value=spec.BUNDLED_MODEL,
            description='Model to drive: a name under the models folders or a folder path '
                        'holding model.onnx and model_metadata.json'),
        DeclareLaunchArgument(
            'max_speed_scale', default_value='1.0',
            description="Throttle scale in [0, 1], the DeepRacer console's max speed %"),
        DeclareLaunchArgument(
            'real_time_factor', default_value='0.0',
            description='0 = lockstep with the pipeline, as fast as it answers; 1 = real '
                        'time; 2 = twice real time'),
        DeclareLaunchArgument(
            'randomise', default_value='false',
            description='Randomise colours, lighting and sensor noise (sim-to-real)'),
        DeclareLaunchArgument(
            'reward_function', default_value='',
            description='Path of a DeepRacer reward_function(params) file called every '
                        'step; empty = none'),
        Node(
            package=PACKAGE, executable='sim_node', name='sim_node', output='screen',
            parameters=[config_file('sim.yaml'), common, {
                'track': ParameterValue(track, value_type=str),
                'laps': ParameterValue(laps, value_type=int),
                'real_time_factor': ParameterValue(real_time_factor, value_type=float),
                'randomise': ParameterValue(randomise, value_type=bool),
                'reward_function': ParameterValue(reward_function, value_type=str)}]),
        Node(
            package=PACKAGE, executable='inference_node', name='inference_node',
            output='screen',
            parameters=[config_file('sim.yaml'), common,
                        {'model': ParameterValue(model, value_type=str)}]),
        Node(
            package=PACKAGE, executable='servo_node', name='servo_node', output='screen',
            parameters=[config_file('sim.yaml'), common,
                        {'max_speed_scale': ParameterValue(max_speed_scale, value_type=float)}]),
    ])
