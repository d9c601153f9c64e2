// Huashen studio console: sign in with an API key, enroll a portrait with
// consent, start a session, type what the presenter says and watch it live.
// Everything goes through the public huashen.v1 API over gRPC-Web (src/api.js)
// and the session's WHEP endpoint; nothing here has powers a gRPC client
// lacks.

import { timestampDate } from '@bufbuild/protobuf/wkt';
import { connect, describeError, ConnectError, Code } from './api.js';
import { ImageFormat, EnrollStage } from './gen/huashen/v1/avatar_pb.js';
import { SessionState, CloseReason } from './gen/huashen/v1/session_pb.js';
import { STRINGS, pickLanguage } from './i18n.js';
import { takeFinished, pieces } from './typing.js';
import { whepConnect, whipPublish, whepHangUp } from '../whep.js';
import { createOutputs } from './outputs.js';

const $ = (id) => document.getElementById(id);

// ---- language ---------------------------------------------------------------
let lang = pickLanguage(localStorage.getItem('huashen.lang'), navigator.language);
const t = (k, ...args) => {
  const v = STRINGS[lang][k];
  return typeof v === 'function' ? v(...args) : v;
};
// Texts made from data (a file name, an avatar's name): element id → a
// function that writes it in the current language.
const dynamic = new Map();
function say(id, render) {
  if (render) dynamic.set(id, render);
  else dynamic.delete(id);
  $(id).textContent = render ? render() : '';
}

function applyLanguage() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t('title');
  for (const el of document.querySelectorAll('[data-i18n]')) {
    if (!dynamic.has(el.id)) el.textContent = t(el.dataset.i18n);
  }
  for (const [id, render] of dynamic) $(id).textContent = render();
  $('lang').textContent = t('langSwitch');
  $('lang').lang = lang === 'zh' ? 'en' : 'zh-CN';
  renderAvatars();
  renderState();
  outputs.render();
}
$('lang').addEventListener('click', () => {
  lang = lang === 'zh' ? 'en' : 'zh';
  localStorage.setItem('huashen.lang', lang);
  applyLanguage();
});

// What the page shows, for tests and for anyone curious in the devtools.
const ui = window.huashenConsole = {
  signedIn: false, avatars: [], voices: [], enroll: { stage: null, stages: [], error: null }, mic: 'off',
  session: null, player: { state: 'none', stats: {}, ttffMs: null, error: null },
  subtitles: '', spoken: [], errors: [], events: 0,
};
function showError(id, text) {
  $(id).textContent = text || '';
  if (text) ui.errors.push({ where: id, text });
}
const outputs = createOutputs({ getApi: () => api, ui, t, $, showError });

// ---- sign in ----------------------------------------------------------------
let api = null;
let apiKey = '';

async function signIn(key) {
  showError('signin-error', '');
  const candidate = connect(key);
  try {
    const [list, voices] = await Promise.all([
      candidate.avatars.listAvatars({ page: { pageSize: 100 } }),
      candidate.sessions.listVoices({}),
    ]);
    api = candidate;
    apiKey = key;
    sessionStorage.setItem('huashen.key', key);
    ui.signedIn = true;
    $('signin').hidden = true;
    $('app').hidden = false;
    setAvatars(list.avatars);
    setVoices(voices.voices);
    outputs.refreshRecordings().catch((e) => showError('recording-error', describeError(e)));
  } catch (e) {
    showError('signin-error', `${t('keyRejected')} — ${describeError(e)}`);
  }
}

$('signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn($('key').value.trim());
});

// The link `huashen serve` prints to its terminal carries the development
// key in its fragment (`/#key=…`, never sent to any server): it is filled in,
// and taken out of the address bar and the history.
async function prefillKey() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get('key');
  if (fromLink) {
    history.replaceState(null, '', location.pathname + location.search);
    $('key').value = fromLink;
    say('key-hint', () => t('keyPrefilled'));
    return;
  }
  const saved = sessionStorage.getItem('huashen.key');
  if (saved) $('key').value = saved;
}

// ---- avatars ----------------------------------------------------------------
function setAvatars(list) {
  ui.avatars = list.map((a) => ({
    id: a.avatarId, name: a.displayName, faces: a.face ? a.face.facesFound : 0,
    created: a.createdAt ? timestampDate(a.createdAt) : null,
  }));
  renderAvatars();
}

