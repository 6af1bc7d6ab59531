"""Expiry forecasts from cookies, JWTs and sliding lifetimes."""

import base64
import json
import random
from datetime import UTC, datetime, timedelta

from warden.sessions.forecast import forecast_expiry, refresh_margin
from warden.sessions.state import SessionState, decode_jwt_expiry


def make_jwt(expiry: datetime) -> str:
    def segment(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment({'exp': int(expiry.timestamp())})}.c2lnbmF0dXJl"


def test_jwt_expiry_decoded():
    expiry = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert decode_jwt_expiry(make_jwt(expiry)) == expiry
    assert decode_jwt_expiry("Bearer " + make_jwt(expiry)) == expiry


def test_non_jwt_values_ignored():
    assert decode_jwt_expiry("a.b.c") is None
    assert decode_jwt_expiry("plain-session-value") is None
    assert decode_jwt_expiry("") is None


def test_session_cookies_give_no_forecast():
    state = SessionState(cookies=[{"name": "roundcube_sessid", "value": "x", "domain": "127.0.0.1", "expires": -1}])
    forecast = forecast_expiry(state, last_valid_at=None, sliding_lifetime_seconds=600)
    assert forecast.expires_at is None
    assert forecast.source is None


def test_sliding_lifetime_counts_from_last_valid():
    state = SessionState()
    last_valid = datetime(2030, 1, 1, tzinfo=UTC)
    forecast = forecast_expiry(state, last_valid_at=last_valid, sliding_lifetime_seconds=600)
    assert forecast.expires_at == last_valid + timedelta(seconds=600)
    assert forecast.source == "sliding"


def test_earliest_source_wins():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    jwt_expiry = now + timedelta(seconds=120)
    state = SessionState(
        cookies=[
            {"name": "auth", "value": "x", "domain": "example.org", "expires": (now + timedelta(hours=1)).timestamp()},
            {
                "name": "prefs",
                "value": "y",
                "domain": "example.org",
                "expires": (now + timedelta(seconds=5)).timestamp(),
            },
        ],
        origins=[{"origin": "https://example.org", "localStorage": [{"name": "token", "value": make_jwt(jwt_expiry)}]}],
    )
    forecast = forecast_expiry(
        state, last_valid_at=now, sliding_lifetime_seconds=600, auth_cookie_names=frozenset({"auth"})
    )
    assert forecast.expires_at == jwt_expiry
    assert forecast.source == "jwt"


def test_refresh_margin_stays_within_jitter():
    rng = random.Random(7)
    margins = [refresh_margin(600, fraction=0.2, jitter_fraction=0.25, rng=rng).total_seconds() for _ in range(200)]
    assert min(margins) >= 90
    assert max(margins) <= 150
    assert len(set(margins)) > 100
