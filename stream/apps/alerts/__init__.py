"""`cryptosent alerts`: the reference downstream subscriber. The window and rule logic is pure and
lives in `stream.core.windows` and `stream.core.rules`; this package is its Kafka shell."""

from stream.apps.alerts.metrics import AlertsStats
from stream.apps.alerts.service import AlertsService, run_alerts

__all__ = ["AlertsService", "AlertsStats", "run_alerts"]
