// A real OAuth 2.1 / OpenID Connect authorization server for agentd's tests: panva's
// oidc-provider (certified), configured as an MCP deployment would configure it, with
// the person-facing pages (sign-in with a password, consent) that a person fills in.
//
// Run by tests/oauth/authserver.py: `node authserver.mjs CONFIG.json`, with
// OIDC_PROVIDER_MODULES naming the node_modules folder scripts/test.sh installed
// oidc-provider into. It prints one JSON line, {"issuer": ...}, once it listens.
//
// CONFIG (JSON): accounts {login: {password, claims}}, access_token_ttl (s),
// refresh_token_ttl (s), opaque_resources (resource indicators whose access tokens
// are opaque, for introspection), resource_scopes ("a b c": what a resource may be
// granted), signing_alg ("ES256" or "RS256"), clients (pre-registered clients).
//
// Besides oidc-provider's own endpoints (discovery, /auth, /token, /reg, /jwks,
// /token/introspection, /token/revocation) it serves the interaction pages at
// /interaction/<uid> and, for the tests' counts, GET /__stats: the token endpoint's
// successful grants by grant type, refusals, revocations and introspections.

import crypto from 'node:crypto';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.OIDC_PROVIDER_MODULES;
const load = (name, entry) => import(pathToFileURL(path.join(modules, name, entry)).href);
const { default: Provider } = await load('oidc-provider', 'lib/index.js');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts || {};
const opaque = new Set(config.opaque_resources || []);
const stats = { grants: {}, refused: {}, revoked: 0, introspected: 0 };

function signingKeys() {
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const stamp = Date.now().toString(36);
  return [
    { ...ec.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: `es256-${stamp}` },
    { ...rsa.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: `rs256-${stamp}` },
  ];
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escape(title)}</title>`
    + `</head><body><h1>${escape(title)}</h1>${body}</body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: config.clients || [],
  jwks: { keys: signingKeys() },
  cookies: { keys: ['agentd-tests-cookie-key-1', 'agentd-tests-cookie-key-2'] },
  scopes: ['openid', 'offline_access', ...String(config.resource_scopes || '').split(' ')
    .filter(Boolean)],
  claims: { openid: ['sub'] },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  clientBasedCORS: () => true,
  ttl: {
    AccessToken: () => config.access_token_ttl || 3600,
    RefreshToken: () => config.refresh_token_ttl || 86400,
    AuthorizationCode: () => 60,
    Interaction: () => 600,
    Session: () => 3600,
    Grant: () => 86400,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    if (!accounts[id]) return undefined;
    return { accountId: id, async claims() { return { sub: id }; } };
  },
  async extraTokenClaims(ctx, token) {
    const account = accounts[token.accountId];
    return account && account.claims ? account.claims : undefined;
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => ({
        scope: config.resource_scopes || '',
        audience: resource,
        accessTokenTTL: config.access_token_ttl || 3600,
        accessTokenFormat: opaque.has(resource) ? 'opaque' : 'jwt',
        jwt: { sign: { alg: config.signing_alg || 'ES256' } },
      }),
    },
  },
});

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  stats.grants[type] = (stats.grants[type] || 0) + 1;
});
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'revocation' && ctx.status === 200) stats.revoked += 1;
  if (ctx.oidc?.route === 'introspection' && ctx.status === 200) stats.introspected += 1;
});
provider.on('grant.error', (ctx, error) => {
  const type = ctx.oidc.params?.grant_type || 'unknown';
  stats.refused[type] = (stats.refused[type] || 0) + 1;
});

// The pages a person sees: sign-in (a password checked against the accounts), then
// consent (the client, the scopes and the resource asked for; allow or deny).
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params } = details;
  if (req.method === 'GET') {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    if (prompt.name === 'login') {
      res.end(page('Sign in', `<form method="post" action="/interaction/${uid}/login">`
        + '<input name="login" type="text"><input name="password" type="password">'
        + '<button type="submit">Sign in</button></form>'));
      return;
    }
    const client = await provider.Client.find(params.client_id);
    res.end(page('Authorize', `<p>${escape(client.clientName || client.clientId)} asks for `
      + `<span class="scope">${escape(params.scope || '')}</span> on `
      + `<span class="resource">${escape(params.resource || '')}</span></p>`
      + `<form method="post" action="/interaction/${uid}/confirm">`
      + '<button type="submit">Allow</button></form>'
      + `<form method="post" action="/interaction/${uid}/abort">`
      + '<button type="submit">Deny</button></form>'));
    return;
  }
  const form = await readForm(req);
  if (action === 'login') {
    const account = accounts[form.get('login')];
    if (!account || account.password !== form.get('password')) {
      res.statusCode = 401;
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(page('Sign in', '<p class="error">wrong login or password</p>'
        + `<form method="post" action="/interaction/${uid}/login">`
        + '<input name="login" type="text"><input name="password" type="password">'
        + '<button type="submit">Sign in</button></form>'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: form.get('login') } },
      { mergeWithLastSubmission: false });
    return;
  }
  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'the person denied the request',
    }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
    { mergeWithLastSubmission: true });
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === '/__stats') {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(stats));
      return;
    }
    const match = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
    if (match) {
      await interaction(req, res, match[1], match[2]);
      return;
    }
    callback(req, res);
  } catch (error) {
    res.statusCode = 400;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.end(`interaction failed: ${error.message}`);
  }
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
