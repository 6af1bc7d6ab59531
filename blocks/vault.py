"""The vault Block: where the vault is and which AppRole the flows log in with."""

from __future__ import annotations

import os
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from warden.credentials.policies import TOKEN_ROLE
from warden.credentials.vault import VaultSettings
from warden.errors import ConfigError


class VaultConnection(Block):
    """Address of an OpenBao or Vault server and the AppRole role id of the runner.

    Holds no secret: the AppRole secret id comes from the worker's environment
    (``WARDEN_VAULT_SECRET_ID``), because Prefect serves Block values to anyone
    who can reach its API.

    Example:
        ```python
        from blocks.vault import VaultConnection

        vault = await VaultConnection.aload("default")
        settings = vault.settings()
        ```
    """

    _block_type_name: ClassVar[str] = "Warden Vault Connection"
    _block_type_slug: ClassVar[str] = "warden-vault-connection"
    _description: ClassVar[str] = "Address and AppRole role id of the vault that stores Connector Warden's secrets."

    address: str = Field(description="Vault API address, e.g. http://127.0.0.1:8200.")
    role_id: str = Field(description="AppRole role id of the runner identity (not a secret on its own).")
    approle_mount: str = Field(default="approle", description="Mount path of the AppRole auth method.")
    token_role: str = Field(default=TOKEN_ROLE, description="Token role that action tokens are created through.")
    secret_id_env: str = Field(
        default="WARDEN_VAULT_SECRET_ID",
        description="Environment variable of the worker that contains the AppRole secret id.",
    )
    timeout_seconds: float = Field(default=10.0, description="Timeout of each vault request, in seconds.")

    def settings(self, environ: dict[str, str] | None = None) -> VaultSettings:
        """Return the library's vault settings, with the secret id read from the environment.

        The variable named by ``secret_id_env`` holds the secret id; the same name with ``_WRAPPED``
        appended may instead hold a response-wrapped secret id, which the flow unwraps once.
        """
        source = os.environ if environ is None else environ
        wrapped_env = f"{self.secret_id_env}_WRAPPED"
        secret_id = source.get(self.secret_id_env, "")
        wrapped = source.get(wrapped_env, "")
        if not secret_id and not wrapped:
            raise ConfigError(
                f"Neither {self.secret_id_env} nor {wrapped_env} is set, so the flow cannot log in to the "
                f"vault at {self.address}. Set one in the worker's environment "
                "(the dev stack writes the first to .stack/runner.env)."
            )
        return VaultSettings(
            address=self.address,
            role_id=self.role_id,
            secret_id=SecretStr(secret_id),
            approle_mount=self.approle_mount,
            token_role=self.token_role,
            timeout_seconds=self.timeout_seconds,
            wrapped_secret_id=SecretStr(wrapped) if wrapped else None,
            wrapped_secret_id_source=wrapped_env,
        )
