// The Boltorezka web SDK: native ES modules, no dependencies, no build step.
//
//   import { ApiClient, RealtimeClient, Call, webStorageStore } from './sdk/index.js';
//
//   const api = new ApiClient({ store: webStorageStore() });
//   await api.login({ username, password });
//   const realtime = new RealtimeClient({
//     token: (options) => api.accessToken(options),
//     fetchHistory: (roomId, range) => api.history(roomId, range),
//   });
//   realtime.on('message', ({ roomId, message }) => show(roomId, message));
//   await realtime.connect();
//   await realtime.join(roomId, { lastSeq });

export { backoffDelay } from './backoff.js';
export { Call, sdpSessionId } from './calls.js';
export {
  CLIENT_MESSAGES,
  PROTOCOL_VERSION,
  SERVER_TYPES,
  decodeClientFrame,
  decodeServerFrame,
  encodeClientMessage,
} from './codec.js';
export { Emitter } from './emitter.js';
export {
  ApiError,
  BoltorezkaError,
  ConnectionLostError,
  NackError,
  NetworkError,
  ProtocolError,
  RequestTimeoutError,
  SessionEndedError,
} from './errors.js';
export { FINAL_CLOSE_CODES, RealtimeClient, newId } from './realtime.js';
export { ApiClient, memoryStore, webStorageStore } from './rest.js';
export { SeqGate } from './seqgate.js';
