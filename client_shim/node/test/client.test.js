'use strict';
// Unit tests against a stand-in daemon on a temp Unix socket; the conformance suite
// (tests/test_shims.py) runs the CLI against the real daemon.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('http');
const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const { execFile } = require('child_process');
const lib = require('..');

const TOKEN = 'cat_Odd-chars.~+/=';

function standIn(handler) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ccd-node-'));
  const socketPath = path.join(dir, 's.sock');
  const seen = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, body, headers: req.headers });
      const [status, answer] = handler(req, body);
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  return new Promise((resolve) =>
    server.listen(socketPath, () =>
      resolve({
        socketPath,
        seen,
        close: () => new Promise((r) => server.close(() => { fs.rmSync(dir, { recursive: true, force: true }); r(); })),
      }),
    ),
  );
}

const ok = (profile) => [200, {
  profile, access_token: TOKEN, token_type: 'Bearer', expires_at: '2030-01-02T03:04:05Z', expires_in: 3599,
}];

test('fetchToken returns the token with its expiry and sends profile and min_ttl', async () => {
  const s = await standIn((req) => ok(new URL(req.url, 'http://x').searchParams.get('profile')));
  try {
    const t = await lib.fetchToken({ profile: 'prod', minTtl: 600, socketPath: s.socketPath });
    assert.equal(t.accessToken, TOKEN);
    assert.equal(t.profile, 'prod');
    assert.equal(t.tokenType, 'Bearer');
    assert.equal(t.expiresIn, 3599);
    assert.equal(t.expiresAt.toISOString(), '2030-01-02T03:04:05.000Z');
    assert.equal(s.seen[0].url, '/v1/token?profile=prod&min_ttl=600');
    assert.equal(await lib.getToken({ socketPath: s.socketPath }), TOKEN);
  } finally {
    await s.close();
  }
});

test('error answers map to classes with code and exitCode', async () => {
  const cases = [
    ['bad_request', 400, lib.BadRequest, 2],
    ['forbidden', 403, lib.BadRequest, 2],
    ['unknown_profile', 404, lib.UnknownProfile, 4],
    ['reauth_required', 424, lib.ReauthRequired, 5],
    ['upstream_unavailable', 503, lib.UpstreamUnavailable, 6],
    ['locked', 423, lib.VaultLocked, 7],
  ];
  for (const [code, status, Cls, exit] of cases) {
    const s = await standIn(() => [status, { error: { code, message: `m ${code}`, hint: 'do this' } }]);
    try {
      await assert.rejects(lib.getToken({ socketPath: s.socketPath }), (err) => {
        assert.ok(err instanceof Cls && err instanceof lib.CredddError);
        assert.equal(err.code, code);
        assert.equal(err.exitCode, exit);
        assert.equal(err.status, status);
        assert.equal(err.message, `m ${code} (do this)`);
        return true;
      });
    } finally {
      await s.close();
    }
  }
});

test('a missing socket fails fast with DaemonUnreachable naming how to start it', async () => {
  const started = process.hrtime.bigint();
  await assert.rejects(lib.getToken({ socketPath: '/nonexistent/credd.sock', autostart: false }), (err) => {
    assert.ok(err instanceof lib.DaemonUnreachable);
    assert.equal(err.exitCode, 3);
    assert.match(err.message, /coactive-credd serve/);
    return true;
  });
  assert.ok(Number(process.hrtime.bigint() - started) / 1e6 < 100);
});

test('refresh reports the rejected token by its sha256 only', async () => {
  const s = await standIn(() => ok('default'));
  try {
    await lib.refresh({ rejectedToken: 'old-token', socketPath: s.socketPath });
    const sent = s.seen[0];
    assert.equal(sent.method, 'POST');
    assert.equal(sent.url, '/v1/token/refresh?profile=default');
    const want = crypto.createHash('sha256').update('old-token').digest('hex');
    assert.deepEqual(JSON.parse(sent.body), { rejected_token_sha256: want });
    assert.ok(!sent.body.includes('old-token'));
  } finally {
    await s.close();
  }
});

test('the default socket path follows the shared rule', () => {
  assert.equal(lib.defaultSocketPath({ COACTIVE_CREDD_SOCKET: '/x/s', COACTIVE_CREDD_HOME: '/h' }), '/x/s');
  assert.equal(lib.defaultSocketPath({ COACTIVE_CREDD_HOME: '/h' }), '/h/credd.sock');
  if (process.platform !== 'darwin') {
    assert.equal(lib.defaultSocketPath({ XDG_RUNTIME_DIR: '/r' }), '/r/coactive-credd/credd.sock');
  }
  assert.equal(lib.defaultProfile({}), 'default');
  assert.equal(lib.defaultProfile({ COACTIVE_PROFILE: 'p' }), 'p');
});