async function refreshAvatars() {
  const list = await api.avatars.listAvatars({ page: { pageSize: 100 } });
  setAvatars(list.avatars);
}

function renderAvatars() {
  const ul = $('avatar-list');
  ul.replaceChildren();
  if (ui.avatars.length === 0) {
    const li = document.createElement('li');
    li.textContent = t('noAvatars');
    ul.append(li);
  }
  const select = $('avatar-select');
  const chosen = select.value;
  select.replaceChildren();
  for (const a of ui.avatars) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = a.name;
    const info = document.createElement('small');
    info.textContent = `${t('faces', a.faces)} · ${a.created ? a.created.toLocaleString() : ''}`;
    const use = document.createElement('button');
    use.type = 'button';
    use.className = 'quiet';
    use.textContent = t('use');
    use.setAttribute('aria-label', `${t('use')}: ${a.name}`);
    use.addEventListener('click', () => { select.value = a.id; select.focus(); });
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'danger';
    del.textContent = t('del');
    del.setAttribute('aria-label', `${t('del')}: ${a.name}`);
    del.addEventListener('click', () => deleteAvatar(a));
    li.append(name, info, use, del);
    ul.append(li);
    const opt = document.createElement('option');
    opt.value = a.id;
    opt.textContent = a.name;
    select.append(opt);
  }
  if (ui.avatars.some((a) => a.id === chosen)) select.value = chosen;
}

async function deleteAvatar(a) {
  if (!confirm(t('confirmDelete', a.name))) return;
  try {
    await api.avatars.deleteAvatar({ avatarId: a.id });
    await refreshAvatars();
  } catch (e) {
    showError('enroll-error', describeError(e));
  }
}

// The portrait: dropped on the box, or chosen with the file dialog (Enter
// or Space on the box opens it).
let file = null;
function chooseFile(f) {
  if (!f) return;
  file = f;
  showError('enroll-error', '');
  say('drop-text', () => t('chosen', f.name, Math.ceil(f.size / 1024)));
  const img = $('preview');
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(f);
  img.hidden = false;
  if (!$('display-name').value) $('display-name').value = f.name.replace(/\.[^.]+$/, '');
}
const drop = $('drop');
drop.addEventListener('click', () => $('file').click());
drop.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); $('file').click(); }
});
drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  chooseFile(ev.dataTransfer.files[0]);
});
$('file').addEventListener('change', () => chooseFile($('file').files[0]));
$('minor').addEventListener('change', () => { $('guardian-row').hidden = !$('minor').checked; });

// The declared format comes from the file's first bytes; the server checks
// them again.
function sniff(bytes) {
  const b = (i) => bytes[i];
  if (b(0) === 0xff && b(1) === 0xd8 && b(2) === 0xff) return ImageFormat.JPEG;
  if (b(0) === 0x89 && b(1) === 0x50 && b(2) === 0x4e && b(3) === 0x47) return ImageFormat.PNG;
  const ascii = (from, to) => String.fromCharCode(...bytes.slice(from, to));
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return ImageFormat.WEBP;
  return null;
}

const STAGE_PERCENT = { RECEIVING: 20, VALIDATING: 40, DETECTING: 60, STORING: 85, DONE: 100 };
function showStage(stage, fraction) {
  const name = EnrollStage[stage];
  ui.enroll.stage = name;
  ui.enroll.stages.push(name);
  let pct = STAGE_PERCENT[name] ?? 0;
  if (name === 'RECEIVING' && fraction > 0) pct = Math.round(20 * fraction);
  $('enroll-progress').value = pct;
  say('enroll-stage', () => t('stage')[name] || '');
}

