"""ament_python package, installable with colcon or plain pip.

spconv comes as one of two extras that overwrite each other: ``[cpu]`` (the CPU build,
the default everywhere in this repository) or ``[cuda]`` (``spconv-cu118``). Install one.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "occuseg_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/models", glob("models/*.pt")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools", "numpy>=1.24", "numba>=0.59", "torch>=2.1", "pyyaml",
                      "open3d>=0.18", "rosbags>=0.10"],
    extras_require={
        "cpu": ["spconv==2.3.8"],
        "cuda": ["spconv-cu118==2.3.8"],
        "ros": ["ros-rclpy", "ros-sensor-msgs", "ros-visualization-msgs", "ros-std-msgs",
                "ros-std-srvs", "ros-geometry-msgs", "ros-nav-msgs", "ros-diagnostic-msgs",
                "ros-rmw-fastrtps-cpp"],
        "test": ["pytest", "hypothesis"],
    },
    zip_safe=True,
    maintainer="occuseg_ros developers",
    maintainer_email="occuseg-ros@users.noreply.github.com",
    description="Real-time OccuSeg 3D instance segmentation of a live reconstruction for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={"console_scripts": [
        "occuseg = occuseg_ros.cli:main",
        "occuseg_node = occuseg_ros.ros.segmentation_node:main",
        "rgbd_reconstructor = occuseg_ros.ros.reconstructor_node:main",
        "sim_camera = occuseg_ros.ros.sim_camera_node:main",
    ]},
)
