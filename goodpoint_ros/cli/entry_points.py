"""The console scripts, each a thin door to its module's ``main``.

Why a door: a ROS 2 machine where the Python requirements never got pip-installed (colcon builds
the package, but rosdep knows no ``torch``) would otherwise answer ``ros2 run goodpoint_ros
extractor`` with a traceback from deep inside an import. Here a missing third-party package ends
the program with one line naming it and exit status 2; anything else raises as usual.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def _door(target: str, prog: str) -> Callable[[], object]:
    module, func = target.split(":")

    def run() -> object:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            missing = (e.name or "").split(".")[0]
            if not missing or missing == "goodpoint_ros":
                raise
            print(
                f"{prog}: the Python package '{missing}' is not installed; install the requirements "
                "(`make setup`, or `pip install -r requirements.txt -c constraints.txt`)",
                file=sys.stderr,
            )
            sys.exit(2)
        return getattr(mod, func)()

    run.__qualname__ = run.__name__ = prog.replace("-", "_")
    run.target = target  # type: ignore[attr-defined]  # what the door opens (test_packaging)
    return run


extract = _door("goodpoint_ros.cli.extract:main", "goodpoint-extract")
match = _door("goodpoint_ros.cli.match:main", "goodpoint-match")
export = _door("goodpoint_ros.backends.export:main", "goodpoint-export")
bag = _door("goodpoint_ros.cli.bag:main", "goodpoint-bag")
train = _door("goodpoint_ros.training.train:main", "goodpoint-train")
evaluate = _door("goodpoint_ros.training.evaluate:main", "goodpoint-eval")
extractor = _door("goodpoint_ros.ros.extractor_node:main", "goodpoint_extractor")
player = _door("goodpoint_ros.ros.player:main", "goodpoint_player")
demo = _door("goodpoint_ros.ros.demo:main", "goodpoint-demo")
