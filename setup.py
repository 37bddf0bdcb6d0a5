"""ament_python package: builds with colcon on a car, installs with pip on a laptop."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'deepracer_nodes'


def share_files(folder, pattern='*'):
    """One data_files entry installing folder/pattern under share/deepracer_nodes."""
    return (f'share/{package_name}/{folder}',
            [path for path in glob(f'{folder}/{pattern}') if not path.endswith('.gitkeep')])


def model_files():
    """Each bundled model folder installs as share/deepracer_nodes/models/<name>/."""
    entries = []
    for folder in sorted(glob('models/*/')):
        files = [p for p in glob(f'{folder}*') if not p.endswith('/')]
        entries.append((f'share/{package_name}/{folder.rstrip("/")}', files))
    return entries


# ROS 2 Jazzy and the Python libraries from PyPI, for machines without the ROS apt
# repository (laptops, CI). On a car the same come from apt and rosdep (package.xml),
# so they are an extra and not install_requires.
PYPI_ROS = [
    'ros-jazzy-rclpy',
    'ros-jazzy-sensor-msgs',
    'ros-jazzy-std-msgs',
    'ros-jazzy-geometry-msgs',
    'ros-jazzy-std-srvs',
    'ros-jazzy-diagnostic-msgs',
    'ros-jazzy-rmw-fastrtps-cpp',
]
RUNTIME = ['numpy>=1.24', 'opencv-python-headless>=4.8', 'onnxruntime>=1.17', 'pyyaml']

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{package_name}']),
        (f'share/{package_name}', ['package.xml']),
        share_files('launch', '*.py'),
        share_files('config', '*.yaml'),
        share_files('models', '*.md'),
        share_files('worlds'),
        *model_files(),
    ],
    install_requires=['setuptools'],
    extras_require={
        'laptop': PYPI_ROS + RUNTIME,
        # Simulation results: plots and a progress bar.
        'sim': ['matplotlib>=3.7', 'tqdm>=4.60'],
        # Training on CPU: the CPU build of PyTorch (other versions pull GBs of CUDA).
        'train': ['torch==2.13.0'],
        # Converting DeepRacer console models (TensorFlow frozen graphs) to ONNX: 1.6 GB.
        'convert': ['tensorflow-cpu', 'tf2onnx'],
        'test': ['pytest>=7', 'hypothesis>=6', 'onnx>=1.15', 'flake8',
                 # colcon builds the package in a test exactly as on a car.
                 'colcon-core', 'colcon-ros', 'colcon-python-setup-py'],
    },
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='deepracer_nodes developers',
    maintainer_email='deepracer-nodes@users.noreply.github.com',
    description='ROS 2 nodes that drive an AWS DeepRacer with a trained ONNX policy',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'camera_node = deepracer_nodes.camera_node:main',
            'inference_node = deepracer_nodes.inference_node:main',
            'servo_node = deepracer_nodes.servo_node:main',
            'sim_node = deepracer_nodes.sim_node:main',
            'deepracer = deepracer_nodes.cli:main',
        ],
    },
)
