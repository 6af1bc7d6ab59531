"""Prefect flows of Connector Warden: orchestration only, the work is in the ``warden`` library."""
