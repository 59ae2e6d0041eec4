"""ROS-free OccuSeg core: voxels, network, losses, super-voxels, clustering, evaluation.

Nothing under this package imports rclpy.
"""