$('enroll').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError('enroll-error', '');
  ui.enroll = { stage: null, stages: [], error: null, avatar: null };
  if (!file) return showError('enroll-error', t('noFile'));
  const bytes = new Uint8Array(await file.arrayBuffer());
  const format = sniff(bytes);
  if (format === null) return showError('enroll-error', t('badType', file.type));
  const minor = $('minor').checked;
  // Consent goes to the server exactly as entered: the server decides
  // whether it is complete and says what is missing.
  const start = {
    displayName: $('display-name').value.trim(),
    imageFormat: format,
    totalBytes: BigInt(bytes.length),
    inlineImage: bytes,
    consent: {
      uploader: $('uploader').value.trim(),
      subjectName: $('subject').value.trim(),
      subjectConsented: $('consented').checked,
      subjectIsMinor: minor,
      guardianName: minor ? $('guardian').value.trim() : '',
      purpose: $('purpose').value.trim(),
      policyVersion: $('policy').value.trim(),
    },
  };
  const button = $('enroll-button');
  button.disabled = true;
  showStage(EnrollStage.RECEIVING, 0);
  try {
    let avatar = null;
    for await (const msg of api.avatars.enrollAvatar({ payload: { case: 'start', value: start } })) {
      if (msg.event.case === 'progress') showStage(msg.event.value.stage, msg.event.value.fraction);
      if (msg.event.case === 'avatar') avatar = msg.event.value;
    }
    if (!avatar) throw new Error('the server ended the upload without an avatar');
    showStage(EnrollStage.DONE, 1);
    const faces = avatar.face ? avatar.face.facesFound : 1;
    say('enroll-stage', () => t('enrolledOk', avatar.displayName, faces));
    ui.enroll.avatar = avatar.avatarId;
    await refreshAvatars();
    $('avatar-select').value = avatar.avatarId;
  } catch (e) {
    $('enroll-progress').value = 0;
    say('enroll-stage', null);
    ui.enroll.error = describeError(e);
    showError('enroll-error', `${t('enrollFailed')} — ${ui.enroll.error}`);
  } finally {
    button.disabled = false;
  }
});

// ---- voices and sessions -----------------------------------------------------
function setVoices(voices) {
  ui.voices = voices.map((v) => ({ id: v.voiceId, language: v.language, name: v.displayName }));
  const select = $('voice-select');
  select.replaceChildren();
  for (const v of ui.voices) {
    const opt = document.createElement('option');
    opt.value = v.id;
    opt.dataset.language = v.language;
    opt.textContent = `${v.name} (${v.language})`;
    select.append(opt);
  }
  const preferred = ui.voices.find((v) => v.language.toLowerCase().startsWith(lang));
  if (preferred) select.value = preferred.id;
}

let live = null; // { id, token, abort, pc, resource }

$('create').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError('session-error', '');
  const avatarId = $('avatar-select').value;
  if (!avatarId) return showError('session-error', t('needAvatar'));
  const [width, height] = $('size-select').value.split('x').map(Number);
  const voiceOpt = $('voice-select').selectedOptions[0];
  $('create-button').disabled = true;
  try {
    if (live) await closeSession();
    const s = await api.sessions.createSession({
      avatarId,
      voice: voiceOpt ? { language: voiceOpt.dataset.language, voiceId: voiceOpt.value } : undefined,
      output: { width, height },
    });
    startLive(s);
  } catch (e) {
    showError('session-error', `${t('createFailed')} — ${describeError(e)}`);
  } finally {
    $('create-button').disabled = false;
  }
});

function startLive(s) {
  live = { id: s.sessionId, token: s.viewerToken, whep: s.whepPath, abort: new AbortController(),
    pc: null, resource: null };
  ui.session = { id: s.sessionId, state: SessionState[s.state], closeReason: null, viewers: 0 };
  ui.subtitles = '';
  ui.spoken = [];
  $('live').hidden = false;
  $('session-id').textContent = s.sessionId;
  $('subtitles').textContent = '';
  $('events').replaceChildren();
  const link = new URL(`/viewer.html?session=${encodeURIComponent(s.sessionId)}#token=${encodeURIComponent(s.viewerToken)}`, location.href);
  $('viewer-link').value = link.toString();
  $('open-link').href = link.toString();
  const [w, h] = [s.output?.width || 512, s.output?.height || 512];
  document.querySelector('.player').style.aspectRatio = `${w} / ${h}`;
  renderState();
  outputs.start(s.sessionId);
  watch(live);
  play(live);
  $('text').focus();
}

