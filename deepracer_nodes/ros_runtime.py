"""Running nodes: in one process on a private ROS graph (benchmarks, `deepracer sim`), as
separate processes (benchmarks, fault tests), and a node's main().

Each node gets its own executor in its own thread, as if it ran in its own process with
its own main(): one slow callback in one node never delays another node's callbacks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Fast DDS derives ports from the domain id; above this they leave the valid range.
MAX_DOMAIN_ID = 232


def isolate_dds_domain(domain: int | None = None) -> int:
    """Put this process, and the node processes it starts, on a DDS domain of its own and
    on this host only, so another ROS graph on the machine (a car stack, another
    simulation, a test run) neither feeds nor loads it. None picks one from the process
    id. Call it before the first rclpy context is created."""
    domain = 1 + os.getpid() % 100 if domain is None else domain
    if not 0 <= domain <= MAX_DOMAIN_ID:
        raise ValueError(f'a ROS domain id is 0..{MAX_DOMAIN_ID}, got {domain}')
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return domain


@contextmanager
def ros_graph() -> Iterator[object]:
    """A private rclpy context on this host only, shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


class NodeThreads:
    """Each node spun by its own executor in its own thread, as in its main().

    single_threaded=True gives each node a SingleThreadedExecutor (the lower overhead per
    callback, what the servo and sim nodes' main() use); False a MultiThreadedExecutor with
    two threads.
    """

    def __init__(self, context, single_threaded: bool = False) -> None:
        self._context = context
        self._single_threaded = single_threaded
        self._executors: list = []
        self._threads: list[threading.Thread] = []

    def spin(self, node) -> None:
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
        if self._single_threaded:
            executor = SingleThreadedExecutor(context=self._context)
        else:
            executor = MultiThreadedExecutor(num_threads=2, context=self._context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, name=node.get_name(), daemon=True)
        thread.start()
        self._executors.append(executor)
        self._threads.append(thread)

    def stop(self) -> None:
        """Destroy every node (each runs its own shutdown path) and stop the executors."""
        for executor in self._executors:
            for node in list(executor.get_nodes()):
                executor.remove_node(node)
                node.destroy_node()
            executor.shutdown(timeout_sec=2.0)
        for thread in self._threads:
            thread.join(timeout=2.0)


def call_set_bool(context, service: str, value: bool, timeout_s: float = 5.0) -> str:
    """Call a std_srvs/SetBool service (e.g. the servo's start/stop) as a user would;
    returns its message, raises RuntimeError when it is missing or refuses."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import SetBool

    client_node = rclpy.create_node('set_bool_client', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client_node)
    try:
        client = client_node.create_client(SetBool, service)
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f'no service {service} within {timeout_s:g} s')
        future = client.call_async(SetBool.Request(data=value))
        executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        result = future.result() if future.done() else None
        if result is None or not result.success:
            reason = result.message if result is not None else 'no reply'
            raise RuntimeError(f'{service} refused {value}: {reason}')
        return result.message
    finally:
        executor.shutdown(timeout_sec=1.0)
        client_node.destroy_node()


def run_node(node_class, args: list[str] | None = None, multi_threaded: bool = False) -> int:
    """A node's main(): init, build, spin until Ctrl-C or shutdown, then destroy the node
    (its own shutdown path: neutral PWM, a closed camera) and shut down. A node refusing
    its settings (ValueError) is logged as such and the exit code is 1, never a traceback.
    """
    import rclpy
    from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                                 SingleThreadedExecutor)

    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        executor = MultiThreadedExecutor(num_threads=2) if multi_threaded \
            else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as error:
        if node is not None:
            raise
        rclpy.logging.get_logger(node_class.__name__).fatal(f'cannot start: {error}')
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


# --- nodes as separate processes (benchmarks, fault tests), as `ros2 launch` runs them ------

def start_node_process(module: str, capture_stderr: bool = False,
                       **parameters) -> subprocess.Popen:
    """`python -m deepracer_nodes.<module> --ros-args -p name:=value ...`: the node's main().

    The process inherits this environment (ROS_DOMAIN_ID included). capture_stderr keeps
    its log for a failure message (read it only once the process has ended).
    """
    args = [sys.executable, '-m', f'deepracer_nodes.{module}', '--ros-args']
    for name, value in parameters.items():
        args += ['-p', f'{name}:={value}']
    return subprocess.Popen(args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if capture_stderr else subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))


def stop_processes(processes: list[subprocess.Popen], timeout_s: float = 10.0) -> None:
    """Ctrl-C each (resuming a frozen one first), so each runs its shutdown path; kill the
    ones that do not end in time."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition: Callable[[], bool], timeout_s: float,
             step_s: float = 0.005) -> float | None:
    """Seconds until condition() held, polled every step_s, or None at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(step_s)
    return None


def set_remote_parameter(node, target_node: str, name: str, value: str,
                         timeout_s: float = 10.0) -> tuple[bool, str]:
    """Set a string parameter of another node, as `ros2 param set` does, through `node`,
    which an executor spins on another thread; returns (successful, the node's reason)."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = node.create_client(SetParameters, f'/{target_node.lstrip("/")}/set_parameters')
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            return False, f'{target_node} offers no parameter service'
        future = client.call_async(SetParameters.Request(parameters=[Parameter(
            name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                            string_value=value))]))
        if wait_for(future.done, timeout_s, step_s=0.002) is None:
            return False, 'no reply'
        result = future.result().results[0]
        return result.successful, result.reason
    finally:
        node.destroy_client(client)
