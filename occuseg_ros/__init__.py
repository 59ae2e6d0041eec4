"""occuseg_ros: real-time OccuSeg 3D instance segmentation for ROS 2.

``occuseg_ros.core`` is ROS-free (numpy arrays in, arrays out); ``occuseg_ros.ros`` wraps it.
"""

__version__ = "0.1.0"