async function closeSession() {
  const l = live;
  if (!l) return;
  try {
    // The answer is the closed session (its watch stream may lag behind).
    const closed = await api.sessions.closeSession({ sessionId: l.id });
    if (ui.session && ui.session.id === closed.sessionId) {
      ui.session.state = SessionState[closed.state];
      ui.session.closeReason = closed.closeReason;
      renderState();
    }
  } catch (e) {
    if (ConnectError.from(e).code !== Code.NotFound) showError('session-error', describeError(e));
  }
  stopLive(l);
}

// Leaves the session's WHEP connection (the session goes on).
function hangUp(l) {
  if (l.pc) { l.pc.onconnectionstatechange = null; l.pc.close(); }
  whepHangUp(l.resource, l.token);
  l.pc = null;
  l.resource = null;
  ui.player.state = 'closed';
}

// Stops watching and playing the session (and publishing to it).
function stopLive(l) {
  l.abort.abort();
  hangUp(l);
  stopMic();
  outputs.stop();
}
$('close-button').addEventListener('click', closeSession);

function renderState() {
  const s = ui.session;
  if (!s) return;
  let text = t('states')[s.state] || s.state || '–';
  const closed = s.state === 'CLOSED';
  if (closed) text = t('ended', t('reasons')[CloseReason[s.closeReason]] || t('reasons').UNSPECIFIED);
  $('session-state').textContent = text;
  $('player-message').textContent = closed ? text : '';
  $('player-message').hidden = !closed;
  if (closed) $('subtitles').textContent = '';
  for (const id of ['speak-button', 'interrupt-button', 'close-button', 'text', 'mic-button']) $(id).disabled = closed;
}

function logEvent(text) {
  const li = document.createElement('li');
  li.textContent = text;
  const ol = $('events');
  ol.append(li);
  while (ol.children.length > 200) ol.firstChild.remove();
}

// WatchSession: state, speech, words (the subtitles), viewers, errors.
async function watch(l) {
  let clearTimer = null;
  for (let attempt = 0; !l.abort.signal.aborted; attempt++) {
    try {
      for await (const ev of api.sessions.watchSession({ sessionId: l.id }, { signal: l.abort.signal })) {
        attempt = 0;
        ui.events++;
        const { case: kind, value } = ev.event;
        logEvent(`${ev.seq} ${kind}${value && value.text ? `: ${value.text}` : value && value.word ? `: ${value.word}` : ''}`);
        switch (kind) {
          case 'stateChanged':
            ui.session.state = SessionState[value.current];
            renderState();
            if (ui.session.state === 'IDLE') {
              clearTimeout(clearTimer);
              clearTimer = setTimeout(() => { $('subtitles').textContent = ''; }, 1500);
            }
            break;
          case 'speechStarted':
            clearTimeout(clearTimer);
            ui.subtitles = '';
            ui.spoken.push(value.text);
            $('subtitles').textContent = '';
            break;
          case 'word': {
            clearTimeout(clearTimer);
            const cjk = /[\u3000-\u9fff]/.test(value.word);
            const join = ui.subtitles && !cjk && !/[\u3000-\u9fff]$/.test(ui.subtitles) ? ' ' : '';
            ui.subtitles += join + value.word;
            // Keep the last line's worth on screen.
            $('subtitles').textContent = ui.subtitles.length > 90 ? `…${ui.subtitles.slice(-88)}` : ui.subtitles;
            break;
          }
          case 'speechFinished':
            clearTimer = setTimeout(() => { $('subtitles').textContent = ''; }, value.interrupted ? 0 : 1500);
            break;
          case 'viewerJoined':
          case 'viewerLeft':
            ui.session.viewers = value.viewerCount;
            $('st-viewers').textContent = String(value.viewerCount);
            break;
          case 'error':
            showError('speak-error', `${t('speakFailed')} — ${value.code}: ${value.message}`);
            break;
          case 'outputChanged':
            outputs.onEvent(value);
            break;
          case 'closed':
            ui.session.state = 'CLOSED';
            ui.session.closeReason = value.reason;
            renderState();
            stopLive(l);
            return;
          default:
            break;
        }
      }
      return;
    } catch (e) {
      if (l.abort.signal.aborted) return;
      const err = ConnectError.from(e);
      if (err.code === Code.NotFound || attempt >= 5) {
        showError('session-error', describeError(e));
        return;
      }
      await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
    }
  }
}

