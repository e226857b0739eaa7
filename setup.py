"""ament_python package at the repo root: ``colcon build`` on ROS 2, ``pip install -e .`` in a venv.

The training code lives in ``training/`` at the repo root and installs as ``goodpoint_ros.training``,
the one name it is imported under (``goodpoint-train``, ``python -m goodpoint_ros.training.train``):
nothing but ``goodpoint_ros`` lands at the top level of site-packages, where a generic name like
``training`` would collide with other projects' modules. Not installed: ``scripts/`` (the dataset
builder), ``bench/``, ``test/`` and the resume states in ``resume/``.
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "goodpoint_ros"
training = package_name + ".training"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, package_name + ".*"])
    + [training]
    + [f"{training}.{p}" for p in find_packages("training")],
    package_dir={training: "training"},
    package_data={
        package_name: ["weights/*.pt", "weights/*.md"],
        training: ["configs/*.yaml"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    # goodpoint-eval --multiview (COLMAP reconstructions); the only module importing it is
    # training/multiview.py. requirements.txt lists it too, so that its test runs in `make test`.
    extras_require={"eval": ["pycolmap==4.2.1"]},
    zip_safe=False,
    maintainer="goodpoint_ros maintainers",
    maintainer_email="maintainers@goodpoint-ros.dev",
    description="Learned keypoints (GoodPoint, MD-Net) for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            # every script goes through goodpoint_ros.cli.entry_points: a missing dependency is one line
            # ROS-free tools
            "goodpoint-extract = goodpoint_ros.cli.entry_points:extract",
            "goodpoint-match = goodpoint_ros.cli.entry_points:match",
            "goodpoint-export = goodpoint_ros.cli.entry_points:export",
            "goodpoint-bag = goodpoint_ros.cli.entry_points:bag",
            "goodpoint-train = goodpoint_ros.cli.entry_points:train",
            "goodpoint-eval = goodpoint_ros.cli.entry_points:evaluate",
            # ROS 2 nodes (`ros2 run goodpoint_ros extractor`)
            "extractor = goodpoint_ros.cli.entry_points:extractor",
            "player = goodpoint_ros.cli.entry_points:player",
            "goodpoint-demo = goodpoint_ros.cli.entry_points:demo",
        ],
    },
)
