"""ROS 2 wrappers around ``occuseg_ros.core``: message conversions and the node."""
