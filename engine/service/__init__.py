"""Running headless on a stage box: systemd notify, config, crash recovery, health, reload."""

from engine.service.config import ServiceConfig, ServiceConfigError, load_config
from engine.service.health import StatusUnavailable, query_http, query_osc
from engine.service.notify import Notifier
from engine.service.state import StateStore

__all__ = [
    "Notifier",
    "ServiceConfig",
    "ServiceConfigError",
    "StateStore",
    "StatusUnavailable",
    "load_config",
    "query_http",
    "query_osc",
]
