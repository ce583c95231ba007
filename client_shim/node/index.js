'use strict';
// Get a current Coactive access token from the local coactive-credd daemon.
// No dependencies: HTTP/1.1 over the daemon's Unix socket with http.request({socketPath}).
//
//   const { getToken } = require('@coactive/credd-token');
//   const token = await getToken({ profile: 'prod', minTtl: 600 });
//
// Every failure is a CredddError with .code (the daemon's error code) and .exitCode (the
// exit code the command-line shims use). Messages never contain a token.

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const EXIT = Object.freeze({
  OK: 0,
  USAGE: 2,
  UNREACHABLE: 3,
  UNKNOWN_PROFILE: 4,
  REAUTH: 5,
  UNAVAILABLE: 6,
  LOCKED: 7,
});
const EXIT_OTHER = 1;
const DEFAULT_TIMEOUT_MS = 30000;
const START_HINT =
  'start it with: coactive-credd serve; or as a service: coactive-credd install-service';

function oneLine(text) {
  return String(text || '').split(/\s+/).filter(Boolean).join(' ');
}

class CredddError extends Error {
  constructor(message, { code = 'error', hint = '', status = null } = {}) {
    const msg = oneLine(message);
    const h = oneLine(hint);
    super(h ? `${msg} (${h})` : msg);
    this.name = this.constructor.name;
    this.code = code;
    this.hint = h;
    this.status = status;
    this.exitCode = EXIT_OTHER;
  }
}
class DaemonUnreachable extends CredddError {
  constructor(message, opts) {
    super(message, opts);
    this.exitCode = EXIT.UNREACHABLE;
  }
}
class BadRequest extends CredddError {
  constructor(message, opts) {
    super(message, opts);
    this.exitCode = EXIT.USAGE;
  }
}
class UnknownProfile extends CredddError {
  constructor(message, opts) {
    super(message, opts);
    this.exitCode = EXIT.UNKNOWN_PROFILE;
  }
}
class ReauthRequired extends CredddError {
  constructor(message, opts) {
    super(message, opts);
    this.exitCode = EXIT.REAUTH;
  }
}
class UpstreamUnavailable extends CredddError {
  constructor(message, opts) {
    super(message, opts);
    this.exitCode = EXIT.UNAVAILABLE;
  }
}
class VaultLocked extends CredddError {
  constructor(message, opts) {
    super(message, opts);
    this.exitCode = EXIT.LOCKED;
  }
}

const BY_CODE = {
  bad_request: BadRequest,
  forbidden: BadRequest,
  unknown_profile: UnknownProfile,
  reauth_required: ReauthRequired,
  upstream_unavailable: UpstreamUnavailable,
  locked: VaultLocked,
};
// Used only when an error answer carries no recognisable code.
const BY_STATUS = {
  400: 'bad_request',
  403: 'forbidden',
  404: 'unknown_profile',
  423: 'locked',
  424: 'reauth_required',
  503: 'upstream_unavailable',
};

/** The socket path every shim and the daemon agree on (docs/ARCHITECTURE.md). */
function defaultSocketPath(env = process.env) {
  if (env.COACTIVE_CREDD_SOCKET) return env.COACTIVE_CREDD_SOCKET;
  if (env.COACTIVE_CREDD_HOME) return path.join(env.COACTIVE_CREDD_HOME, 'credd.sock');
  if (process.platform === 'darwin') {
    return path.join(env.HOME || os.homedir(), 'Library/Caches/TemporaryItems/coactive-credd/credd.sock');
  }
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'coactive-credd', 'credd.sock');
  const uid = process.getuid();
  try {
    if (fs.statSync(`/run/user/${uid}`).isDirectory()) {
      return `/run/user/${uid}/coactive-credd/credd.sock`;
    }
  } catch (_) {
    // no /run/user/$UID: fall through
  }
  return `/tmp/runtime-${uid}/coactive-credd/credd.sock`;
}

function defaultProfile(env = process.env) {
  return env.COACTIVE_PROFILE || 'default';
}

