"""The one-time authorization of an OAuth account: authorization code with PKCE on a loopback redirect.

A person opens the authorization URL, logs in at the provider and consents.
The provider then redirects to ``http://127.0.0.1:PORT/callback`` with a code.
That code and the PKCE verifier are exchanged for the first refresh token. That token
goes straight to the vault; nothing here writes it anywhere else.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import SecretStr

from warden.credentials.oauth import OAuthClient, OAuthSettings, TokenSet
from warden.errors import ConfigError, LoginRequired

__all__ = ["AuthorizationRequest", "finish_authorization", "start_authorization"]


@dataclass(frozen=True)
class AuthorizationRequest:
    """One pending authorization: the URL to open, and what the redirect must match."""

    url: str
    redirect_uri: str
    state: str
    code_verifier: SecretStr


def start_authorization(settings: OAuthSettings, *, redirect_uri: str, account: str) -> AuthorizationRequest:
    """Build the authorization URL (response type code, PKCE S256, a random state)."""
    if not settings.authorization_url:
        raise ConfigError(
            f"Account '{account}' has no OAuth authorization_url; set it on the account Block to authorize."
        )
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    scope = settings.scope if "offline_access" in settings.scope.split() else f"{settings.scope} offline_access"
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": f"openid {scope}" if "openid" not in scope.split() else scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "prompt": "consent",
        }
    )
    return AuthorizationRequest(
        url=f"{settings.authorization_url}?{query}",
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=SecretStr(verifier),
    )


async def finish_authorization(
    settings: OAuthSettings,
    client_secret: SecretStr,
    request: AuthorizationRequest,
    redirect_url: str,
    *,
    account: str,
) -> TokenSet:
    """Check the redirect against ``request``, exchange its code, and return tokens with a refresh token."""
    query = parse_qs(urlsplit(redirect_url.strip()).query)
    if not {"code", "state", "error"} & query.keys():
        raise LoginRequired(
            f"Invalid redirect address for account '{account}': it contains no code, "
            "state or error. Paste the whole address the browser was sent to after the consent page."
        )
    if "error" in query:
        raise LoginRequired(
            f"The provider rejected the authorization of account '{account}': {query['error'][0]} "
            f"{query.get('error_description', [''])[0]}. Run `warden oauth authorize {account}` again."
        )
    if query.get("state", [""])[0] != request.state:
        raise LoginRequired(
            f"The redirect for account '{account}' carries another state than the request: it belongs to "
            "another authorization, or was forged. Start again with `warden oauth authorize`."
        )
    code = query.get("code", [""])[0]
    if not code:
        raise LoginRequired(f"The redirect for account '{account}' contains no authorization code. Start again.")

    client = OAuthClient(settings, client_secret, account=account)
    tokens = await client.exchange_code(
        code, redirect_uri=request.redirect_uri, code_verifier=request.code_verifier.get_secret_value()
    )
    if tokens.refresh_token is None:
        raise LoginRequired(
            f"The provider authorized account '{account}' without a refresh token. Ask for the offline_access "
            "scope (or the provider's equivalent) and consent to it."
        )
    return tokens