// ---- player: the session by WHEP with its viewer token -------------------
async function play(l) {
  const video = $('video');
  const started = performance.now();
  ui.player = { state: 'connecting', stats: {}, ttffMs: null, error: null };
  const firstFrame = () => {
    if (ui.player.ttffMs === null) {
      ui.player.ttffMs = Math.round(performance.now() - started);
      $('st-ttff').textContent = `${ui.player.ttffMs} ms`;
    }
  };
  try {
    const r = await whepConnect(new URL(l.whep, location.href).toString(), l.token, (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      if (video.srcObject !== stream) video.srcObject = stream;
    });
    if (l.abort.signal.aborted) { r.pc.close(); whepHangUp(r.resource, l.token); return; }
    l.pc = r.pc;
    l.resource = r.resource;
    l.pc.onconnectionstatechange = () => {
      ui.player.state = l.pc ? l.pc.connectionState : 'closed';
      // Network loss: connect again (a closed session ends the watch
      // stream instead, which stops everything).
      if (ui.player.state === 'failed' && !l.abort.signal.aborted) {
        hangUp(l);
        setTimeout(() => { if (!l.abort.signal.aborted) play(l); }, 1000);
      }
    };
    l.firstFrame = firstFrame;
    if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(firstFrame);
    pollStats(l);
  } catch (e) {
    ui.player.state = 'failed';
    ui.player.error = e.message;
    showError('session-error', `${t('playerError')} — ${e.message}`);
  }
}

$('unmute').addEventListener('click', () => {
  const video = $('video');
  video.muted = false;
  video.play().catch(() => {});
  $('unmute').hidden = true;
});

async function pollStats(l) {
  let last = null;
  const pc = l.pc;
  while (l.pc === pc && pc && !l.abort.signal.aborted) {
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return; // closed meanwhile
    }
    const s = { at: performance.now(), framesDecoded: 0, audioPackets: 0, bytes: 0 };
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      s.bytes += r.bytesReceived || 0;
      if (r.kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.framesPerSecond = r.framesPerSecond || 0;
        s.frameWidth = r.frameWidth || 0;
        s.frameHeight = r.frameHeight || 0;
        s.videoPlayout = r.estimatedPlayoutTimestamp;
        s.videoDelay = r.jitterBufferEmittedCount ? r.jitterBufferDelay / r.jitterBufferEmittedCount : null;
      } else if (r.kind === 'audio') {
        s.audioPackets = r.packetsReceived || 0;
        s.audioBytes = r.bytesReceived || 0;
        s.audioSamples = r.totalSamplesReceived || 0;
        s.audioEnergy = r.totalAudioEnergy || 0;
        s.audioPlayout = r.estimatedPlayoutTimestamp;
        s.audioDelay = r.jitterBufferEmittedCount ? r.jitterBufferDelay / r.jitterBufferEmittedCount : null;
      }
    });
    if (last) {
      const dt = (s.at - last.at) / 1000;
      s.kbps = dt > 0 ? Math.round(((s.bytes - last.bytes) * 8) / dt / 1000) : 0;
    }
    // A/V offset: how far apart the two tracks play out. Chromium reports the
    // estimated playout time of each track's latest sample (NTP ms, from the
    // sender reports); without it, the difference of their jitter-buffer
    // delays.
    if (s.videoPlayout && s.audioPlayout) s.avOffsetMs = Math.round(s.videoPlayout - s.audioPlayout);
    else if (s.videoDelay !== null && s.audioDelay !== null && s.videoDelay !== undefined && s.audioDelay !== undefined) {
      s.avOffsetMs = Math.round((s.videoDelay - s.audioDelay) * 1000);
    }
    // Normally set by the first video frame callback; this is the fallback.
    if (s.framesDecoded > 0 && ui.player.ttffMs === null) l.firstFrame();
    last = s;
    ui.player.stats = s;
    $('st-fps').textContent = (s.framesPerSecond ?? 0).toFixed(0);
    $('st-bitrate').textContent = s.kbps !== undefined ? `${s.kbps} kbit/s` : '–';
    $('st-av').textContent = s.avOffsetMs !== undefined ? `${s.avOffsetMs} ms` : '–';
    $('st-frames').textContent = String(s.framesDecoded);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- speaking ------------------------------------------------------------
