"""The operator dashboard: a FastAPI app over a status/command source. No ROS here.

`create_app(source)` serves the page and the API; `dashboard_node` (coirl_ros/nodes) supplies the
source from the running graph. See README "Dashboard".
"""

from coirl_ros.dashboard.app import create_app
from coirl_ros.dashboard.graph_status import GraphStatus
from coirl_ros.dashboard.server import DashboardServer, PortInUse, ServerError
from coirl_ros.dashboard.source import (
    CommandError,
    CommandRefused,
    CommandUnavailable,
    DashboardSource,
    NotFound,
)
from coirl_ros.dashboard.store_view import StoreView, success_curve

__all__ = [
    "CommandError",
    "CommandRefused",
    "CommandUnavailable",
    "DashboardServer",
    "DashboardSource",
    "GraphStatus",
    "NotFound",
    "PortInUse",
    "ServerError",
    "StoreView",
    "create_app",
    "success_curve",
]
