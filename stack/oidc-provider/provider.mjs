// OAuth 2.0 / OpenID Connect provider of the local stack, built on the npm package oidc-provider.
//
// Usage: node provider.mjs CONFIG_FILE
//
// stack/oidc.py writes CONFIG_FILE (issuer, listen address, routes, scopes, token lifetimes and
// the paths of the files below) and starts this script. Its module docstring describes the
// clients, users and event log.
//
// - clients file (JSON list of client metadata with secrets, mode 0600): read once at start.
// - users file (JSON object user name -> scrypt hash, mode 0600): read at every login and every
//   account lookup, so users added while the provider runs can log in at once.
// - signing keys file (JWKS with one RSA private key, mode 0600): created at the first start.
// - events file (JSON lines, mode 0600): one line per event, never with a token, code, secret or
//   password in it.
//
// Grants, tokens, sessions and interactions live in memory (StackMemoryAdapter below), so a
// restart loses all of them. Interaction cookies are signed with a key made at each start.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

// oidc-provider 9 calls URL.parse (Node 22.1, backported to 20.18) and crypto.hash (Node 21.7,
// backported to 20.12). It prints a warning on any Node that is not an LTS release from 22 on.
const MINIMUM_NODE = [20, 18];
const [nodeMajor, nodeMinor] = process.versions.node.split('.').map(Number);
if (nodeMajor < MINIMUM_NODE[0] || (nodeMajor === MINIMUM_NODE[0] && nodeMinor < MINIMUM_NODE[1])) {
  console.error(
    `error: Node ${process.versions.node} is too old for oidc-provider 9; `
    + `install Node ${MINIMUM_NODE.join('.')} or newer (Node 22 LTS is the supported line)`,
  );
  process.exit(1);
}

// Imported after the version check, so an old Node fails with the message above instead of a
// TypeError inside oidc-provider.
const { default: Provider, errors } = await import('oidc-provider');

const MAX_FORM_BYTES = 16_384;
const SCRYPT_KEY_BYTES = 32;

const configPath = process.argv[2];
if (!configPath) {
  console.error('error: the configuration file argument is missing. Usage: node provider.mjs CONFIG_FILE');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));

// Events

function logEvent(event, fields = {}) {
  const line = JSON.stringify({ time: new Date().toISOString(), event, ...fields });
  fs.appendFileSync(config.events_file, `${line}\n`, { mode: 0o600 });
}

// Users

function readUsers() {
  try {
    return JSON.parse(fs.readFileSync(config.users_file, 'utf8'));
  } catch (error) {
    if (error.code === 'ENOENT') {
      return {};
    }
    throw error;
  }
}

function passwordMatches(stored, password) {
  if (stored?.scheme !== 'scrypt') {
    return false;
  }
  const salt = Buffer.from(stored.salt, 'base64');
  const expected = Buffer.from(stored.hash, 'base64');
  const actual = crypto.scryptSync(password, salt, expected.length || SCRYPT_KEY_BYTES, {
    N: stored.n,
    r: stored.r,
    p: stored.p,
    maxmem: 256 * stored.n * stored.r,
  });
  return actual.length === expected.length && crypto.timingSafeEqual(actual, expected);
}

async function findAccount(_ctx, accountId) {
  if (!Object.hasOwn(readUsers(), accountId)) {
    return undefined;
  }
  return {
    accountId,
    claims: async () => ({ sub: accountId }),
  };
}

// Keys

function loadSigningKeys() {
  try {
    return JSON.parse(fs.readFileSync(config.signing_keys_file, 'utf8'));
  } catch (error) {
    if (error.code !== 'ENOENT') {
      throw error;
    }
  }
  const startedAt = performance.now();
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' }] };
  fs.writeFileSync(config.signing_keys_file, JSON.stringify(jwks), { mode: 0o600, flag: 'wx' });
  console.log(`created the RSA signing key in ${Math.round(performance.now() - startedAt)} ms`);
  return jwks;
}

// Storage

// Artifacts that belong to a grant, and so are deleted by revokeByGrantId.
const GRANT_MEMBERS = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);
const SWEEP_INTERVAL_MILLISECONDS = 60_000;