// Speak calls go out one after another so the presenter says them in the
// order typed.
let speakChain = Promise.resolve();
function send(text) {
  const l = live;
  if (!l || !text) return;
  for (const piece of pieces(text)) {
    speakChain = speakChain.then(async () => {
      try {
        await api.sessions.speak({ sessionId: l.id, text: piece, flush: true });
      } catch (e) {
        showError('speak-error', `${t('speakFailed')} — ${describeError(e)}`);
      }
    });
  }
}

const box = $('text');
box.addEventListener('input', () => {
  const { ready, rest } = takeFinished(box.value);
  if (!ready) return;
  showError('speak-error', '');
  send(ready);
  box.value = rest;
});
box.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('speak').requestSubmit();
  } else if (ev.key === 'Escape') {
    ev.preventDefault();
    interrupt();
  }
});
$('speak').addEventListener('submit', (ev) => {
  ev.preventDefault();
  showError('speak-error', '');
  send(box.value.trim());
  box.value = '';
  box.focus();
});

async function interrupt() {
  if (!live) return;
  try {
    await api.sessions.interrupt({ sessionId: live.id });
    $('subtitles').textContent = '';
  } catch (e) {
    showError('speak-error', describeError(e));
  }
}
$('interrupt-button').addEventListener('click', interrupt);

// ---- the host's microphone, published by WHIP --------------------------
let mic = null; // { stream, pc, resource }

function renderMic() {
  const on = mic !== null;
  $('mic-button').setAttribute('aria-pressed', String(on));
  say('mic-button', () => t(on ? 'micStop' : 'mic'));
  say('mic-status', on ? () => t('micLive') : null);
  ui.mic = on ? 'live' : 'off';
}

function stopMic() {
  if (!mic) return;
  const m = mic;
  mic = null;
  for (const track of m.stream.getTracks()) track.stop();
  m.pc.onconnectionstatechange = null;
  m.pc.close();
  whepHangUp(m.resource, apiKey);
  renderMic();
}

async function startMic() {
  const l = live;
  if (!l) return;
  showError('speak-error', '');
  $('mic-button').disabled = true;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    try {
      const endpoint = new URL(`/whip/sessions/${encodeURIComponent(l.id)}`, location.href).toString();
      const r = await whipPublish(endpoint, apiKey, stream.getAudioTracks()[0]);
      mic = { stream, pc: r.pc, resource: r.resource };
      r.pc.onconnectionstatechange = () => {
        if (['failed', 'closed'].includes(r.pc.connectionState)) stopMic();
      };
      pollMic(mic);
    } catch (e) {
      for (const track of stream.getTracks()) track.stop();
      throw e;
    }
  } catch (e) {
    showError('speak-error', `${t('micFailed')} — ${e.message}`);
  } finally {
    $('mic-button').disabled = false;
    renderMic();
  }
}
// What the microphone sends: its level (0..1) and bytes, from getStats.
async function pollMic(m) {
  while (mic === m) {
    try {
      const report = await m.pc.getStats();
      const s = {};
      report.forEach((r) => {
        if (r.type === 'media-source' && r.kind === 'audio') {
          s.level = r.audioLevel || 0;
          s.energy = r.totalAudioEnergy || 0;
        } else if (r.type === 'outbound-rtp') {
          s.bytesSent = r.bytesSent || 0;
        }
      });
      ui.micStats = s;
      $('mic-status').textContent = `${t('micLive')} ${'▮'.repeat(Math.round((s.level || 0) * 10)).padEnd(10, '▯')}`;
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

$('mic-button').addEventListener('click', () => (mic ? stopMic() : startMic()));

$('copy-link').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText($('viewer-link').value);
    $('copy-link').textContent = t('copied');
  } catch {
    $('viewer-link').select();
  }
});

window.addEventListener('pagehide', () => {
  if (live) whepHangUp(live.resource, live.token);
  if (mic) whepHangUp(mic.resource, apiKey);
});

applyLanguage();
prefillKey().then(() => {
  if (sessionStorage.getItem('huashen.key')) signIn(sessionStorage.getItem('huashen.key'));
  else $('key').focus();
});
