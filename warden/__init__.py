"""Connector Warden: keep account connectors healthy, fetch politely, extract safely, wipe provably."""

__version__ = "0.1.0"
