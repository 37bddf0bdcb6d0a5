"""Drive the car: camera -> ONNX inference -> servo/motor, parameters from config/*.yaml.

    ros2 launch deepracer_nodes car.launch.py model:=my_model camera_device:=/dev/video0 \
        max_speed_scale:=0.6

The car starts stopped; enable it with
    ros2 service call /servo/enable std_srvs/srv/SetBool "{data: true}"
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
    model = LaunchConfiguration('model')
    camera_device = LaunchConfiguration('camera_device')
    max_speed_scale = LaunchConfiguration('max_speed_scale')
    use_sim_time = LaunchConfiguration('use_sim_time')
    common = {'use_sim_time': ParameterValue(use_sim_time, value_type=bool)}

    return LaunchDescription([
        DeclareLaunchArgument(
            'model', default_value=spec.BUNDLED_MODEL,
            description='Model to drive: a name under the models folders or a folder path '
                        'holding model.onnx and model_metadata.json'),
        DeclareLaunchArgument(
            'camera_device', default_value='auto',
            description="V4L2 device path or index, 'auto' to probe, or a video file or "
                        'image folder to play instead of a camera'),
        DeclareLaunchArgument(
            'max_speed_scale', default_value='1.0',
            description="Throttle scale in [0, 1], the DeepRacer console's max speed %"),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Follow /clock (simulation) instead of the system clock'),
        Node(
            package=PACKAGE, executable='camera_node', name='camera_node', output='screen',
            parameters=[config_file('camera.yaml'), common,
                        {'source': ParameterValue(camera_device, value_type=str)}]),
        Node(
            package=PACKAGE, executable='inference_node', name='inference_node',
            output='screen',
            parameters=[config_file('inference.yaml'), common,
                        {'model': ParameterValue(model, value_type=str)}]),
        Node(
            package=PACKAGE, executable='servo_node', name='servo_node', output='screen',
            parameters=[config_file('servo.yaml'), common,
                        {'max_speed_scale': ParameterValue(max_speed_scale, value_type=float)}]),
    ])
