"""The README documents every parameter the nodes declare and every topic of the contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rclpy.parameter import Parameter

from deepracer_nodes.camera_node import CameraNode
from deepracer_nodes.core import spec
from deepracer_nodes.inference_node import InferenceNode
from deepracer_nodes.servo_node import ServoNode
from deepracer_nodes.sim_node import SimNode

README = (Path(__file__).resolve().parent.parent / 'README.md').read_text()
# Declared by rclpy itself on every node.
RCLPY_PARAMETERS = {'use_sim_time', 'start_type_description_service'}


def readme_section(title: str) -> str:
    match = re.search(rf'^### {title}\n(.*?)(?=^#)', README, re.S | re.M)
    assert match, f'README has no section "### {title}"'
    return match.group(1)


@pytest.mark.parametrize('node_class', [CameraNode, InferenceNode, ServoNode, SimNode],
                         ids=lambda c: c.__name__)
def test_every_declared_parameter_is_documented(node_class, ros_context, tmp_path):
    overrides = []
    if node_class is ServoNode:  # no PWM hardware here
        overrides = [Parameter('backend', value='sim'),
                     Parameter('calibration_file', value=str(tmp_path / 'none.json'))]
    node = node_class(context=ros_context, parameter_overrides=overrides)
    try:
        declared = set(node._parameters) - RCLPY_PARAMETERS
        section = readme_section(node.get_name())
    finally:
        node.destroy_node()
    documented = set(re.findall(r'^\| `(\w+)` \|', section, re.M))
    assert declared - documented == set(), 'undocumented parameters'
    assert documented - declared == set(), 'documented parameters that do not exist'


def test_every_topic_of_the_contract_is_documented():
    missing = [name for name in vars(spec.TOPICS).values() if f'`{name}`' not in README]
    assert not missing, f'README does not document {missing}'
