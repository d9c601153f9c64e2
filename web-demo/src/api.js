// The console's client for the public `huashen.v1` API over gRPC-Web: the
// same services and messages as every other client, generated from
// `protos/` by protoc-gen-es and called through Connect's gRPC-Web transport.

import { createClient, ConnectError, Code } from '@connectrpc/connect';
import { createGrpcWebTransport } from '@connectrpc/connect-web';
import { AvatarService } from './gen/huashen/v1/avatar_pb.js';
import { SessionService } from './gen/huashen/v1/session_pb.js';
import { OutputService, RecordingService } from './gen/huashen/v1/output_pb.js';

export { ConnectError, Code };

// Browsers cannot stream a request body (fetch uploads it whole), so
// gRPC-Web carries exactly one request message per call. The API's two
// request-streaming methods accept that: EnrollAvatar takes the whole image
// in `start.inline_image`, and a Speak stream of one message speaks it and
// flushes. Calling them as server-streaming / unary puts the same bytes on
// the wire; only the client's view of the method changes.
function oneRequestMessage(service, kinds) {
  const methods = service.methods.map((m) => (kinds[m.name] ? { ...m, methodKind: kinds[m.name] } : m));
  return { ...service, methods, method: Object.fromEntries(methods.map((m) => [m.localName, m])) };
}

const Avatars = oneRequestMessage(AvatarService, { EnrollAvatar: 'server_streaming' });
const Sessions = oneRequestMessage(SessionService, { Speak: 'unary' });

// Clients for the avatar, session, output and recording services that send `key` with every
// call, to the server that served this page.
export function connect(key, baseUrl = location.origin) {
  const auth = (next) => (req) => {
    req.header.set('authorization', `Bearer ${key}`);
    return next(req);
  };
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors: [auth] });
  return {
    avatars: createClient(Avatars, transport),
    sessions: createClient(Sessions, transport),
    outputs: createClient(OutputService, transport),
    recordings: createClient(RecordingService, transport),
  };
}

// "CODE_NAME: the server's message" for an error from a call, or the
// error's own text for anything else (a network failure, say).
export function describeError(e) {
  const err = ConnectError.from(e);
  if (err.code === Code.Unknown && !err.rawMessage) return String(e);
  return `${codeName(err.code)}: ${err.rawMessage}`;
}

export function codeName(code) {
  // Code's names are camel case (InvalidArgument); gRPC writes them as
  // INVALID_ARGUMENT, as the API documentation does.
  return (Code[code] || String(code)).replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
}