// In-memory storage of every model, shared by the adapter instances of all models. oidc-provider's
// own memory adapter (9.13) keeps between 1000 and 2000 entries and drops older ones without a
// message, after which an old refresh token is "not found". This one keeps each entry until it expires.
const entries = new Map(); // "Model:id" -> { payload, expiresAt }
const grantMembers = new Map(); // grantId -> Set of "Model:id"
const secondaryIndex = new Map(); // "sessionUid:uid" or "userCode:code" -> "Model:id"

function isExpired(entry) {
  return entry.expiresAt !== undefined && entry.expiresAt <= Date.now();
}

// Deletes expired entries and the index entries that point at deleted ones.
function sweep() {
  for (const [key, entry] of entries) {
    if (isExpired(entry)) {
      entries.delete(key);
    }
  }
  for (const [grantId, members] of grantMembers) {
    for (const key of members) {
      if (!entries.has(key)) {
        members.delete(key);
      }
    }
    if (members.size === 0) {
      grantMembers.delete(grantId);
    }
  }
  for (const [indexKey, key] of secondaryIndex) {
    if (!entries.has(key)) {
      secondaryIndex.delete(indexKey);
    }
  }
}
setInterval(sweep, SWEEP_INTERVAL_MILLISECONDS).unref();

// Revoking an access token (RFC 7009) destroys that token. oidc-provider then calls revokeByGrantId
// for every model, which would also end the grant's refresh tokens. RFC 7009 section 2.1 lets a
// server choose either way. This stack keeps the grant usable, like providers that revoke only the
// presented access token. Revoking a refresh token still revokes every token of its grant.
function isAccessTokenRevocation() {
  const ctx = Provider.ctx;
  return ctx?.oidc?.route === 'revocation'
    && ctx.oidc.entities.AccessToken !== undefined
    && ctx.oidc.entities.RefreshToken === undefined;
}

function findEntry(key) {
  const entry = key === undefined ? undefined : entries.get(key);
  if (entry === undefined) {
    return undefined;
  }
  if (isExpired(entry)) {
    entries.delete(key);
    return undefined;
  }
  return entry.payload;
}

class StackMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    entries.set(key, { payload, expiresAt });
    if (GRANT_MEMBERS.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) {
        grantMembers.set(payload.grantId, new Set());
      }
      grantMembers.get(payload.grantId).add(key);
    }
    if (this.model === 'Session' && payload.uid) {
      secondaryIndex.set(`sessionUid:${payload.uid}`, key);
    }
    if (payload.userCode) {
      secondaryIndex.set(`userCode:${payload.userCode}`, key);
    }
  }

  async find(id) {
    return findEntry(this.key(id));
  }

  async findByUid(uid) {
    return findEntry(secondaryIndex.get(`sessionUid:${uid}`));
  }

  async findByUserCode(userCode) {
    return findEntry(secondaryIndex.get(`userCode:${userCode}`));
  }

  async consume(id) {
    const entry = entries.get(this.key(id));
    if (entry !== undefined) {
      entry.payload.consumed = Math.floor(Date.now() / 1000);
    }
  }

  async destroy(id) {
    const key = this.key(id);
    const entry = entries.get(key);
    entries.delete(key);
    if (entry?.payload.grantId) {
      grantMembers.get(entry.payload.grantId)?.delete(key);
    }
  }

  async revokeByGrantId(grantId) {
    if (isAccessTokenRevocation()) {
      return;
    }
    const members = grantMembers.get(grantId);
    if (members === undefined) {
      return;
    }
    for (const key of members) {
      if (key.startsWith(`${this.model}:`)) {
        entries.delete(key);
        members.delete(key);
      }
    }
    if (members.size === 0) {
      grantMembers.delete(grantId);
    }
  }
}

// Pages

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(uid, clientId, message) {
  const notice = message ? `<p id="login-error">${escapeHtml(message)}</p>\n` : '';
  return page('Sign in', `${notice}<p>Sign in to continue to ${escapeHtml(clientId)}.</p>
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login">
<label>User name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>`);
}

