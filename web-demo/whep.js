// Minimal WHEP (RFC 9725) client: recvonly audio + video, full ICE gathering
// before the offer is sent (the server answers with all its candidates).

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

// Connects and returns { pc, resource } where resource is the viewer URL
// (DELETE it to leave).
export async function whepConnect(endpoint, token, onTrack, iceServers = []) {
  const pc = new RTCPeerConnection({ iceServers });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.ontrack = onTrack;
  await pc.setLocalDescription(await pc.createOffer());
  await waitForGathering(pc, 1500);
  let resp;
  try {
    resp = await fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', 'Authorization': `Bearer ${token}` },
      body: pc.localDescription.sdp,
    });
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
  const resource = location ? new URL(location, endpoint).toString() : null;
  await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
  return { pc, resource };
}

export function whepHangUp(resource, token) {
  if (!resource) return;
  // keepalive lets the request finish while the page unloads.
  fetch(resource, { method: 'DELETE', headers: { 'Authorization': `Bearer ${token}` }, keepalive: true })
    .catch(() => {});
}
