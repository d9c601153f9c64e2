// Minimal WHEP (play) and WHIP (RFC 9725, publish) clients: full ICE
// gathering before the offer is sent (the server answers with all its
// candidates, no trickle).

export class WhepError extends Error {
  constructor(status, text) { super(text || `HTTP ${status}`); this.status = status; }
}

function waitForGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(done, ms);
  });
}

// Offers `pc`'s transceivers to `endpoint` with the bearer `token` and
// applies the answer. Returns the resource URL (DELETE it to leave). Closes
// `pc` on failure.
async function exchange(pc, endpoint, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForGathering(pc, 1500);
  const post = (url) => fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', 'Authorization': `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  let resp;
  try {
    resp = await post(endpoint);
    // With several servers, the one asked may redirect (307) to the server
    // running the session; browsers drop the Authorization header on a
    // redirect to another origin, so ask that server directly.
    if (resp.redirected && resp.status === 401) resp = await post(resp.url);
  } catch (e) {
    pc.close();
    throw new WhepError(0, String(e));
  }
  if (resp.status !== 201) {
    const text = await resp.text();
    pc.close();
    throw new WhepError(resp.status, text.trim());
  }
  const location = resp.headers.get('Location');
  const resource = location ? new URL(location, resp.url || endpoint).toString() : null;
  await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
  return resource;
}

// Plays a session: recvonly audio + video. Returns { pc, resource }.
export async function whepConnect(endpoint, token, onTrack, iceServers = []) {
  const pc = new RTCPeerConnection({ iceServers });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.ontrack = onTrack;
  return { pc, resource: await exchange(pc, endpoint, token) };
}

// Publishes an audio `track` (the host's microphone) with the API `key`.
// Returns { pc, resource }.
export async function whipPublish(endpoint, key, track, iceServers = []) {
  const pc = new RTCPeerConnection({ iceServers });
  pc.addTransceiver(track, { direction: 'sendonly' });
  return { pc, resource: await exchange(pc, endpoint, key) };
}

export function whepHangUp(resource, token) {
  if (!resource) return;
  // keepalive lets the request finish while the page unloads.
  fetch(resource, { method: 'DELETE', headers: { 'Authorization': `Bearer ${token}` }, keepalive: true })
    .catch(() => {});
}
