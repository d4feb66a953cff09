"""`cryptosent dashboard`: a live page of the output and alerts topics."""

from stream.dashboard.app import Dashboard, create_app
from stream.dashboard.state import DashboardState

__all__ = ["Dashboard", "DashboardState", "create_app"]
