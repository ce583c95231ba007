'use strict';
// Get a current Coactive access token from the local coactive-credd daemon.
// No dependencies: HTTP/1.1 over the daemon's Unix socket with http.request({socketPath}).
//
//   const { getToken } = require('@coactive/credd-token');
//   const token = await getToken({ profile: 'prod', minTtl: 600 });
//
// Every failure is a CredddError with .code (the daemon's error code) and .exitCode (the
// exit code the command-line shims use). Messages never contain a token.
//
// When no daemon answers, fetchToken/getToken/refresh start `coactive-credd serve` in the
// background and wait for it, unless COACTIVE_CREDD_AUTOSTART=0 or a user service is
// installed (see autostartEnabled); status and request never do.

const childProcess = require('child_process');
const { EventEmitter } = require('events');
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

// ---- autostart: the same rule and the same start in every shim

const AUTOSTART_WAIT_MS = 10000;
const LOG_NAME = 'credd.log';
// A service manager's protocols address the caller, not a daemon the caller starts.
const SERVICE_ENV = ['NOTIFY_SOCKET', 'LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'WATCHDOG_USEC', 'WATCHDOG_PID'];

/** Whether a systemd user unit or a launchd agent for coactive-credd is installed. */
function serviceInstalled(env = process.env) {
  const home = env.HOME || os.homedir();
  const configDirs = [env.XDG_CONFIG_HOME, path.join(home, '.config')].filter(Boolean);
  const candidates = [path.join(home, 'Library', 'LaunchAgents', 'ai.coactive.credd.plist')];
  for (const d of configDirs) {
    for (const unit of ['coactive-credd.socket', 'coactive-credd.service']) {
      candidates.push(path.join(d, 'systemd', 'user', unit));
    }
  }
  return candidates.some((p) => {
    try {
      fs.lstatSync(p);
      return true;
    } catch (_) {
      return false;
    }
  });
}

/**
 * Whether a caller that finds no daemon starts one: COACTIVE_CREDD_AUTOSTART 1 or 0; unset,
 * on unless a user service is installed (then the service manager owns the daemon).
 */
function autostartEnabled(env = process.env) {
  const value = String(env.COACTIVE_CREDD_AUTOSTART || '').trim().toLowerCase();
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  return !serviceInstalled(env);
}

function noDaemon(err) {
  return Boolean(err && err.cause && ['ENOENT', 'ECONNREFUSED'].includes(err.cause.code));
}

function startFailed(message) {
  return new DaemonUnreachable(message, { code: 'unreachable', hint: START_HINT });
}

/** Create the socket's folder 0700, or check that it is ours and private, as the daemon will;
 * never below a folder others can write to (or another user's). */
function privateFolder(dir) {
  for (let d = path.dirname(path.resolve(dir)); ; d = path.dirname(d)) {
    let st = null;
    try {
      st = fs.statSync(d);
    } catch (_) {
      // not there yet: it will be made 0700
    }
    if (st) {
      const sticky = st.uid === 0 && st.mode & 0o1000;
      if ((st.uid !== process.geteuid() && st.uid !== 0) || (st.mode & 0o022 && !sticky)) {
        throw new Error(`${d} is not safe (owner uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)})`);
      }
    }
    if (d === os.homedir() || d === path.dirname(d)) break;
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== process.getuid() || (st.mode & 0o077) !== 0) {
    throw new Error(`${dir} must be a folder of yours with mode 0700`);
  }
}

function healthy(socketPath, timeoutMs) {
  return request('GET', '/healthz', { socketPath, timeoutMs }).then(
    (r) => r.status === 200,
    () => false,
  );
}

/**
 * Start `coactive-credd serve` in the background and wait until it answers: its own session,
 * stdin from /dev/null, output appended to credd.log (0600) beside the socket. When many
 * callers start one at once, the daemon's startup lock lets one serve and the others exit
 * "already running": their callers wait for the winner. Rejects with DaemonUnreachable,
 * naming the log, if none answers in time.
 */
async function startDaemon(socketPath, { waitMs = AUTOSTART_WAIT_MS } = {}) {
  const sock = path.resolve(socketPath || defaultSocketPath());
  const dir = path.dirname(sock);
  const log = path.join(dir, LOG_NAME);
  const notRunning = `coactive-credd is not running on ${sock}`;
  let fd;
  try {
    privateFolder(dir);
    const { O_WRONLY, O_APPEND, O_CREAT, O_NOFOLLOW } = fs.constants;
    fd = fs.openSync(log, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, 0o600);
    fs.fchmodSync(fd, 0o600);
  } catch (err) {
    throw startFailed(`${notRunning} and cannot be started there: ${err.message}`);
  }
  const command = process.env.COACTIVE_CREDD_COMMAND || 'coactive-credd';
  const env = { ...process.env };
  for (const name of SERVICE_ENV) delete env[name];
  let offset;
  let child;
  let exited = false;
  let spawnError = null;
  try {
    offset = fs.fstatSync(fd).size;
    child = childProcess.spawn(command, ['serve', '--socket', sock], {
      detached: true, // setsid
      stdio: ['ignore', fd, fd],
      env,
    });
  } finally {
    fs.closeSync(fd);
  }
  child.on('error', (err) => {
    spawnError = err;
  });
  child.on('exit', () => {
    exited = true;
  });
  child.unref(); // the caller may exit while the daemon runs on
  const deadline = Date.now() + waitMs;
  let checkedExit = false;
  for (;;) {
    if (spawnError) {
      throw startFailed(
        `${notRunning} and ${command} could not be started (${spawnError.code || spawnError.message}); ` +
          'set COACTIVE_CREDD_COMMAND to the coactive-credd executable',
      );
    }
    if (exited && !checkedExit) {
      checkedExit = true;
      if (!lostRace(log, offset)) throw startFailed(`${notRunning} and starting it failed${lastWords(log, offset)}; see ${log}`);
    }
    if (await healthy(sock, Math.max(deadline - Date.now(), 50))) return;
    if (Date.now() >= deadline) {
      throw startFailed(
        `coactive-credd was started but did not answer on ${sock} within ${waitMs / 1000} s; see ${log}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The daemon started here left because another one holds the socket (its last words). */
function lostRace(log, offset) {
  try {
    const fd = fs.openSync(log, 'r');
    try {
      const buf = Buffer.alloc(1 << 16);
      const n = fs.readSync(fd, buf, 0, buf.length, offset);
      return buf.subarray(0, n).includes('already running');
    } finally {
      fs.closeSync(fd);
    }
  } catch (_) {
    return false;
  }
}

const LAST_WORDS_MAX = 200; // characters of the daemon's last log line a failed start shows

/** ": <why>": the last line the daemon wrote to its log since `offset` (why it failed: the
 * daemon's log never holds a secret), without its "coactive-credd: " prefix, control
 * characters escaped, cut to LAST_WORDS_MAX characters; "" when there is none. */
function lastWords(log, offset) {
  let text;
  try {
    const fd = fs.openSync(log, 'r');
    try {
      const start = Math.max(offset, fs.fstatSync(fd).size - (1 << 16));
      const buf = Buffer.alloc(1 << 16);
      const n = fs.readSync(fd, buf, 0, buf.length, start);
      text = buf.subarray(0, n).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch (_) {
    return '';
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l);
  if (!lines.length) return '';
  let line = lines[lines.length - 1];
  const at = line.indexOf('coactive-credd: ');
  if (at >= 0 && at + 16 < line.length) line = line.slice(at + 16);
  // eslint-disable-next-line no-control-regex
  line = line.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  if (line.length > LAST_WORDS_MAX) line = `${line.slice(0, LAST_WORDS_MAX - 1)}\u2026`;
  return `: ${line}`;
}

function unreachable(socketPath, err) {
  let what;
  if (err && err.code === 'ENOENT') what = `coactive-credd is not running (no socket at ${socketPath})`;
  else if (err && err.code === 'ECONNREFUSED') what = `coactive-credd is not running (nothing listens on ${socketPath})`;
  else if (err && err.code === 'EACCES') what = `cannot open coactive-credd's socket ${socketPath}: permission denied`;
  else if (err && err.code === 'ETIMEDOUT') what = `coactive-credd did not answer in time on ${socketPath}`;
  else what = `lost the connection to coactive-credd on ${socketPath}`;
  const e = new DaemonUnreachable(what, { code: 'unreachable', hint: START_HINT });
  e.cause = err;
  return e;
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

// ---- trust: only this user's daemon gets a byte (docs/SECURITY.md)
//
// The one rule of every client (tests/vectors/safe_path.json lists its situations).
// COACTIVE_CREDD_DAEMON_UID must be a uid in ASCII digits. The socket's folder, when it
// exists, is a real folder (no symlink) of this user, root or $COACTIVE_CREDD_DAEMON_UID that
// nobody else can write to. Every folder above it, up to the home folder or /, as written and
// with symlinks resolved, is one of theirs that nobody else can write to (root-owned sticky
// folders such as /tmp excepted), unless $COACTIVE_CREDD_DAEMON_UID is set and the folder
// exists: the folders above a sidecar's are the pod's (an emptyDir is 0777). Node cannot ask
// the kernel who answers on a Unix socket (no SO_PEERCRED / getpeereid in its API), so the
// socket file's owner stands in for the process, as in the sh client.

/** The socket's folder or socket is not this user's: nothing was sent. Exit 3. */
class UntrustedDaemon extends DaemonUnreachable {}

const MAX_UID = 2 ** 32 - 2; // (uid_t)-1 is "no uid"

/** $COACTIVE_CREDD_DAEMON_UID as a number, null when unset or empty; BadRequest (exit 2)
 * unless ASCII decimal digits without sign, space or leading zero, at most 4294967294. */
function daemonUid(env = process.env) {
  const raw = env.COACTIVE_CREDD_DAEMON_UID || '';
  if (!raw) return null;
  if (!/^(0|[1-9][0-9]{0,9})$/.test(raw) || Number(raw) > MAX_UID) {
    throw new BadRequest('COACTIVE_CREDD_DAEMON_UID is not a uid number', {
      code: 'bad_request',
      hint: "set it to the daemon's uid in ASCII digits, as `id -u` prints it, or unset COACTIVE_CREDD_DAEMON_UID",
    });
  }
  return Number(raw);
}

function untrusted(sock, where, what, fix, more = '') {
  return new UntrustedDaemon(`refusing to talk to the daemon on ${sock}: ${where} is not safe (${what}); nothing was sent`, {
    code: 'untrusted_daemon',
    hint: `fix it with \`${fix}\`${more}`,
  });
}

/** For a socket folder of another uid (a sidecar's, perhaps) while COACTIVE_CREDD_DAEMON_UID
 * is unset: the app's way to trust that uid, said beside the chown. */
function sidecarHint(owner) {
  if (process.env.COACTIVE_CREDD_DAEMON_UID) return '';
  return `; or, if uid ${owner} runs your daemon (a sidecar), set COACTIVE_CREDD_DAEMON_UID=${owner} and list your uid ${process.geteuid()} in its allowed_uids`;
}

function modeText(st) {
  return (st.mode & 0o7777).toString(8).padStart(4, '0');
}

/** The first folder above `dir` (to the home folder or /, as written and resolved) that
 * breaks the rule, as [folder, what, fix], or null. */
function unsafeParent(dir, trusted) {
  const home = os.homedir();
  let homeReal = home;
  try {
    homeReal = fs.realpathSync(home);
  } catch (_) {
    // no home folder: / is the stop
  }
  const start = path.dirname(dir);
  let existing = start;
  while (!fs.existsSync(existing) && existing !== path.dirname(existing)) existing = path.dirname(existing);
  let real = existing;
  try {
    real = fs.realpathSync(existing);
  } catch (_) {
    // unreadable: the written chain stands alone
  }
  const euid = process.geteuid();
  for (const first of [start, real]) {
    for (let d = first; ; d = path.dirname(d)) {
      let st = null;
      try {
        st = fs.statSync(d); // a symlinked folder is judged by its target
      } catch (_) {
        // not there: skipped
      }
      if (st) {
        const mode = st.mode & 0o7777;
        if (d === `/tmp/runtime-${euid}` && (st.uid !== euid || mode & 0o077)) {
          return [d, `owner uid ${st.uid}, mode ${modeText(st)}; it must be yours with mode 0700`, `sudo rm -rf ${d}  # or set XDG_RUNTIME_DIR to a private folder of yours`];
        }
        if (!trusted(st.uid)) {
          const runtime = process.env.XDG_RUNTIME_DIR;
          const fix = runtime && `${d}/`.startsWith(`${runtime.replace(/\/+$/, '')}/`)
            ? 'unset XDG_RUNTIME_DIR  # after su; or set it to a folder of yours'
            : `sudo chown ${euid} ${d}  # or remove it if you did not make it`;
          return [d, `owner uid ${st.uid}, not you`, fix];
        }
        if (mode & 0o022 && !(st.uid === 0 && mode & 0o1000)) {
          return [d, `mode ${modeText(st)}, writable by others`, `chmod go-w ${d}`];
        }
      }
      if (d === home || d === homeReal || d === path.dirname(d)) break;
    }
  }
  return null;
}

/** Throws UntrustedDaemon (or BadRequest) unless the socket's folder, the folders above it
 * and the socket file are trusted. */
function verifyDaemon(sock) {
  const extra = daemonUid();
  const euid = process.geteuid();
  const trusted = (uid) => uid === euid || uid === 0 || uid === extra;
  const dir = path.resolve(path.dirname(sock));
  let st = null;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if (err.code === 'EACCES') {
      const bad = unsafeParent(dir, trusted);
      if (bad) throw untrusted(sock, ...bad);
      const up = path.dirname(dir);
      const fix = process.env.XDG_RUNTIME_DIR ? 'unset XDG_RUNTIME_DIR  # after su; or set it to a folder of yours' : `ls -ld ${up}`;
      throw untrusted(sock, up, "permission denied: it is another user's", fix);
    }
    // no folder: no daemon; the folders above are judged below
  }
  if (st) {
    if (st.isSymbolicLink()) throw untrusted(sock, dir, 'it is a symlink', `rm ${dir}`);
    if (!st.isDirectory()) throw untrusted(sock, dir, 'not a folder', `ls -ld ${dir}`);
    if (!trusted(st.uid)) {
      throw untrusted(sock, dir, `owner uid ${st.uid}, not you (uid ${euid})`, `sudo chown ${euid} ${dir}  # or remove it if you did not make it`, sidecarHint(st.uid));
    }
    if (st.mode & 0o022) {
      throw untrusted(sock, dir, `mode ${modeText(st)}, writable by others`, `chmod go-w ${dir}`);
    }
    let sst = null;
    try {
      sst = fs.lstatSync(sock);
    } catch (_) {
      // no socket: no daemon
    }
    if (sst && !trusted(sst.uid)) {
      throw untrusted(sock, sock, `owner uid ${sst.uid}: another user's process made it`, `rm ${sock}  # and find who runs as uid ${sst.uid}`);
    }
    if (extra !== null) return; // a sidecar's folder: the folders above are the pod's
  }
  const bad = unsafeParent(dir, trusted);
  if (bad) throw untrusted(sock, ...bad);
}

/**
 * One request to the daemon. Resolves to {status, body} (body as text); rejects with
 * DaemonUnreachable (UntrustedDaemon when the socket is not this user's: nothing sent).
 */
function request(method, urlPath, { body = null, socketPath, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
  const sock = socketPath || defaultSocketPath();
  try {
    verifyDaemon(sock);
  } catch (err) {
    return Promise.reject(err);
  }
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

/** request(), starting a daemon first if none answers and autostart allows it. */
async function requestOrStart(method, urlPath, opts) {
  try {
    return await request(method, urlPath, opts);
  } catch (err) {
    if (!noDaemon(err) || opts.autostart === false || !autostartEnabled()) throw err;
  }
  await startDaemon(opts.socketPath);
  return request(method, urlPath, opts);
}

async function call(method, urlPath, opts) {
  const { status, body } = await (opts.start ? requestOrStart : request)(method, urlPath, opts);
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
async function fetchToken({ profile, minTtl = 0, socketPath, timeoutMs, autostart } = {}) {
  checkMinTtl(minTtl);
  return toTokenInfo(
    await call('GET', tokenPath('/v1/token', profile, minTtl), { socketPath, timeoutMs, autostart, start: true }),
  );
}

/** The profile's current access token, valid for at least minTtl more seconds. */
async function getToken(opts = {}) {
  return (await fetchToken(opts)).accessToken;
}

/** Force a new token; with rejectedToken, only if that token is still the current one. */
async function refresh({ profile, rejectedToken, socketPath, timeoutMs, autostart } = {}) {
  const body =
    rejectedToken == null
      ? null
      : { rejected_token_sha256: crypto.createHash('sha256').update(rejectedToken, 'utf8').digest('hex') };
  return toTokenInfo(
    await call('POST', tokenPath('/v1/token/refresh', profile, 0), {
      body,
      socketPath,
      timeoutMs,
      autostart,
      start: true,
    }),
  );
}

/** The daemon's status (never a secret). */
async function status({ socketPath, timeoutMs } = {}) {
  return call('GET', '/v1/status', { socketPath, timeoutMs });
}

/**
 * Whether fetch(input, init) can be sent twice: no body, or one fetch keeps whole (string,
 * bytes, Blob, URLSearchParams, FormData), or a Request that can be cloned. A stream cannot.
 */
function replayable(input, init) {
  const body = init && init.body !== undefined ? init.body : null;
  if (body === null) return typeof Request === 'undefined' || !(input instanceof Request) || !input.bodyUsed;
  return (
    typeof body === 'string' ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    (typeof Blob !== 'undefined' && body instanceof Blob) ||
    body instanceof URLSearchParams ||
    (typeof FormData !== 'undefined' && body instanceof FormData)
  );
}

/**
 * fetch() to Coactive with "Authorization: Bearer <token>" from the daemon. When Coactive
 * answers 401, the rejected token is reported (POST /v1/token/refresh with its SHA-256; the
 * daemon replaces it only if it is still the current one) and the request is sent once more
 * with the new token, as Python's CoactiveAuth and Go's coactivehttp.Transport do. A request
 * whose body is a stream is not retried: its 401 is returned as it is. Failures to get a
 * token reject with CredddError; the answer is fetch's Response.
 */
async function coactiveFetch(input, init = {}, options = {}) {
  const fetchImpl = options.fetch || globalThis.fetch;
  if (typeof fetchImpl !== 'function') {
    throw new CredddError('coactiveFetch needs a global fetch (Node 18 or later) or options.fetch', {
      code: 'no_fetch',
    });
  }
  const { profile, minTtl = 0, socketPath, timeoutMs, autostart } = options;
  const again = replayable(input, init);
  const isRequest = typeof Request !== 'undefined' && input instanceof Request;
  const send = (token) => {
    const headers = new Headers(init.headers !== undefined ? init.headers : isRequest ? input.headers : undefined);
    headers.set('Authorization', `Bearer ${token}`);
    return fetchImpl(isRequest && again ? input.clone() : input, { ...init, headers });
  };
  const token = await getToken({ profile, minTtl, socketPath, timeoutMs, autostart });
  const first = await send(token);
  if (first.status !== 401 || !again) return first;
  let fresh;
  try {
    fresh = await refresh({ profile, rejectedToken: token, socketPath, timeoutMs, autostart });
  } catch (_) {
    return first; // nothing better to offer than Coactive's own answer
  }
  if (first.body && typeof first.body.cancel === 'function') await first.body.cancel().catch(() => {});
  return send(fresh.accessToken);
}

/**
 * fetch() through the daemon's API proxy: the request goes over the socket to its /api/
 * route, which forwards it to the profile's Coactive with the current token, so this
 * program never holds one. `input` is a path under /api/ or any URL (only its path and query
 * are used); `init` is fetch's (method, headers, body: a string, Buffer, Uint8Array, or an
 * async iterable / Node stream of them, sent as it comes). The profile is options.profile,
 * else $COACTIVE_PROFILE, else "default". Resolves to a fetch Response whose body streams;
 * redirects come back as they are. Rejects with DaemonUnreachable (UntrustedDaemon: nothing
 * sent) when the socket cannot be used.
 */
function socketFetch(input, init = {}, options = {}) {
  const sock = options.socketPath || defaultSocketPath();
  try {
    verifyDaemon(sock);
  } catch (err) {
    return Promise.reject(err);
  }
  const text = typeof input === 'string' ? input : String(input.url || input);
  const target = text.startsWith('/') ? text : (() => {
    const u = new URL(text);
    return u.pathname + u.search;
  })();
  const headers = {};
  new Headers(init.headers || {}).forEach((v, k) => {
    if (k !== 'authorization' && k !== 'host') headers[k] = v;
  });
  headers.host = 'localhost';
  if (!headers['coactive-profile']) headers['coactive-profile'] = options.profile || defaultProfile();
  const body = init.body;
  if (typeof body === 'string' || body instanceof Uint8Array) {
    headers['content-length'] = String(Buffer.byteLength(body));
  }
  const { Readable } = require('stream');
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: sock, path: target, method: (init.method || 'GET').toUpperCase(), headers, agent: options.agent || false },
      (res) => {
        const out = new Headers();
        for (let i = 0; i < res.rawHeaders.length; i += 2) out.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
        const empty = [101, 204, 205, 304].includes(res.statusCode) || req.method === 'HEAD';
        if (empty) res.resume();
        resolve(new Response(empty ? null : Readable.toWeb(res), { status: res.statusCode, statusText: res.statusMessage, headers: out }));
      },
    );
    req.on('error', (e) => reject(unreachable(sock, e)));
    if (body === undefined || body === null) {
      req.end();
    } else if (typeof body === 'string' || body instanceof Uint8Array) {
      req.end(body);
    } else {
      Readable.from(body).on('error', (e) => req.destroy(e)).pipe(req);
    }
  });
}

/**
 * Follows the daemon's GET /v1/events: one event per change of a profile's token or state,
 * {profile, state, expires_at, token_sha256} (never the token: fetch it when token_sha256
 * changes). The first events give each profile's current state.
 *
 * Returns an EventEmitter ('event', then 'end' when the daemon closes the stream or 'error'
 * when it cannot be reached, answers an error or says nothing for 60 s) that is also an async
 * iterable:
 *
 *   for await (const ev of watch({ profile: 'prod' })) { ... }   // throws like 'error'
 *
 * close() stops following.
 */
function watch({ profile, socketPath, silenceMs = 60000 } = {}) {
  const sock = socketPath || defaultSocketPath();
  try {
    verifyDaemon(sock); // before a byte is sent
  } catch (err) {
    return failedWatch(err);
  }
  const emitter = new EventEmitter();
  const query = profile ? `?profile=${encodeURIComponent(profile)}` : '';
  const headers = { Accept: 'text/event-stream', Host: 'localhost' };
  const req = http.request({ socketPath: sock, path: `/v1/events${query}`, headers, agent: false }, (res) => {
    if (res.statusCode !== 200) {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => emitter.emit('error', errorFromAnswer(res.statusCode, Buffer.concat(chunks).toString('utf8'))));
      return;
    }
    res.setEncoding('utf8');
    let buf = '';
    let data = [];
    res.on('data', (text) => {
      buf += text;
      const lines = buf.split('\n');
      buf = lines.pop();
      for (const raw of lines) {
        const line = raw.replace(/\r$/, '');
        if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        else if (line === '' && data.length) {
          let ev = null;
          try {
            ev = JSON.parse(data.join('\n'));
          } catch (_) {
            ev = null;
          }
          data = [];
          if (ev && typeof ev === 'object') emitter.emit('event', ev);
        }
      }
    });
    res.on('end', () => emitter.emit('end'));
    res.on('error', (e) => emitter.emit('error', unreachable(sock, e)));
  });
  req.setTimeout(silenceMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  req.on('error', (e) => {
    if (!emitter.closed) emitter.emit('error', unreachable(sock, e));
  });
  req.end();
  emitter.closed = false;
  emitter.close = () => {
    emitter.closed = true;
    req.destroy();
  };
  emitter[Symbol.asyncIterator] = async function* iterate() {
    const queue = [];
    let wake = null;
    let done = false;
    let failure = null;
    const poke = () => wake && wake();
    emitter.on('event', (ev) => (queue.push(ev), poke()));
    emitter.on('end', () => ((done = true), poke()));
    emitter.on('error', (e) => ((failure = e), poke()));
    try {
      for (;;) {
        if (queue.length) yield queue.shift();
        else if (failure) throw failure;
        else if (done) return;
        else await new Promise((r) => (wake = r));
      }
    } finally {
      emitter.close();
    }
  };
  return emitter;
}

/** A watch() that never connected: 'error' on the next tick, and an iterator that throws. */
function failedWatch(err) {
  const emitter = new EventEmitter();
  emitter.closed = false;
  emitter.close = () => {
    emitter.closed = true;
  };
  process.nextTick(() => {
    if (!emitter.closed) emitter.emit('error', err);
  });
  emitter[Symbol.asyncIterator] = async function* iterate() {
    emitter.on('error', () => {});
    emitter.close();
    throw err;
  };
  return emitter;
}

module.exports = {
  EXIT,
  CredddError,
  DaemonUnreachable,
  UntrustedDaemon,
  daemonUid,
  BadRequest,
  UnknownProfile,
  ReauthRequired,
  UpstreamUnavailable,
  VaultLocked,
  defaultSocketPath,
  defaultProfile,
  autostartEnabled,
  startDaemon,
  getToken,
  fetchToken,
  refresh,
  status,
  request,
  coactiveFetch,
  socketFetch,
  watch,
};
