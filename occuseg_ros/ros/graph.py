"""What every node of the package shares: its main loop, raw input decoding, and the
questions about the ROS graph its diagnostics ask."""

from __future__ import annotations

import sys
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

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


def spin_node(node_class: type, program: str, args: list[str] | None = None,
              threads: int = 3) -> None:
    """Run one node under a multi-threaded executor until Ctrl-C or SIGTERM: every node's
    ``main``. The executor is stopped (callbacks in flight finish) before the node is
    destroyed, so ``destroy_node`` may save state without racing a callback.

    A configuration that cannot work (a bad parameter, a missing model) ends the process
    with one line on stderr and exit status 2 instead of a traceback.
    """
    rclpy.init(args=args)
    node = None
    executor = None
    try:
        node = node_class()
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if executor is not None:
            executor.shutdown()  # callbacks in flight finish before the node's last words
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


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
