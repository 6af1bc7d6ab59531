"""Connector kinds by name, and the factory that builds one for an account."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from warden.errors import ConfigError

if TYPE_CHECKING:
    from warden.accounts import AccountConfig
    from warden.connectors.base import ApiConnector, Connector
    from warden.connectors.http import HttpSettings

__all__ = ["api_connector_kinds", "build_api_connector", "build_connector", "connector_kinds"]


def _http_with_policy(config: AccountConfig, base_url: str) -> HttpSettings:
    """Return the account's HTTP settings, with a policy limited to ``base_url`` unless the account sets one."""
    from warden.connectors.policy import SitePolicy

    if config.http.policy is not None:
        return config.http
    return replace(config.http, policy=SitePolicy.for_base_url(base_url))


def _roundcube(config: AccountConfig) -> Connector:
    from warden.connectors.roundcube import RoundcubeConnector

    http = _http_with_policy(config, config.base_url)
    return RoundcubeConnector(config.base_url, account=config.name, http=http)


def _webapp(config: AccountConfig) -> Connector:
    from warden.connectors.webapp import WebAppConnector, parse_webapp_options

    options = parse_webapp_options(config.connector_options, account=config.name)
    http = _http_with_policy(config, config.base_url)
    return WebAppConnector(config.base_url, account=config.name, http=http, options=options)


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


# -- API connectors of the oauth access path --------------------------------------


def _imap(config: AccountConfig) -> ApiConnector:
    from warden.connectors.imap import ImapConnector, parse_imap_options

    options = parse_imap_options(config.api_options, account=config.name)
    return ImapConnector(options, account=config.name, username=config.username)


def _http_api(config: AccountConfig) -> ApiConnector:
    from warden.connectors.http_api import HttpApiConnector, parse_http_api_options

    options = parse_http_api_options(config.api_options, account=config.name)
    return HttpApiConnector(options, account=config.name, http=_http_with_policy(config, options.base_url))


_API_FACTORIES: dict[str, Callable[[AccountConfig], ApiConnector]] = {
    "http-api": _http_api,
    "imap": _imap,
}


def api_connector_kinds() -> list[str]:
    """Return the names accepted in an account's ``api_connector`` field."""
    return sorted(_API_FACTORIES)


def build_api_connector(config: AccountConfig) -> ApiConnector:
    """Return the API connector of the account's oauth access path; raise :class:`ConfigError` for an unknown kind."""
    factory = _API_FACTORIES.get(config.api_connector)
    if factory is None:
        raise ConfigError(
            f"Account '{config.name}' names API connector '{config.api_connector}', which does not exist. "
            f"Use one of: {', '.join(api_connector_kinds())}."
        )
    return factory(config)
