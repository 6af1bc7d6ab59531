"""Connector kinds by name, and the factory that builds one for an account."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from warden.errors import ConfigError

if TYPE_CHECKING:
    from warden.accounts import AccountConfig
    from warden.connectors.base import Connector

__all__ = ["build_connector", "connector_kinds"]


def _roundcube(config: AccountConfig) -> Connector:
    from warden.connectors.roundcube import RoundcubeConnector

    return RoundcubeConnector(config.base_url, account=config.name, http=config.http)


def _webapp(config: AccountConfig) -> Connector:
    from warden.connectors.webapp import WebAppConnector, parse_webapp_options

    options = parse_webapp_options(config.connector_options, account=config.name)
    return WebAppConnector(config.base_url, account=config.name, http=config.http, options=options)


_FACTORIES: dict[str, Callable[[AccountConfig], Connector]] = {
    "roundcube": _roundcube,
    "webapp": _webapp,
}


def connector_kinds() -> list[str]:
    """Return the names accepted in an account's ``connector`` field."""
    return sorted(_FACTORIES)


def build_connector(config: AccountConfig) -> Connector:
    """Return the connector for ``config.connector``; raise :class:`ConfigError` for an unknown kind."""
    factory = _FACTORIES.get(config.connector)
    if factory is None:
        raise ConfigError(
            f"Account '{config.name}' names connector '{config.connector}', which does not exist. "
            f"Use one of: {', '.join(connector_kinds())}."
        )
    return factory(config)
