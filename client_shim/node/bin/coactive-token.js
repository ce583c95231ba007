#!/usr/bin/env node
'use strict';
// coactive-token (Node): print the current Coactive access token.
//   coactive-token.js [--profile P] [--min-ttl SECONDS] [--json | --header]
// Exit codes as the SPEC: 0 ok, 2 usage, 3 unreachable, 4 unknown profile, 5 re-login,
// 6 upstream unavailable, 7 locked. Errors are one line on stderr.

const { fetchToken, watch, EXIT } = require('..');

function usageError(message) {
  process.stderr.write(`coactive-token: ${message} (see: coactive-token --help)\n`);
  process.exit(EXIT.USAGE);
}

function parse(argv) {
  const opts = { profile: undefined, minTtl: 0, format: 'raw' };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const need = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) usageError(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--profile':
        opts.profile = need();
        if (!opts.profile) usageError('--profile needs a name');
        break;
      case '--min-ttl': {
        const v = need();
        if (!/^[0-9]+$/.test(v)) usageError('--min-ttl must be a whole number of seconds');
        opts.minTtl = Number(v);
        break;
      }
      case '--json':
        opts.format = 'json';
        break;
      case '--header':
        opts.format = 'header';
        break;
      case '--watch':
        opts.format = 'watch';
        break;
      case '-h':
      case '--help':
        process.stdout.write(
          'usage: coactive-token [--profile P] [--min-ttl SECONDS] [--json | --header]\n' +
            '       coactive-token [--profile P] --watch\n' +
            'Print the current Coactive access token held by coactive-credd.\n',
        );
        process.exit(EXIT.OK);
        break;
      default:
        usageError(`unknown argument: ${arg}`);
    }
  }
  return opts;
}

/** --watch: a JSON line per token rotation or state change until the daemon stops (exit 3). */
async function follow(profile) {
  try {
    for await (const ev of watch({ profile })) process.stdout.write(`${JSON.stringify(ev)}\n`);
  } catch (err) {
    process.stderr.write(`coactive-token: ${err.message}\n`);
    process.exitCode = typeof err.exitCode === 'number' ? err.exitCode : 1;
    return;
  }
  process.stderr.write('coactive-token: coactive-credd stopped or closed the event stream (start it with: coactive-credd serve)\n');
  process.exitCode = EXIT.UNREACHABLE;
}

async function main() {
  const opts = parse(process.argv.slice(2));
  if (opts.format === 'watch') return follow(opts.profile);
  let tok;
  try {
    tok = await fetchToken({ profile: opts.profile, minTtl: opts.minTtl });
  } catch (err) {
    process.stderr.write(`coactive-token: ${err.message}\n`);
    process.exitCode = typeof err.exitCode === 'number' ? err.exitCode : 1;
    return;
  }
  let out;
  if (opts.format === 'json') {
    out = JSON.stringify({
      profile: tok.profile,
      access_token: tok.accessToken,
      token_type: tok.tokenType,
      expires_at: tok.expiresAt.toISOString().replace(/\.\d{3}Z$/, 'Z'),
      expires_in: tok.expiresIn,
    });
  } else if (opts.format === 'header') {
    out = `Authorization: Bearer ${tok.accessToken}`;
  } else {
    out = tok.accessToken;
  }
  process.stdout.write(`${out}\n`);
}

main();
