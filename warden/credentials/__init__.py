"""Vault tokens, their policies, and the redaction of secrets in logs."""
