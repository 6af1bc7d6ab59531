"""Install, start and stop the local real stack on loopback.

Components, each started from its own run directory with a pid file and a log:

- :class:`stack.openbao.OpenBaoDevServer`: OpenBao (the Vault API) in dev mode.
- :class:`stack.oidc.OidcProvider`: an OAuth 2.0 / OpenID Connect provider (the npm
  package ``oidc-provider``, from ``stack/oidc-provider/``).
- :class:`stack.mail.MailServer`: Dovecot IMAP plus Roundcube webmail (php-fpm, nginx);
  Dovecot also accepts the provider's access tokens (XOAUTH2, OAUTHBEARER).
- :class:`stack.prefect_server.PrefectServer`: ``prefect server start``.

``python -m stack up`` starts all of them for development (see ``stack.__main__``);
``stack.testing`` provides session-scoped pytest fixtures; ``stack/install.sh``
installs the Debian packages, the provider's npm packages and the virtual
environment they need.
"""
