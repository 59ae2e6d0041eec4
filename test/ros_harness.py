"""Running real nodes in a test: an executor thread, a probe that records topics, waiting.

Everything goes through DDS (rmw_fastrtps) on the test run's own domain (the ``ros_context``
fixture); nothing is mocked.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from occuseg_ros.ros.graph import NodeThreads


class Spinner:
    """Spins nodes, each in its own single-threaded executor and thread (as the package's
    processes do: :class:`occuseg_ros.ros.graph.NodeThreads`), until :meth:`close`, which
    also destroys them."""

    def __init__(self, *nodes: Node) -> None:
        self.nodes = list(nodes)
        self._threads = NodeThreads(*nodes)

    def close(self) -> None:
        self._threads.stop()
        for node in self.nodes:
            node.destroy_node()


class Probe(Node):
    """A node that publishes test input and records what it receives, per topic."""

    def __init__(self, name: str = "probe") -> None:
        super().__init__(name)
        self.received: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def listen(self, msg_type: type, topic: str, latched: bool = True) -> None:
        """Record every message on ``topic`` (reliable; transient local when ``latched``)."""
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                         durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                     else DurabilityPolicy.VOLATILE))
        self.received.setdefault(topic, [])

        def store(msg: Any, topic: str = topic) -> None:
            with self._lock:
                self.received[topic].append(msg)

        self.create_subscription(msg_type, topic, store, qos)

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.received[topic])

    def clear(self, topic: str) -> None:
        with self._lock:
            self.received[topic].clear()


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str,
             details: Callable[[], str] | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout,
    followed by ``details()`` (a log tail, say) where given."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    more = f"\n{details()}" if details is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{more}")


def wait_for_subscribers(publisher: Any, count: int = 1, timeout_s: float = 10.0) -> None:
    """Wait until DDS discovery matched ``count`` subscriptions to ``publisher``."""
    wait_for(lambda: publisher.get_subscription_count() >= count, timeout_s,
             f"{count} subscriber(s) on {publisher.topic_name}")