test('the CLI prints the token alone, or a header, and exits with the SPEC codes', async () => {
  const s = await standIn((req) =>
    req.url.includes('profile=nope')
      ? [404, { error: { code: 'unknown_profile', message: 'no profile named nope', hint: 'log in' } }]
      : ok('default'),
  );
  const cli = path.join(__dirname, '..', 'bin', 'coactive-token.js');
  const run = (args) =>
    new Promise((resolve) =>
      execFile(process.execPath, [cli, ...args], { env: { ...process.env, COACTIVE_CREDD_SOCKET: s.socketPath } },
        (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr })),
    );
  try {
    assert.deepEqual(await run([]), { code: 0, stdout: `${TOKEN}\n`, stderr: '' });
    assert.equal((await run(['--header'])).stdout, `Authorization: Bearer ${TOKEN}\n`);
    const bad = await run(['--profile', 'nope']);
    assert.equal(bad.code, 4);
    assert.equal(bad.stderr, 'coactive-token-node: no profile named nope (log in)\n');
    assert.equal((await run(['--min-ttl', 'soon'])).code, 2);
  } finally {
    await s.close();
  }
});

test('autostart: COACTIVE_CREDD_AUTOSTART decides; unset, on unless a user service is installed', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'ccd-node-'));
  try {
    const env = { HOME: home };
    assert.equal(lib.autostartEnabled(env), true);
    assert.equal(lib.autostartEnabled({ ...env, COACTIVE_CREDD_AUTOSTART: '0' }), false);
    const units = path.join(home, 'xdg', 'systemd', 'user');
    fs.mkdirSync(units, { recursive: true });
    fs.writeFileSync(path.join(units, 'coactive-credd.socket'), '');
    assert.equal(lib.autostartEnabled(env), true); // XDG_CONFIG_HOME not set: not looked at
    assert.equal(lib.autostartEnabled({ ...env, XDG_CONFIG_HOME: path.join(home, 'xdg') }), false);
    assert.equal(lib.autostartEnabled({ ...env, XDG_CONFIG_HOME: path.join(home, 'xdg'), COACTIVE_CREDD_AUTOSTART: '1' }), true);
    const agents = path.join(home, 'Library', 'LaunchAgents');
    fs.mkdirSync(agents, { recursive: true });
    fs.writeFileSync(path.join(agents, 'ai.coactive.credd.plist'), '');
    assert.equal(lib.autostartEnabled(env), false);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

test('coactiveFetch reports a token Coactive rejects and retries once, never a stream', async () => {
  let current = 'cat_first';
  const s = await standIn((req, body) => {
    if (req.method === 'POST') {
      const sent = JSON.parse(body || '{}').rejected_token_sha256;
      if (sent === crypto.createHash('sha256').update(current).digest('hex')) current = 'cat_second';
    }
    return [200, { profile: 'default', access_token: current, token_type: 'Bearer',
      expires_at: '2030-01-02T03:04:05Z', expires_in: 3599 }];
  });
  const seen = [];
  let rejectAll = false;
  const api = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ auth: req.headers.authorization, body });
      const ok = !rejectAll && req.headers.authorization === 'Bearer cat_second';
      res.writeHead(ok ? 200 : 401, { 'Content-Type': 'application/json' });
      res.end(ok ? '{"ok":true}' : '{"detail":"Invalid token"}');
    });
  });
  await new Promise((r) => api.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${api.address().port}/api/v1/things`;
  try {
    const r = await lib.coactiveFetch(url, { method: 'POST', body: '{"q":1}' }, { socketPath: s.socketPath });
    assert.equal(r.status, 200);
    assert.deepEqual(seen.map((x) => [x.auth, x.body]), [['Bearer cat_first', '{"q":1}'], ['Bearer cat_second', '{"q":1}']]);
    const reported = s.seen.filter((x) => x.method === 'POST').map((x) => JSON.parse(x.body));
    assert.deepEqual(reported, [{ rejected_token_sha256: crypto.createHash('sha256').update('cat_first').digest('hex') }]);
    // Rejected again: one retry, then the 401 is the caller's.
    seen.length = 0;
    rejectAll = true;
    assert.equal((await lib.coactiveFetch(url, {}, { socketPath: s.socketPath })).status, 401);
    assert.equal(seen.length, 2);
    // A streamed body is sent once.
    seen.length = 0;
    const { Readable } = require('stream');
    const body = Readable.toWeb(Readable.from([Buffer.from('chunk')]));
    const r3 = await lib.coactiveFetch(url, { method: 'PUT', body, duplex: 'half' }, { socketPath: s.socketPath });
    assert.equal(r3.status, 401);
    assert.equal(seen.length, 1);
  } finally {
    await new Promise((r) => api.close(r));
    await s.close();
  }
});

test('COACTIVE_CREDD_DAEMON_UID is parsed as tests/vectors/safe_path.json says', () => {
  const file = path.join(__dirname, '..', '..', '..', 'tests', 'vectors', 'safe_path.json');
  const { daemon_uid: vectors } = JSON.parse(fs.readFileSync(file, 'utf8'));
  for (const [value, uid] of Object.entries(vectors.valid)) {
    assert.equal(lib.daemonUid({ COACTIVE_CREDD_DAEMON_UID: value }), uid, value);
  }
  for (const value of vectors.invalid) {
    assert.throws(
      () => lib.daemonUid({ COACTIVE_CREDD_DAEMON_UID: value }),
      (err) => err instanceof lib.BadRequest && err.exitCode === 2 && !err.message.includes(value),
      JSON.stringify(value),
    );
  }
  assert.equal(lib.daemonUid({}), null);
});
