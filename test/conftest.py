"""Shared test fixtures: real rclpy in a private context, isolated from other ROS graphs."""

from __future__ import annotations

import os
import time

import pytest

# Each test session gets its own DDS domain and stays on this host, so two test runs on
# one machine (or a car on the same network) never see each other's topics.
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')


@pytest.fixture
def ros_context():
    """A private, initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture
def executor(ros_context):
    """A single-threaded executor on the private context; its nodes are destroyed after.

    Single-threaded as the nodes' own main(): rclpy's MultiThreadedExecutor piles up
    pending futures when spun with spin_once and slows a test to a crawl (profiled).
    """
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ros_context)
    yield ex
    for node in list(ex.get_nodes()):
        ex.remove_node(node)
        node.destroy_node()
    ex.shutdown(timeout_sec=2.0)


@pytest.fixture
def processes():
    """Node processes a test starts; each ends through its own shutdown path afterwards."""
    from deepracer_nodes.ros_runtime import stop_processes

    started: list = []
    yield started
    stop_processes(started)


def spin_until(executor, condition, timeout_s: float = 10.0, step_s: float = 0.01) -> bool:
    """Spin the executor until condition() is true or the deadline passes; return condition()."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=step_s)
    return bool(condition())
