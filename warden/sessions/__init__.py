"""Saved browser sessions: their model, encrypted storage, expiry forecast and the browser that makes them."""
