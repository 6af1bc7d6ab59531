"""Normalising session files before any browser starts."""

import json

import pytest

from warden.errors import InvalidSessionFile
from warden.sessions.importing import load_session_file, normalize_session_data

NOW = 1_800_000_000.0


def cookie(**fields):
    base = {"name": "sid", "value": "abc123value", "domain": "mail.example.org", "path": "/"}
    base.update(fields)
    return base


def test_playwright_state_kept():
    state, report = normalize_session_data(
        {"cookies": [cookie(expires=-1, httpOnly=True)], "origins": []}, source="s.json", now=NOW
    )
    assert state.cookies[0].expires == -1
    assert state.cookies[0].http_only is True
    assert report.kept_session_cookies == ["sid"]


def test_bare_extension_array_normalized():
    exported = [
        {
            "domain": ".mail.example.org",
            "expirationDate": NOW + 3600,
            "hostOnly": True,
            "httpOnly": True,
            "name": "auth",
            "path": "/",
            "sameSite": "no_restriction",
            "secure": True,
            "session": False,
            "storeId": "0",
            "value": "token-value-1",
        },
        {"domain": "mail.example.org", "name": "pref", "value": "x", "session": True, "sameSite": "unspecified"},
    ]
    state, report = normalize_session_data(exported, source="cookies.json", now=NOW)
    auth, pref = state.cookies
    assert auth.domain == "mail.example.org"
    assert auth.expires == NOW + 3600
    assert auth.same_site == "None"
    assert pref.expires == -1
    assert pref.same_site == "Lax"
    assert report.source_shape.startswith("bare cookie array")


def test_other_negative_expiry_becomes_session():
    state, report = normalize_session_data({"cookies": [cookie(expires=-5)]}, source="s.json", now=NOW)
    assert state.cookies[0].expires == -1
    assert report.converted_to_session == ["sid"]


def test_expired_cookies_dropped():
    state, report = normalize_session_data(
        {"cookies": [cookie(expires=NOW - 10), cookie(name="live", expires=NOW + 10)]}, source="s.json", now=NOW
    )
    assert [c.name for c in state.cookies] == ["live"]
    assert report.dropped_expired == ["sid"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"origins": []}, "no 'cookies' and no 'origins'"),
        ({"cookies": {"sid": "abc"}}, "'cookies' is an object"),
        ({"cookies": "sid=abc"}, "'cookies' is a str"),
        ({"cookies": [cookie(domain=None)]}, "no 'domain' string"),
        ({"cookies": [cookie(expires="tomorrow")]}, "expires='tomorrow'"),
        ({"cookies": [cookie(sameSite="sometimes")]}, "sameSite='sometimes'"),
        ({"cookies": [cookie(expires=NOW - 1)]}, "every cookie in the file has expired"),
        ("just a string", "JSON str"),
    ],
)
def test_bad_shapes_rejected(data, expected):
    with pytest.raises(InvalidSessionFile) as caught:
        normalize_session_data(data, source="bad.json", now=NOW)
    assert expected in str(caught.value)
    assert "bad.json" in str(caught.value)


def test_origins_only_state_accepted():
    data = {"origins": [{"origin": "https://app.example.org", "localStorage": [{"name": "t", "value": "v"}]}]}
    state, _ = normalize_session_data(data, source="s.json", now=NOW)
    assert state.cookies == []
    assert state.origins[0].local_storage[0].value == "v"


def test_invalid_json_names_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"cookies": [')
    with pytest.raises(InvalidSessionFile) as caught:
        load_session_file(path)
    assert str(path) in str(caught.value)
    assert "line 1" in str(caught.value)


def test_missing_file_named(tmp_path):
    with pytest.raises(InvalidSessionFile) as caught:
        load_session_file(tmp_path / "absent.json")
    assert "absent.json" in str(caught.value)


def test_file_round_trip(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"cookies": [cookie(expires=-1)], "origins": []}))
    state, _ = load_session_file(path)
    assert state.to_playwright()["cookies"][0]["name"] == "sid"
