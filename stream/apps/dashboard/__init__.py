"""`cryptosent dashboard`: a live page of the output and alerts topics."""

from stream.apps.dashboard.app import Dashboard, create_app
from stream.apps.dashboard.state import DashboardState

__all__ = ["Dashboard", "DashboardState", "create_app"]
