"""Where the package's shared files (config/, urdf/, sim/, launch/) are on this machine."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "coirl_ros"
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """`$COIRL_SHARE_DIR`, else the colcon install's share/coirl_ros, else the source checkout."""
    override = os.environ.get("COIRL_SHARE_DIR")
    if override:
        return Path(override)
    if (SOURCE_ROOT / "config").is_dir() and (SOURCE_ROOT / "package.xml").is_file():
        return SOURCE_ROOT  # editable install / source checkout: the files being edited win
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, PackageNotFoundError, KeyError, ValueError):
        return SOURCE_ROOT


def config_dir() -> Path:
    return share_dir() / "config"
