"""Connectors: one module per site or protocol, behind the protocol in ``base``."""