function unreachable(socketPath, err) {
  let what;
  if (err && err.code === 'ENOENT') what = `coactive-credd is not running (no socket at ${socketPath})`;
  else if (err && err.code === 'ECONNREFUSED') what = `coactive-credd is not running (nothing listens on ${socketPath})`;
  else if (err && err.code === 'EACCES') what = `cannot open coactive-credd's socket ${socketPath}: permission denied`;
  else if (err && err.code === 'ETIMEDOUT') what = `coactive-credd did not answer in time on ${socketPath}`;
  else what = `lost the connection to coactive-credd on ${socketPath}`;
  return new DaemonUnreachable(what, { code: 'unreachable', hint: START_HINT });
}

function errorFromAnswer(status, text) {
  let code = '';
  let message = '';
  let hint = '';
  try {
    const err = JSON.parse(text).error || {};
    code = String(err.code || '');
    message = String(err.message || '');
    hint = String(err.hint || '');
  } catch (_) {
    // not JSON: fall back on the status
  }
  if (!BY_CODE[code]) code = code || BY_STATUS[status] || `http_${status}`;
  const Cls = BY_CODE[code] || CredddError;
  return new Cls(message || `coactive-credd answered ${status} (${code})`, { code, hint, status });
}

/**
 * One request to the daemon. Resolves to {status, body} (body as text); rejects only with
 * DaemonUnreachable.
 */
function request(method, urlPath, { body = null, socketPath, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
  const sock = socketPath || defaultSocketPath();
  const payload = body === null ? null : Buffer.from(JSON.stringify(body), 'utf8');
  const headers = { Accept: 'application/json', Host: 'localhost' };
  if (payload) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = payload.length;
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, path: urlPath, method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e) => reject(unreachable(sock, e)));
    });
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => reject(unreachable(sock, e)));
    if (payload) req.write(payload);
    req.end();
  });
}

async function call(method, urlPath, opts) {
  const { status, body } = await request(method, urlPath, opts);
  if (status >= 400) throw errorFromAnswer(status, body);
  try {
    return JSON.parse(body);
  } catch (_) {
    throw new CredddError('coactive-credd sent an answer that is not JSON', { code: 'bad_answer', status });
  }
}

function toTokenInfo(data) {
  const expiresAt = new Date(data.expires_at);
  if (typeof data.access_token !== 'string' || !data.access_token || Number.isNaN(expiresAt.getTime())) {
    throw new CredddError('coactive-credd sent a malformed token answer', { code: 'bad_answer' });
  }
  return {
    profile: String(data.profile),
    accessToken: data.access_token,
    tokenType: String(data.token_type || 'Bearer'),
    expiresAt,
    expiresIn: Number(data.expires_in),
  };
}

function tokenPath(route, profile, minTtl) {
  const q = new URLSearchParams({ profile: profile || defaultProfile() });
  if (minTtl) q.set('min_ttl', String(minTtl));
  return `${route}?${q}`;
}

function checkMinTtl(minTtl) {
  if (!Number.isInteger(minTtl) || minTtl < 0) {
    throw new BadRequest('minTtl must be a whole number of seconds, 0 or more', { code: 'bad_request' });
  }
}

/** The profile's current token with its expiry. */
async function fetchToken({ profile, minTtl = 0, socketPath, timeoutMs } = {}) {
  checkMinTtl(minTtl);
  return toTokenInfo(await call('GET', tokenPath('/v1/token', profile, minTtl), { socketPath, timeoutMs }));
}

/** The profile's current access token, valid for at least minTtl more seconds. */
async function getToken(opts = {}) {
  return (await fetchToken(opts)).accessToken;
}

/** Force a new token; with rejectedToken, only if that token is still the current one. */
async function refresh({ profile, rejectedToken, socketPath, timeoutMs } = {}) {
  const body =
    rejectedToken == null
      ? null
      : { rejected_token_sha256: crypto.createHash('sha256').update(rejectedToken, 'utf8').digest('hex') };
  return toTokenInfo(
    await call('POST', tokenPath('/v1/token/refresh', profile, 0), { body, socketPath, timeoutMs }),
  );
}

/** The daemon's status (never a secret). */
async function status({ socketPath, timeoutMs } = {}) {
  return call('GET', '/v1/status', { socketPath, timeoutMs });
}

module.exports = {
  EXIT,
  CredddError,
  DaemonUnreachable,
  BadRequest,
  UnknownProfile,
  ReauthRequired,
  UpstreamUnavailable,
  VaultLocked,
  defaultSocketPath,
  defaultProfile,
  getToken,
  fetchToken,
  refresh,
  status,
  request,
};
