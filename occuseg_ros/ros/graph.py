"""What every node of the package shares: its main loop, raw input decoding, and the
questions about the ROS graph its diagnostics ask."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from .conversions import MessageError, message_from_bytes


def type_name(msg_type: type) -> str:
    """``sensor_msgs/msg/PointCloud2`` for the class ``sensor_msgs.msg.PointCloud2``."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def wrong_type_publishers(node: Node, topic: str, msg_type: type) -> int:
    """Publishers on ``topic`` (resolved like the node's own names) of another type: DDS
    never delivers their messages, so the node can only report that they exist."""
    expected = type_name(msg_type)
    return sum(info.topic_type != expected
               for info in node.get_publishers_info_by_topic(node.resolve_topic_name(topic)))


# Executors: one single-threaded executor per node. rclpy's MultiThreadedExecutor (9.1)
# delays callbacks by up to seconds: a cloud echoed through two nodes in one process took p50
# 129 ms, p95 2.8 s in one MultiThreadedExecutor (4 or 2 threads alike) and p50 4 ms, p95 5 ms
# with a SingleThreadedExecutor per node (2 cores, BENCHMARKS.md). A node's callbacks then run
# one at a time: inputs that arrive during a segmentation wait in their DDS queue (reliable,
# depth 50 by default) and are stored right after it.


def spin_node(node_class: type, program: str, args: list[str] | None = None) -> None:
    """Run one node under a single-threaded executor until Ctrl-C or SIGTERM: every node's
    ``main``. A signal only asks to stop: the callback in flight finishes (the executor runs
    callbacks in this, the main thread, where a KeyboardInterrupt would cut one short), then
    the node is destroyed, so ``destroy_node`` may save state from a consistent node.

    A configuration that cannot work (a bad parameter, a missing model) ends the process
    with one line on stderr and exit status 2 instead of a traceback.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    executor = None
    try:
        node = node_class()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


class NodeThreads:
    """Several nodes in one process, each spun by its own single-threaded executor in a
    thread of its own (see the note above :func:`spin_node`), until :meth:`stop`."""

    def __init__(self, *nodes: Node) -> None:
        self.nodes = list(nodes)
        self._stop = threading.Event()
        self._executors: list[SingleThreadedExecutor] = []
        self._threads: list[threading.Thread] = []
        for node in self.nodes:
            executor = SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
            thread = threading.Thread(target=self._spin, args=(executor,), daemon=True,
                                      name=f"spin {node.get_name()}")
            self._executors.append(executor)
            self._threads.append(thread)
            thread.start()

    def _spin(self, executor: SingleThreadedExecutor) -> None:
        # Short waits, so stop() never has to wake an executor whose guard it is destroying.
        while not self._stop.is_set():
            try:
                executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                return

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let each callback in flight finish, then stop spinning (the nodes stay alive)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        for executor in self._executors:
            executor.shutdown(timeout_sec=5.0)


def decoding(msg_type: type, callback: Callable[[Any], None],
             reject: Callable[[str], None]) -> Callable[[bytes], None]:
    """A raw-subscription callback: deserialise, hand corrupt messages' reason to
    ``reject`` (so they are counted, not dropped unseen by the middleware), else call."""

    def receive(data: bytes) -> None:
        try:
            msg = message_from_bytes(data, msg_type)
        except MessageError as exc:
            reject(str(exc))
            return
        callback(msg)

    return receive
