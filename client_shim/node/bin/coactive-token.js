#!/usr/bin/env node
'use strict';
// coactive-token-node: print the current Coactive access token (installed by npm under this
// name, beside the sh shim's `coactive-token`).
//   coactive-token-node [--profile P] [--min-ttl SECONDS] [--json | --header]
// The flags, help text, exit codes and usage errors are those of every coactive-token shim
// (tests/vectors/conformance.json). Exit codes as the SPEC: 0 ok, 2 usage, 3 unreachable,
// 4 unknown profile, 5 re-login, 6 upstream unavailable, 7 locked. Errors are one line on
// stderr.

const { fetchToken, watch, EXIT } = require('..');
const { version } = require('../package.json');

const PROG = 'coactive-token-node';
const HELP = `usage: ${PROG} [--profile P] [--min-ttl SECONDS] [--json | --header]
       ${PROG} [--profile P] --watch

Print the current Coactive access token held by coactive-credd, and nothing else.
  --profile P        profile name (default: $COACTIVE_PROFILE, else "default")
  --min-ttl SECONDS  the token must stay valid at least this long (default 0)
  --json             print the daemon's JSON answer (profile, access_token, expires_at, expires_in)
  --header           print "Authorization: Bearer <token>"
  --watch            print a JSON line each time the token is replaced or its state changes
                     ({"profile","state","expires_at","token_sha256"}, never the token);
                     runs until the daemon stops (then exits 3)
  --version          print the version and exit
  -h, --help         print this help and exit
Exit codes: 0 ok, 2 usage, 3 daemon not reachable, 4 unknown profile, 5 re-login needed,
6 Coactive unavailable, 7 vault locked; errors are one line on stderr.
Environment: COACTIVE_PROFILE; COACTIVE_CREDD_SOCKET (else the daemon's default path, under
COACTIVE_CREDD_HOME when set); COACTIVE_CREDD_AUTOSTART (0: never start a daemon, 1: always
may; unset: unless a user service is installed); COACTIVE_CREDD_COMMAND (the coactive-credd
to start).
`;

function usageError(message) {
  process.stderr.write(`${PROG}: ${message} (see: ${PROG} --help)\n`);
  process.exit(EXIT.USAGE);
}

// Left to right; the first error, --help or --version ends it.
function parse(argv) {
  const opts = { profile: undefined, minTtl: '0', json: false, header: false, watch: false };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    if (arg.startsWith('--profile=') || arg.startsWith('--min-ttl=')) {
      value = arg.slice(arg.indexOf('=') + 1);
      arg = arg.slice(0, arg.indexOf('='));
    }
    switch (arg) {
      case '--profile':
      case '--min-ttl':
        if (value === undefined) {
          if (i + 1 >= argv.length) {
            usageError(arg === '--profile' ? '--profile needs a name' : '--min-ttl needs a number of seconds');
          }
          value = argv[++i];
        }
        if (arg === '--profile') {
          if (!value) usageError('--profile needs a name');
          opts.profile = value;
        } else {
          opts.minTtl = value;
        }
        break;
      case '--json':
        opts.json = true;
        break;
      case '--header':
        opts.header = true;
        break;
      case '--watch':
        opts.watch = true;
        break;
      case '-h':
      case '--help':
        process.stdout.write(HELP);
        process.exit(EXIT.OK);
        break;
      case '--version':
        process.stdout.write(`${PROG} ${version}\n`);
        process.exit(EXIT.OK);
        break;
      default:
        usageError(`unknown argument: ${arg}`);
    }
  }
  if (!/^[0-9]+$/.test(opts.minTtl)) usageError('--min-ttl must be a whole number of seconds');
  if (opts.json && opts.header) usageError('--json and --header cannot be used together');
  return opts;
}

/** --watch: a JSON line per token rotation or state change until the daemon stops (exit 3). */
async function follow(profile) {
  try {
    for await (const ev of watch({ profile })) process.stdout.write(`${JSON.stringify(ev)}\n`);
  } catch (err) {
    process.stderr.write(`${PROG}: ${err.message}\n`);
    process.exitCode = typeof err.exitCode === 'number' ? err.exitCode : 1;
    return;
  }
  process.stderr.write(`${PROG}: coactive-credd stopped or closed the event stream (start it with: coactive-credd serve)\n`);
  process.exitCode = EXIT.UNREACHABLE;
}

async function main() {
  const opts = parse(process.argv.slice(2));
  if (opts.watch) return follow(opts.profile);
  let tok;
  try {
    tok = await fetchToken({ profile: opts.profile, minTtl: Number(opts.minTtl) });
  } catch (err) {
    process.stderr.write(`${PROG}: ${err.message}\n`);
    process.exitCode = typeof err.exitCode === 'number' ? err.exitCode : 1;
    return;
  }
  let out;
  if (opts.json) {
    out = JSON.stringify({
      profile: tok.profile,
      access_token: tok.accessToken,
      token_type: tok.tokenType,
      expires_at: tok.expiresAt.toISOString().replace(/\.\d{3}Z$/, 'Z'),
      expires_in: tok.expiresIn,
    });
  } else if (opts.header) {
    out = `Authorization: Bearer ${tok.accessToken}`;
  } else {
    out = tok.accessToken;
  }
  process.stdout.write(`${out}\n`);
}

main();
