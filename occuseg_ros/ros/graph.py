"""Questions about the ROS graph that nodes ask for their diagnostics."""

from __future__ import annotations

from rclpy.node import Node


def type_name(msg_type: type) -> str:
    """``sensor_msgs/msg/PointCloud2`` for the class ``sensor_msgs.msg.PointCloud2``."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def wrong_type_publishers(node: Node, topic: str, msg_type: type) -> int:
    """Publishers on ``topic`` (resolved like the node's own names) of another type: DDS
    never delivers their messages, so the node can only report that they exist."""
    expected = type_name(msg_type)
    return sum(info.topic_type != expected
               for info in node.get_publishers_info_by_topic(node.resolve_topic_name(topic)))
