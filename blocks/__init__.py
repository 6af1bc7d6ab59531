"""Prefect Block types of Connector Warden: configuration and vault paths, never secrets.

Register them with ``prefect block register -m blocks``.
"""

from blocks.account import ConnectorAccount
from blocks.roster import ModelRoster
from blocks.vault import VaultConnection

__all__ = ["ConnectorAccount", "ModelRoster", "VaultConnection"]
