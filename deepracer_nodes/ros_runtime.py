"""Running several nodes in one process on a private ROS graph (benchmarks, `deepracer sim`).

Each node gets its own executor in its own thread, as if it ran in its own process with
its own main(): one slow callback in one node never delays another node's callbacks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
