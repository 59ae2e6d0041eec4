"""Where the package's shared files (``config/``, ``models/``) are found.

In a source checkout they sit at the repository root; ``pip install .`` puts them under
``<prefix>/share/occuseg_ros/``; colcon puts them under each ``$AMENT_PREFIX_PATH`` entry's
``share/occuseg_ros/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "occuseg_ros"


def share_file(*parts: str) -> Path | None:
    """The first existing ``<share root>/<parts...>``, or None."""
    roots = [Path(__file__).resolve().parents[2], Path(sys.prefix) / "share" / PACKAGE]
    roots += [Path(p) / "share" / PACKAGE
              for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return next((r.joinpath(*parts) for r in roots if r.joinpath(*parts).is_file()), None)
