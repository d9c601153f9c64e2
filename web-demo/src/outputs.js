// The Outputs panel of the live session (recording it), and the list of
// recordings kept (play in the page, download). Everything goes through the
// public API: OutputService and RecordingService; a recording plays from
// the short-lived download path GetRecording gives (range requests, so the
// player can seek).

import { timestampDate } from '@bufbuild/protobuf/wkt';
import { OutputState } from './gen/huashen/v1/output_pb.js';
import { describeError } from './api.js';

const ENDED = new Set(['STOPPED', 'FAILED']);

export function createOutputs({ getApi, ui, t, $, showError }) {
  ui.outputs = [];
  ui.recordings = [];
  let sessionId = null;

  const running = () => ui.outputs.find((o) => o.kind === 'recording' && !ENDED.has(o.state));

  function fromProto(o) {
    return { id: o.outputId, kind: o.kind.case, state: OutputState[o.state], reason: o.reason,
      bytes: Number(o.bytes), recordingId: o.recordingId, bitrate: Number(o.bitrateBps),
      reconnects: Number(o.reconnects), dropped: Number(o.droppedFrames),
      url: o.kind.case === 'whip' || o.kind.case === 'rtmp' ? o.kind.value.url : '' };
  }

  function upsert(o) {
    const i = ui.outputs.findIndex((x) => x.id === o.id);
    if (i < 0) {
      ui.outputs.push(o);
      return;
    }
    const was = ui.outputs[i];
    // An ended output stays ended, whatever arrives late.
    const keep = ENDED.has(was.state) && o.state && !ENDED.has(o.state);
    ui.outputs[i] = keep ? { ...was, ...o, state: was.state, reason: was.reason } : { ...was, ...o };
  }

  // An output as a call answered it. Its events may have overtaken the
  // answer (LIVE before AddOutput's STARTING): a state already known is
  // newer and stays.
  function answered(o) {
    const known = ui.outputs.find((x) => x.id === o.outputId);
    const fresh = fromProto(o);
    upsert(known && known.state ? { ...fresh, state: known.state, reason: known.reason } : fresh);
  }

  function render() {
    const ul = $('output-list');
    ul.replaceChildren();
    for (const o of ui.outputs) {
      const li = document.createElement('li');
      li.dataset.state = o.state;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = t('outputKinds')[o.kind] || o.kind;
      if (o.url) name.textContent += ` → ${o.url}`;
      const state = document.createElement('b');
      state.className = 'state';
      state.textContent = t('outputStates')[o.state] || o.state;
      li.append(name, state);
      if (!ENDED.has(o.state) && o.bitrate !== undefined) {
        const figures = document.createElement('small');
        figures.className = 'figures';
        figures.textContent = t('outputFigures', o.bitrate, o.reconnects, o.dropped);
        li.append(figures);
      }
      if (o.reason) {
        const why = document.createElement('small');
        why.className = 'reason';
        why.textContent = o.reason;
        li.append(why);
      }
      if (!ENDED.has(o.state)) {
        const stop = document.createElement('button');
        stop.type = 'button';
        stop.className = 'quiet';
        stop.textContent = t('stop');
        stop.addEventListener('click', () => removeOutput(o));
        li.append(stop);
      }
      ul.append(li);
    }
    const button = $('record-button');
    const on = Boolean(running());
    button.textContent = on ? t('stopRecording') : t('record');
    button.setAttribute('aria-pressed', String(on));
    button.disabled = !sessionId;
    $('whip-add').disabled = !sessionId;
    $('rtmp-add').disabled = !sessionId;
  }

  async function refreshOutputs() {
    if (!sessionId) return;
    const list = await getApi().outputs.listOutputs({ sessionId });
    ui.outputs = list.outputs.map(fromProto);
    render();
  }

  // Each running output's bitrate, reconnects and dropped frames, fresh
  // every two seconds while one runs.
  setInterval(() => {
    if (sessionId && getApi() && ui.outputs.some((o) => !ENDED.has(o.state))) {
      refreshOutputs().catch(() => {});
    }
  }, 2000);

  async function removeOutput(o) {
    showError('output-error', '');
    try {
      upsert(fromProto(await getApi().outputs.removeOutput({ outputId: o.id })));
      if (o.kind === 'recording') await refreshRecordings();
    } catch (e) {
      showError('output-error', describeError(e));
    }
    render();
  }

  // An RTMP destination: the key goes to the server only (never shown).
  $('rtmp-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError('output-error', '');
    const url = $('rtmp-url').value.trim();
    const streamKey = $('rtmp-key').value;
    try {
      answered(await getApi().outputs.addOutput({ sessionId, kind: { case: 'rtmp', value: { url, streamKey } } }));
      $('rtmp-key').value = '';
    } catch (e) {
      showError('output-error', describeError(e));
    }
    render();
  });

  // A WHIP destination: the token goes to the server only (never shown).
  $('whip-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError('output-error', '');
    const url = $('whip-url').value.trim();
    const bearerToken = $('whip-token').value;
    try {
      answered(await getApi().outputs.addOutput({ sessionId, kind: { case: 'whip', value: { url, bearerToken } } }));
      $('whip-token').value = '';
    } catch (e) {
      showError('output-error', describeError(e));
    }
    render();
  });

  async function toggleRecording() {
    showError('output-error', '');
    const api = getApi();
    const on = running();
    try {
      if (on) {
        upsert(fromProto(await api.outputs.removeOutput({ outputId: on.id })));
        await refreshRecordings();
      } else {
        answered(await api.outputs.addOutput({ sessionId, kind: { case: 'recording', value: {} } }));
      }
    } catch (e) {
      showError('output-error', describeError(e));
    }
    render();
  }
  $('record-button').addEventListener('click', toggleRecording);

  // An `outputChanged` event of the watched session.
  function onEvent(value) {
    upsert({ id: value.outputId, state: OutputState[value.state], reason: value.reason });
    const o = ui.outputs.find((x) => x.id === value.outputId);
    if (o && !o.kind) refreshOutputs().catch(() => {});
    if (ENDED.has(OutputState[value.state])) refreshRecordings().catch(() => {});
    render();
  }

  async function refreshRecordings() {
    const api = getApi();
    if (!api) return;
    const list = await api.recordings.listRecordings({ page: { pageSize: 50 } });
    ui.recordings = list.recordings.map((r) => ({
      id: r.recordingId, started: r.startedAt ? timestampDate(r.startedAt) : null,
      ended: Boolean(r.endedAt), seconds: Number(r.durationMs) / 1000, bytes: Number(r.bytes),
    }));
    renderRecordings();
  }

  async function link(r) {
    const full = await getApi().recordings.getRecording({ recordingId: r.id });
    return new URL(full.downloadPath, location.href).toString();
  }

  async function play(r) {
    showError('recording-error', '');
    try {
      const player = $('recording-player');
      player.src = await link(r);
      player.hidden = false;
      ui.playing = r.id;
      await player.play().catch(() => {});
    } catch (e) {
      showError('recording-error', describeError(e));
    }
  }

  async function download(r) {
    showError('recording-error', '');
    try {
      const a = document.createElement('a');
      a.href = await link(r);
      a.download = `${r.id}.mp4`;
      document.body.append(a);
      a.click();
      a.remove();
    } catch (e) {
      showError('recording-error', describeError(e));
    }
  }

  function renderRecordings() {
    const ul = $('recording-list');
    ul.replaceChildren();
    if (ui.recordings.length === 0) {
      const li = document.createElement('li');
      li.textContent = t('noRecordings');
      ul.append(li);
    }
    for (const r of ui.recordings) {
      const li = document.createElement('li');
      li.dataset.recording = r.id;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = r.started ? r.started.toLocaleString() : r.id;
      const info = document.createElement('small');
      info.textContent = r.ended
        ? t('recordingInfo', r.seconds, r.bytes)
        : t('recordingNow', r.seconds);
      const playButton = document.createElement('button');
      playButton.type = 'button';
      playButton.className = 'quiet play';
      playButton.textContent = t('play');
      playButton.addEventListener('click', () => play(r));
      const get = document.createElement('button');
      get.type = 'button';
      get.className = 'quiet';
      get.textContent = t('download');
      get.addEventListener('click', () => download(r));
      li.append(name, info, playButton, get);
      ul.append(li);
    }
  }

  return {
    // A new live session: its outputs start empty.
    start(id) {
      sessionId = id;
      ui.outputs = [];
      render();
    },
    // The session ended: its outputs ended with it.
    stop() {
      sessionId = null;
      render();
      setTimeout(() => refreshRecordings().catch(() => {}), 1500);
    },
    onEvent,
    refreshRecordings,
    render() {
      render();
      renderRecordings();
    },
  };
}
