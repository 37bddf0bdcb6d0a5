"""Helpers that run nodes: a private DDS domain, node processes, waiting."""

import os

import pytest

from deepracer_nodes import ros_runtime


def test_isolate_dds_domain_sets_the_environment(monkeypatch):
    monkeypatch.setenv('ROS_DOMAIN_ID', '0')
    assert ros_runtime.isolate_dds_domain(42) == 42
    assert os.environ['ROS_DOMAIN_ID'] == '42'
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    own = ros_runtime.isolate_dds_domain()
    assert own == 1 + os.getpid() % 100 and os.environ['ROS_DOMAIN_ID'] == str(own)


@pytest.mark.parametrize('domain', [-1, ros_runtime.MAX_DOMAIN_ID + 1])
def test_isolate_dds_domain_refuses_ids_out_of_range(domain, monkeypatch):
    monkeypatch.setenv('ROS_DOMAIN_ID', '7')
    with pytest.raises(ValueError, match='domain id'):
        ros_runtime.isolate_dds_domain(domain)
    assert os.environ['ROS_DOMAIN_ID'] == '7'


def test_wait_for_reports_the_wait_or_none():
    assert ros_runtime.wait_for(lambda: True, 1.0) < 0.1
    assert ros_runtime.wait_for(lambda: False, 0.05) is None


def test_a_node_process_ends_through_its_shutdown_path(tmp_path):
    process = ros_runtime.start_node_process('camera_node', capture_stderr=True,
                                             source=str(tmp_path / 'no_such_folder'))
    process.wait(timeout=60)
    log = process.stderr.read()
    assert process.returncode == 1  # refused its source: 'cannot start', no traceback
    assert b'cannot start' in log and b'no_such_folder' in log
    assert b'Traceback' not in log
