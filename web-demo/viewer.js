// Huashen viewer: plays one session by WHEP, reconnects after network loss,
// shows connection state and live stats. URL: viewer.html?session=se_…#token=…
// (the token in the fragment: browsers never send it to a server, so it
// stays out of access logs and Referer headers).
import { whepConnect, whepHangUp, WhepError } from './whep.js';

const STRINGS = {
  en: { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…',
    ended: 'This session has ended.', badToken: 'This viewer link is not valid (wrong token).',
    missing: 'The link needs ?session=…#token=…', full: 'The session is full; retrying…',
    error: 'Cannot connect: ', unmute: 'Unmute', fps: 'fps', bitrate: 'bitrate',
    vjitter: 'video jitter', ajitter: 'audio jitter', frames: 'frames' },
  zh: { connecting: '连接中…', live: '直播中', reconnecting: '正在重连…',
    ended: '直播已结束。', badToken: '观看链接无效（令牌错误）。',
    missing: '链接缺少 ?session=…#token=…', full: '观看人数已满，正在重试…',
    error: '无法连接：', unmute: '打开声音', fps: '帧率', bitrate: '码率',
    vjitter: '视频抖动', ajitter: '音频抖动', frames: '帧数' },
};
const lang = (navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh' : 'en';
const t = (k) => STRINGS[lang][k];
document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);

const $ = (id) => document.getElementById(id);
const video = $('video');
const params = new URLSearchParams(location.search);
const session = params.get('session');
const token = new URLSearchParams(location.hash.slice(1)).get('token');
// A new link in the same tab may differ only in its fragment: start over.
window.addEventListener('hashchange', () => location.reload());

// Exposed for tests and for anyone curious in the console.
const state = window.huashenViewer = { state: 'new', stats: {}, error: null };

function setStatus(text, cls) {
  const s = $('status');
  s.textContent = text;
  s.className = `pill ${cls || ''}`;
}

function fatal(text) {
  state.state = 'ended';
  state.error = text;
  setStatus(text, 'bad');
  const m = $('message');
  m.textContent = text;
  m.hidden = false;
}

let pc = null;
let resource = null;
let retryMs = 1000;

async function connect() {
  state.state = 'connecting';
  setStatus(pc ? t('reconnecting') : t('connecting'));
  try {
    const endpoint = new URL(`/whep/sessions/${encodeURIComponent(session)}`, location.href).toString();
    const r = await whepConnect(endpoint, token, (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      if (video.srcObject !== stream) video.srcObject = stream;
    });
    pc = r.pc;
    resource = r.resource;
    retryMs = 1000;
    pc.onconnectionstatechange = () => {
      state.state = pc.connectionState;
      if (pc.connectionState === 'connected') {
        setStatus(t('live'), 'live');
        $('unmute').hidden = !video.muted;
      } else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
        scheduleReconnect();
      } else if (pc.connectionState === 'disconnected') {
        setStatus(t('reconnecting'), 'bad');
        // Give ICE a moment to recover by itself.
        setTimeout(() => { if (pc && pc.connectionState === 'disconnected') scheduleReconnect(); }, 3000);
      }
    };
  } catch (e) {
    if (e instanceof WhepError && e.status === 401) return fatal(t('badToken'));
    if (e instanceof WhepError && e.status === 404) return fatal(t('ended'));
    setStatus(e instanceof WhepError && e.status === 503 ? t('full') : t('error') + e.message, 'bad');
    scheduleReconnect();
  }
}

let reconnectTimer = null;
function scheduleReconnect() {
  if (reconnectTimer || state.state === 'ended') return;
  if (pc) { pc.onconnectionstatechange = null; pc.close(); }
  whepHangUp(resource, token);
  resource = null;
  state.state = 'reconnecting';
  setStatus(t('reconnecting'), 'bad');
  reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

let last = null;
async function pollStats() {
  if (pc && pc.connectionState === 'connected') {
    const report = await pc.getStats();
    const s = { at: performance.now() };
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.framesPerSecond = r.framesPerSecond || 0;
        s.videoBytes = r.bytesReceived || 0;
        s.videoJitterMs = (r.jitter || 0) * 1000;
        s.frameWidth = r.frameWidth || 0;
        s.frameHeight = r.frameHeight || 0;
      } else if (r.kind === 'audio') {
        s.audioPackets = r.packetsReceived || 0;
        s.audioBytes = r.bytesReceived || 0;
        s.audioJitterMs = (r.jitter || 0) * 1000;
        s.audioSamples = r.totalSamplesReceived || 0;
      }
    });
    if (last) {
      const dt = (s.at - last.at) / 1000;
      const bytes = (s.videoBytes + (s.audioBytes || 0)) - (last.videoBytes + (last.audioBytes || 0));
      s.kbps = dt > 0 ? Math.round((bytes * 8) / dt / 1000) : 0;
    }
    last = s;
    state.stats = s;
    $('fps').textContent = (s.framesPerSecond ?? 0).toFixed(0);
    $('bitrate').textContent = s.kbps !== undefined ? `${s.kbps} kbit/s` : '–';
    $('vjitter').textContent = `${(s.videoJitterMs ?? 0).toFixed(1)} ms`;
    $('ajitter').textContent = `${(s.audioJitterMs ?? 0).toFixed(1)} ms`;
    $('frames').textContent = String(s.framesDecoded ?? 0);
  }
  setTimeout(pollStats, 1000);
}

$('unmute').addEventListener('click', () => {
  video.muted = false;
  video.play().catch(() => {});
  $('unmute').hidden = true;
});
window.addEventListener('pagehide', () => whepHangUp(resource, token));

if (!session || !token) {
  fatal(t('missing'));
} else {
  connect();
  pollStats();
}
