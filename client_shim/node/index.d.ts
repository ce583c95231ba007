// Type declarations for @coactive/credd-token.

export declare const EXIT: Readonly<{
  OK: 0;
  USAGE: 2;
  UNREACHABLE: 3;
  UNKNOWN_PROFILE: 4;
  REAUTH: 5;
  UNAVAILABLE: 6;
  LOCKED: 7;
}>;

export interface TokenInfo {
  profile: string;
  accessToken: string;
  tokenType: string;
  expiresAt: Date;
  /** Whole seconds of validity left when the daemon answered. */
  expiresIn: number;
}

export interface CallOptions {
  /** Defaults to $COACTIVE_CREDD_SOCKET, else the daemon's default path. */
  socketPath?: string;
  /** Per call; default 30000. */
  timeoutMs?: number;
}

export interface StartOptions {
  /**
   * With no daemon on the socket, start `coactive-credd serve` and wait for it (default:
   * true, subject to autostartEnabled()); false never starts one.
   */
  autostart?: boolean;
}

export interface TokenOptions extends CallOptions, StartOptions {
  /** Defaults to $COACTIVE_PROFILE, else "default". */
  profile?: string;
  /** The token must stay valid at least this many seconds. */
  minTtl?: number;
}

export interface RefreshOptions extends CallOptions, StartOptions {
  profile?: string;
  /** Replace the token only if this one is still the current one. */
  rejectedToken?: string;
}

export declare class CredddError extends Error {
  /** The daemon's error code: bad_request, forbidden, unknown_profile, locked, reauth_required, upstream_unavailable; or unreachable. */
  code: string;
  hint: string;
  /** The HTTP status of the daemon's answer, or null. */
  status: number | null;
  /** The exit code the command-line shims use for this error. */
  exitCode: number;
}
export declare class DaemonUnreachable extends CredddError {}
/** The socket's folder or socket file is not this user's (nor root's, nor $COACTIVE_CREDD_DAEMON_UID's): nothing was sent. Exit 3. */
export declare class UntrustedDaemon extends DaemonUnreachable {}
export declare class BadRequest extends CredddError {}
export declare class UnknownProfile extends CredddError {}
export declare class ReauthRequired extends CredddError {}
export declare class UpstreamUnavailable extends CredddError {}
export declare class VaultLocked extends CredddError {}

export declare function defaultSocketPath(env?: NodeJS.ProcessEnv): string;
export declare function defaultProfile(env?: NodeJS.ProcessEnv): string;
/** $COACTIVE_CREDD_DAEMON_UID as a uid, null when unset or empty; throws BadRequest (exit 2)
 * unless ASCII decimal digits without sign, space or leading zero, at most 4294967294. */
export declare function daemonUid(env?: NodeJS.ProcessEnv): number | null;
/** $COACTIVE_CREDD_AUTOSTART 1 or 0; unset, true unless a user service is installed. */
export declare function autostartEnabled(env?: NodeJS.ProcessEnv): boolean;
/** Start `coactive-credd serve` in the background; resolves once it answers. */
export declare function startDaemon(socketPath?: string, options?: { waitMs?: number }): Promise<void>;
export declare function getToken(options?: TokenOptions): Promise<string>;
export declare function fetchToken(options?: TokenOptions): Promise<TokenInfo>;
export declare function refresh(options?: RefreshOptions): Promise<TokenInfo>;
export declare function status(options?: CallOptions): Promise<Record<string, unknown>>;
export declare function request(
  method: string,
  path: string,
  options?: CallOptions & { body?: unknown },
): Promise<{ status: number; body: string }>;

export interface FetchOptions extends TokenOptions {
  /** The fetch to send with; default the global fetch (Node 18 or later). */
  fetch?: typeof fetch;
}

/**
 * fetch() to Coactive with "Authorization: Bearer <token>" from the daemon. On a 401 the
 * rejected token is reported (the daemon replaces it only if it is still current) and the
 * request is sent once more with the new token, unless its body is a stream. Rejects with
 * CredddError when no token can be had; otherwise resolves to fetch's Response.
 */
export declare function coactiveFetch(
  input: string | URL | Request,
  init?: RequestInit,
  options?: FetchOptions,
): Promise<Response>;

/** Options of socketFetch. */
export interface SocketFetchOptions {
  /** The profile whose token the daemon adds; default $COACTIVE_PROFILE, else "default". */
  profile?: string;
  /** The daemon's socket; default as defaultSocketPath(). */
  socketPath?: string;
  /** An http.Agent to keep connections alive; default none (one connection a request). */
  agent?: import('http').Agent;
}

/**
 * fetch() through the daemon's API proxy (the socket's /api/ route adds the token, so the
 * program never holds one). Only the path and query of `input` are used. Resolves to a
 * Response whose body streams; rejects with DaemonUnreachable when the socket cannot be used.
 */
export declare function socketFetch(
  input: string | URL | { url: string },
  init?: { method?: string; headers?: Record<string, string> | Headers; body?: string | Uint8Array | AsyncIterable<Uint8Array | string> | NodeJS.ReadableStream },
  options?: SocketFetchOptions,
): Promise<Response>;

/** One change of a profile's token or state, from GET /v1/events; never the token. */
export interface CredddEvent {
  profile: string;
  state: 'valid' | 'refreshing' | 'expired' | 'reauth_required' | 'locked' | 'no_token';
  /** RFC 3339 UTC, or null when there is no token. */
  expires_at: string | null;
  /** Hex SHA-256 of the token, or null: fetch the token again when it changes. */
  token_sha256: string | null;
}

/** Emits 'event', then 'end' or 'error'; also an async iterable of the events. */
export interface Watcher extends import('events').EventEmitter, AsyncIterable<CredddEvent> {
  close(): void;
}

/** Follow the daemon's GET /v1/events (token rotations and state changes). */
export declare function watch(options?: { profile?: string; socketPath?: string; silenceMs?: number }): Watcher;
