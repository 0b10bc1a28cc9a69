// Every failure the SDK reports is one of these classes, so callers branch on `instanceof`
// and on the server's stable `code`, never on message text (which is for humans and may
// change).

/** Base class of every error the SDK throws. */
export class BoltorezkaError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * The REST API answered with a problem document (RFC 9457).
 */
export class ApiError extends BoltorezkaError {
  /**
   * @param {number} status
   * @param {import('./types.js').Problem} problem
   */
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    /** @type {string} */
    this.code = problem.code || 'internal_error';
    this.detail = problem.detail || '';
    /** @type {string | undefined} */
    this.field = problem.field;
    this.retryable = Boolean(problem.retryable);
    /** @type {number | null} */
    this.retryAfterMs = problem.retryAfterMs ?? null;
    /** @type {string | undefined} */
    this.requestId = problem.requestId;
  }
}

/** The request never got an HTTP answer (offline, DNS, connection refused). */
export class NetworkError extends BoltorezkaError {
  /** @param {string} message @param {unknown} [cause] */
  constructor(message, cause) {
    super(message);
    this.cause = cause;
    this.code = 'network_error';
    this.retryable = true;
  }
}

/** The server answered a WebSocket request with `nack`. */
export class NackError extends BoltorezkaError {
  /**
   * @param {string} requestType the `type` of the request that failed
   * @param {import('./types.js').NackPayload} payload
   */
  constructor(requestType, payload) {
    super(`${requestType}: ${payload.code}: ${payload.message}`);
    this.requestType = requestType;
    this.code = payload.code;
    this.detail = payload.message;
    this.retryable = Boolean(payload.retryable);
    /** @type {number | null} */
    this.retryAfterMs = payload.retryAfterMs ?? null;
    /** @type {Record<string, unknown>} */
    this.details = payload.details ?? {};
  }
}

/**
 * A frame could not be encoded or decoded; `code` is one of the protocol's frame error
 * codes (`frame_too_large`, `malformed_json`, `unsupported_version`, `unknown_type`,
 * `missing_request_id`, `validation_failed`).
 */
export class ProtocolError extends BoltorezkaError {
  /**
   * @param {string} code
   * @param {string} message
   * @param {string | null} [requestId]
   */
  constructor(code, message, requestId = null) {
    super(`${code}: ${message}`);
    this.code = code;
    this.detail = message;
    this.requestId = requestId;
  }
}

/** No answer arrived in time; the server may still have carried the request out. */
export class RequestTimeoutError extends BoltorezkaError {
  /** @param {string} requestType @param {number} timeoutMs */
  constructor(requestType, timeoutMs) {
    super(`${requestType} got no answer within ${timeoutMs} ms`);
    this.requestType = requestType;
    this.code = 'timeout';
    this.retryable = true;
  }
}

/** The socket closed (or was not open) before the request was answered. */
export class ConnectionLostError extends BoltorezkaError {
  /** @param {number | null} [closeCode] @param {string} [reason] */
  constructor(closeCode = null, reason = '') {
    super(`connection closed${closeCode === null ? '' : ` (${closeCode}${reason ? ` ${reason}` : ''})`}`);
    this.closeCode = closeCode;
    this.reason = reason;
    this.code = 'connection_lost';
    this.retryable = true;
  }
}

/** The session cannot continue: signed out, revoked, or the refresh token was refused. */
export class SessionEndedError extends BoltorezkaError {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}