async function readForm(ctx) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) {
      ctx.throw(413, `form body larger than ${MAX_FORM_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Interactions: a password login form, then consent granted without a page because every client
// of this provider belongs to the project.

async function grantConsent(provider, details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });

  if (missing.missingOIDCScope) {
    grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  }
  if (missing.missingOIDCClaims) {
    grant.addOIDCClaims(missing.missingOIDCClaims);
  }
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  logEvent('consent.granted', { client_id: params.client_id, account_id: session.accountId, scope: params.scope });
  return details.grantId ? {} : { grantId };
}

function interactionRoutes(provider) {
  const pattern = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/;

  return async function interactions(ctx, next) {
    const match = pattern.exec(ctx.path);
    if (!match) {
      return next();
    }
    ctx.set('Cache-Control', 'no-store');
    try {
      await handleInteraction(ctx, match[1], match[2] !== undefined);
    } catch (error) {
      // These routes are not oidc-provider's, so its error handler does not see their errors.
      const status = error.statusCode ?? error.status ?? 500;
      const out = {
        error: error.error ?? (status >= 500 ? 'server_error' : 'invalid_request'),
        error_description: error.error_description ?? (status >= 500 ? 'unexpected error' : error.message),
      };
      logEvent('interaction.error', { path: ctx.path, status, ...out });
      if (status >= 500) {
        console.error(`error at ${ctx.method} ${ctx.path}:`, error);
      }
      ctx.status = status;
      await renderError(ctx, out);
    }
    return undefined;
  };

  async function handleInteraction(ctx, uid, login) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) {
      throw new errors.SessionNotFound('interaction session does not match the URL');
    }
    const { prompt, params } = details;

    if (!login && ctx.method === 'GET' && prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = loginPage(uid, params.client_id);
      return undefined;
    }

    if (!login && ctx.method === 'GET' && prompt.name === 'consent') {
      const consent = await grantConsent(provider, details);
      const returnTo = await provider.interactionResult(ctx.req, ctx.res, { consent }, { mergeWithLastSubmission: true });
      ctx.status = 303;
      ctx.redirect(returnTo);
      return undefined;
    }

    if (login && ctx.method === 'POST' && prompt.name === 'login') {
      const form = await readForm(ctx);
      const username = form.get('username') ?? '';
      const password = form.get('password') ?? '';
      const users = readUsers();
      if (!Object.hasOwn(users, username) || !passwordMatches(users[username], password)) {
        logEvent('login.failure', { client_id: params.client_id, username });
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginPage(uid, params.client_id, 'Invalid user name or password.');
        return undefined;
      }
      logEvent('login.success', { client_id: params.client_id, account_id: username });
      const returnTo = await provider.interactionResult(
        ctx.req,
        ctx.res,
        { login: { accountId: username } },
        { mergeWithLastSubmission: false },
      );
      ctx.status = 303;
      ctx.redirect(returnTo);
      return undefined;
    }

    ctx.throw(400, `no ${ctx.method} handler for the ${prompt.name} prompt at ${ctx.path}`);
    return undefined;
  }
}

// Request lines for the token, introspection and revocation endpoints, written after the
// response so that they carry its status. Client ids come from the authenticated client, or,
// when authentication failed, from the Basic header or the form's client_id.

function requestedClientId(ctx) {
  if (ctx.oidc?.client) {
    return ctx.oidc.client.clientId;
  }
  const authorization = ctx.get('authorization');
  if (authorization.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
    const separator = decoded.indexOf(':');
    if (separator > 0) {
      try {
        return decodeURIComponent(decoded.slice(0, separator).replace(/\+/g, ' '));
      } catch {
        return null;
      }
    }
  }
  return ctx.oidc?.params?.client_id ?? null;
}

// RFC 7009 returns 200 for an unknown or expired token too, so token_type is then null.
function revokedTokenType(entities) {
  if (entities.RefreshToken) {
    return 'refresh_token';
  }
  if (entities.AccessToken || entities.ClientCredentials) {
    return 'access_token';
  }
  return null;
}

function endpointEvents() {
  const routes = new Map([
    [config.routes.token, 'token.request'],
    [config.routes.introspection, 'introspection.request'],
    [config.routes.revocation, 'revocation.request'],
  ]);

  return async function recordEndpointRequest(ctx, next) {
    const event = ctx.method === 'POST' ? routes.get(ctx.path) : undefined;
    if (!event) {
      return next();
    }
    try {
      await next();
    } finally {
      const body = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
      const fields = { client_id: requestedClientId(ctx), status: ctx.status };
      if (event === 'token.request') {
        fields.grant_type = ctx.oidc?.params?.grant_type ?? null;
      }
      if (event === 'introspection.request' && ctx.status === 200) {
        fields.active = body.active === true;
      }
      if (event === 'revocation.request') {
        fields.token_type = revokedTokenType(ctx.oidc?.entities ?? {});
      }
      if (ctx.status >= 400) {
        fields.error = body.error ?? null;
      }
      logEvent(event, fields);
    }
    return undefined;
  };
}

function providerEvents(provider) {
  // A listener that throws would turn the request that emitted the event into a server_error.
  const on = (name, listener) => provider.on(name, (...args) => {
    try {
      listener(...args);
    } catch (error) {
      console.error(`error: could not record the ${name} event:`, error);
    }
  });
  // error_detail is oidc-provider's internal reason, for example "refresh token already used".
  const describe = (error) => ({
    error: error.error ?? error.name,
    error_description: error.error_description ?? null,
    error_detail: error.error_detail ?? null,
  });

  on('grant.success', (ctx) => {
    logEvent('grant.success', { client_id: ctx.oidc.client?.clientId, grant_type: ctx.oidc.params?.grant_type });
  });
  on('grant.error', (ctx, error) => {
    logEvent('grant.error', {
      client_id: ctx.oidc.client?.clientId ?? null,
      grant_type: ctx.oidc.params?.grant_type ?? null,
      ...describe(error),
    });
  });
  on('grant.revoked', (ctx, grantId) => {
    logEvent('grant.revoked', { client_id: ctx.oidc.client?.clientId ?? null, grant_id: grantId });
  });
  on('refresh_token.consumed', (token) => {
    logEvent('refresh_token.consumed', {
      client_id: token.clientId,
      account_id: token.accountId,
      grant_id: token.grantId,
    });
  });
  on('authorization.success', (ctx) => {
    logEvent('authorization.success', {
      client_id: ctx.oidc.client?.clientId,
      account_id: ctx.oidc.session?.accountId ?? null,
    });
  });
  on('authorization.error', (ctx, error) => {
    logEvent('authorization.error', { client_id: ctx.oidc?.client?.clientId ?? null, ...describe(error) });
  });
  on('introspection.error', (ctx, error) => {
    logEvent('introspection.error', { client_id: ctx.oidc?.client?.clientId ?? null, ...describe(error) });
  });
  on('revocation.error', (ctx, error) => {
    logEvent('revocation.error', { client_id: ctx.oidc?.client?.clientId ?? null, ...describe(error) });
  });
  on('server_error', (ctx, error) => {
    logEvent('server_error', { path: ctx.path, error: error.name, message: error.message });
    console.error(`server_error at ${ctx.method} ${ctx.path}:`, error);
  });
}

// Policies

const resourceServers = new Set(config.resource_servers);

async function introspectionAllowed(_ctx, client, token) {
  // Resource servers may introspect every token, any other client only its own.
  return resourceServers.has(client.clientId) || token.clientId === client.clientId;
}

async function revocationAllowed(_ctx, client, token) {
  if (token.clientId !== client.clientId) {
    throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
  }
  return true;
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  const lines = Object.entries(out)
    .map(([key, value]) => `<dt>${escapeHtml(key)}</dt><dd id="${escapeHtml(key)}">${escapeHtml(value)}</dd>`)
    .join('\n');
  ctx.body = page('Error', `<dl>\n${lines}\n</dl>`);
}

// Provider

const clients = JSON.parse(fs.readFileSync(config.clients_file, 'utf8'));
const ttl = config.ttl_seconds;

const provider = new Provider(config.issuer, {
  adapter: StackMemoryAdapter,
  clients,
  findAccount,
  jwks: loadSigningKeys(),
  scopes: config.scopes,
  claims: { openid: ['sub'] },
  routes: config.routes,
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ttl.access_token,
    AuthorizationCode: ttl.authorization_code,
    ClientCredentials: ttl.client_credentials,
    Grant: ttl.grant,
    IdToken: ttl.id_token,
    Interaction: ttl.interaction,
    RefreshToken: ttl.refresh_token,
    Session: ttl.session,
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  clientBasedCORS: () => false,
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: introspectionAllowed },
    revocation: { enabled: true, allowedPolicy: revocationAllowed },
    rpInitiatedLogout: { enabled: false },
  },
});

provider.use(endpointEvents());
provider.use(interactionRoutes(provider));
providerEvents(provider);

const server = provider.listen(config.port, config.host, () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
server.on('error', (error) => {
  console.error(`error: failed to listen on ${config.host}:${config.port}: ${error.message}`);
  process.exit(1);
});

function shutDown(signal) {
  console.log(`received ${signal}, closing the server`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutDown);
process.on('SIGINT', shutDown);
