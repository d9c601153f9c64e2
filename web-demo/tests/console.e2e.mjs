// The studio console walked as a user would, in Debian's Chromium driven by
// Playwright: sign in (wrong key first), enroll by drag-and-drop with
// consent (missing consent, a photo without a face and an oversize file
// first), start a session, type, watch the embedded player decode video and
// audio, read the subtitles, interrupt, open the viewer link, close, delete.
//
// Run by server/tests/it/console.rs against a real server, with:
//   HUASHEN_URL      the server's base URL (http://127.0.0.1:PORT)
//   HUASHEN_DEV_KEY  the key the console should pre-fill
//   PORTRAIT, NO_FACE, OVERSIZE  image files
//   MICROPHONE_WAV   speech Chromium plays as its microphone (absolute path)
//   MOUTH_BOX        x0,y0,x1,y1 of the avatar's mouth in a 512×512 picture
//   ARTIFACTS        directory for screenshots
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
// Prints one JSON line of findings; exits non-zero with the reason on failure.

import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { join, basename } from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env('HUASHEN_URL');
const devKey = env('HUASHEN_DEV_KEY');
const artifacts = env('ARTIFACTS');
mkdirSync(artifacts, { recursive: true });
const found = {};
const step = (name) => console.error(`console e2e: ${name}`);

function check(ok, what) {
  if (!ok) throw new Error(what);
}

// Waits until `fn` (run in the page) returns a truthy value; returns it.
async function until(page, what, fn, arg, timeout = 30000) {
  try {
    const h = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    return await h.jsonValue();
  } catch (e) {
    const ui = await page.evaluate(() => JSON.stringify(window.huashenConsole || window.huashenViewer || null,
      (k, v) => (typeof v === 'bigint' ? String(v) : v)));
    throw new Error(`${what}: not within ${timeout} ms (${e.message.split('\n')[0]}); page state: ${ui}`);
  }
}

// Drops a file on the drop zone the way a desktop drag does: a DataTransfer
// carrying the File, in dragenter/dragover/drop events.
// Samples the viewer page's video: per frame, the mean luma of the mouth
// box and the share of its pixels darker than luma 60 (an open mouth).
async function watchMouth(viewerPage, box, ms) {
  return viewerPage.evaluate(async ({ box, ms }) => {
    const video = document.getElementById('video');
    const [x0, y0, x1, y1] = box;
    const [w, h] = [x1 - x0, y1 - y0];
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const out = [];
    const end = performance.now() + ms;
    while (performance.now() < end) {
      await new Promise((resolve) => (video.requestVideoFrameCallback
        ? video.requestVideoFrameCallback(() => resolve())
        : setTimeout(resolve, 40)));
      const [sx, sy] = [video.videoWidth / 512, video.videoHeight / 512];
      ctx.drawImage(video, x0 * sx, y0 * sy, w * sx, h * sy, 0, 0, w, h);
      const d = ctx.getImageData(0, 0, w, h).data;
      let sum = 0;
      let dark = 0;
      for (let i = 0; i < d.length; i += 4) {
        const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
        sum += y;
        if (y < 60) dark += 1;
      }
      out.push([sum / (w * h), dark / (w * h)]);
    }
    return out;
  }, { box, ms });
}

function mouthStats(samples) {
  const n = Math.max(samples.length, 1);
  const mean = samples.reduce((a, s) => a + s[0], 0) / n;
  const sd = Math.sqrt(samples.reduce((a, s) => a + (s[0] - mean) ** 2, 0) / n);
  const darkMax = samples.reduce((m, s) => Math.max(m, s[1]), 0);
  const darkMin = samples.reduce((m, s) => Math.min(m, s[1]), 1);
  return {
    frames: samples.length,
    sd: Math.round(sd * 100) / 100,
    darkMax: Math.round(darkMax * 1000) / 1000,
    darkRange: Math.round((darkMax - darkMin) * 1000) / 1000,
  };
}

async function dropFile(page, selector, path, type) {
  const bytes = [...readFileSync(path)];
  await page.evaluate(({ selector, bytes, name, type }) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], name, { type }));
    const el = document.querySelector(selector);
    for (const t of ['dragenter', 'dragover', 'drop']) {
      el.dispatchEvent(new DragEvent(t, { bubbles: true, cancelable: true, dataTransfer: dt }));
    }
  }, { selector, bytes, name: basename(path), type });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    // The "microphone" is a WAV file of speech, allowed without a prompt.
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${env('MICROPHONE_WAV')}`],
});
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, locale: 'en-US' });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('dialog', (d) => d.accept());

  step('open the console');
  // The link `huashen serve` prints carries the dev key in its fragment.
  await page.goto(`${base}/#key=${encodeURIComponent(devKey)}`);
  await page.waitForSelector('#signin-form');
  await until(page, 'the dev key is pre-filled', (k) => document.getElementById('key').value === k, devKey, 10000);
  check(!page.url().includes(devKey), `the key stays in the address bar: ${page.url()}`);
  // No page hands the key out (a reverse proxy on this machine would pass it on).
  found.devKeyRoute = await page.evaluate(async () => (await fetch('/console/dev-key')).status);
  check(found.devKeyRoute === 404, `/console/dev-key answered ${found.devKeyRoute}`);

  step('a wrong key is refused with the server\'s message');
  await page.fill('#key', 'hs_not_a_key');
  await page.click('#signin-form button[type=submit]');
  found.wrongKey = await until(page, 'wrong-key message', () => document.getElementById('signin-error').textContent);
  check(/UNAUTHENTICATED/.test(found.wrongKey), `wrong key message: ${found.wrongKey}`);

  step('sign in');
  await page.fill('#key', devKey);
  await page.press('#key', 'Enter');
  await until(page, 'signed in', () => window.huashenConsole.signedIn);
  check(await page.isVisible('#app'), 'the console is not shown after sign-in');

  step('enroll without consent: the server says what is missing');
  await dropFile(page, '#drop', env('PORTRAIT'), 'image/png');
  await until(page, 'the preview shows', () => !document.getElementById('preview').hidden);
  await page.fill('#display-name', 'Astronaut');
  await page.fill('#subject', 'Eileen Collins');
  await page.fill('#uploader', 'Studio operator');
  await page.fill('#purpose', 'Product livestreams of the demo shop');
  await page.click('#enroll-button');
  found.noConsent = await until(page, 'missing-consent message', () => document.getElementById('enroll-error').textContent);
  check(/FAILED_PRECONDITION/.test(found.noConsent) && /consent/i.test(found.noConsent), `no-consent message: ${found.noConsent}`);

  step('a photo without a face, chosen with the keyboard (Enter on the drop zone)');
  await page.check('#consented');
  const chooserShown = page.waitForEvent('filechooser', { timeout: 10000 });
  await page.press('#drop', 'Enter');
  const chooser = await chooserShown;
  await chooser.setFiles(env('NO_FACE'));
  await page.click('#enroll-button');
  found.noFace = await until(page, 'no-face message', () => document.getElementById('enroll-error').textContent, undefined, 60000);
  check(/INVALID_ARGUMENT/.test(found.noFace) && /no face/i.test(found.noFace), `no-face message: ${found.noFace}`);

  step('an oversize file');
  await page.setInputFiles('#file', env('OVERSIZE'));
  await page.click('#enroll-button');
  found.oversize = await until(page, 'oversize message', () => document.getElementById('enroll-error').textContent, undefined, 60000);
  check(/RESOURCE_EXHAUSTED/.test(found.oversize) && /limit/.test(found.oversize), `oversize message: ${found.oversize}`);

  step('enroll with consent: progress, then the avatar is listed');
  await dropFile(page, '#drop', env('PORTRAIT'), 'image/png');
  check(await page.textContent('#enroll-error') === '', 'a new file clears the old error');
  await page.click('#enroll-button');
  await until(page, 'enrolled', () => window.huashenConsole.enroll.avatar, undefined, 60000);
  found.stages = await page.evaluate(() => window.huashenConsole.enroll.stages);
  check(found.stages.includes('DETECTING') && found.stages.at(-1) === 'DONE', `progress stages: ${found.stages}`);
  check((await page.textContent('#avatar-list')).includes('Astronaut'), 'the new avatar is not listed');
  check(await page.evaluate(() => document.getElementById('enroll-progress').value) === 100, 'progress bar not full');

  step('start a session and watch it in the embedded player');
  await page.selectOption('#size-select', '640x360');
  await page.click('#create-button');
  await until(page, 'session idle', () => window.huashenConsole.session && window.huashenConsole.session.state === 'IDLE');
  const stats = await until(page, 'the player decodes video and audio', () => {
    const s = window.huashenConsole.player.stats;
    return s.framesDecoded >= 25 && s.audioPackets >= 25 && s;
  });
  check(stats.frameWidth === 640 && stats.frameHeight === 360, `frame size ${stats.frameWidth}x${stats.frameHeight}`);
  found.ttffMs = await page.evaluate(() => window.huashenConsole.player.ttffMs);
  check(found.ttffMs > 0, 'no time to first frame');

  // Opus spends few bytes on silence: the audio byte rate while idle is
  // the baseline that speech must clearly exceed.
  const audio = () => page.evaluate(() => ({ at: performance.now(), bytes: window.huashenConsole.player.stats.audioBytes }));
  const rate = (a, b) => ((b.bytes - a.bytes) * 8) / (b.at - a.at); // kbit/s
  await page.click('#unmute');
  const idle0 = await audio();
  await page.waitForTimeout(3000);
  const idleRate = rate(idle0, await audio());

  step('type a sentence: it is sent when finished, spoken, and subtitled');
  await page.click('#text');
  await page.keyboard.type('Good evening, everyone. Welcome to our live show about green tea. ', { delay: 15 });
  await until(page, 'speaking', () => window.huashenConsole.session.state === 'SPEAKING', undefined, 30000);
  const speech0 = await audio();
  found.subtitles = await until(page, 'subtitles', () => /welcome to our live/i.test(window.huashenConsole.subtitles) && window.huashenConsole.subtitles, undefined, 30000);
  const shown = await page.textContent('#subtitles');
  check(shown.length > 0, 'subtitles are not on screen');
  await page.screenshot({ path: join(artifacts, 'console.png') });
  await until(page, 'back to idle after speaking', () => window.huashenConsole.session.state === 'IDLE', undefined, 60000);
  const speechRate = rate(speech0, await audio());
  found.audioKbps = { idle: Math.round(idleRate * 10) / 10, speech: Math.round(speechRate * 10) / 10 };
  check(speechRate > 2 * idleRate, `no speech reached the player: audio ${JSON.stringify(found.audioKbps)} kbit/s`);
  found.avOffsetMs = await page.evaluate(() => window.huashenConsole.player.stats.avOffsetMs);

  step('Enter sends the rest; Interrupt returns to idle');
  await page.fill('#text', 'This is a much longer announcement that keeps going for a while, so there is time to cut it short before it ends');
  await page.press('#text', 'Enter');
  await until(page, 'speaking again', () => window.huashenConsole.session.state === 'SPEAKING', undefined, 30000);
  const cut = Date.now();
  await page.click('#interrupt-button');
  await until(page, 'idle after Interrupt', () => window.huashenConsole.session.state === 'IDLE', undefined, 5000);
  found.interruptMs = Date.now() - cut;

  step('the viewer link plays in a second page');
  const link = await page.inputValue('#viewer-link');
  check(!link.includes(devKey), 'the viewer link carries the API key');
  const viewer = await context.newPage();
  await viewer.goto(link);
  await until(viewer, 'the viewer plays', () => {
    const v = window.huashenViewer;
    return v && v.stats.framesDecoded >= 25 && v.stats.audioPackets >= 25;
  });
  await viewer.screenshot({ path: join(artifacts, 'viewer.png') });
  await until(page, 'the console counts two viewers', () => window.huashenConsole.session.viewers >= 2);

  step('the host\'s microphone (a WAV as fake capture) drives the session over WHIP');
  const mouthBox = env('MOUTH_BOX').split(',').map(Number);
  const viewerAudio = () => viewer.evaluate(() => ({ at: performance.now(), bytes: window.huashenViewer.stats.audioBytes }));
  await until(page, 'idle before the microphone', () => window.huashenConsole.session.state === 'IDLE');
  const quiet0 = await viewerAudio();
  const idleMouth = await watchMouth(viewer, mouthBox, 2000);
  const quietRate = rate(quiet0, await viewerAudio());
  await page.bringToFront();
  await page.click('#mic-button');
  await until(page, 'listening to the microphone', () => window.huashenConsole.session.state === 'LISTENING', undefined, 20000);
  check(await page.getAttribute('#mic-button', 'aria-pressed') === 'true', 'the microphone button is not pressed');
  const mic0 = await viewerAudio();
  // Five seconds: both sentences of the host's recording and the pause.
  const talkingMouth = await watchMouth(viewer, mouthBox, 5000);
  const micRate = rate(mic0, await viewerAudio());
  const idleStats = mouthStats(idleMouth);
  const talkStats = mouthStats(talkingMouth);
  found.mouth = { idle: idleStats, talking: talkStats };
  check(talkStats.frames >= 40 && idleStats.frames >= 20, `too few viewer frames sampled: ${JSON.stringify(found.mouth)}`);
  // Opening the mouth shows its dark interior: the dark share swings while
  // the host talks and holds still at rest.
  check(talkStats.darkRange > Math.max(3 * idleStats.darkRange, 0.02), `the avatar's mouth does not open in the viewer: ${JSON.stringify(found.mouth)}`);
  check(talkStats.sd > 1.5 * Math.max(idleStats.sd, 0.3), `the avatar's mouth does not move in the viewer: ${JSON.stringify(found.mouth)}`);
  found.micKbps = { quiet: Math.round(quietRate * 10) / 10, mic: Math.round(micRate * 10) / 10 };
  found.micStats = await page.evaluate(() => window.huashenConsole.micStats);
  check(micRate > 2 * quietRate, `the viewer does not hear the microphone: ${JSON.stringify(found.micKbps)} kbit/s; the page sends ${JSON.stringify(found.micStats)}`);
  await page.click('#mic-button');
  await until(page, 'idle after the microphone stops', () => window.huashenConsole.session.state === 'IDLE', undefined, 10000);

  step('record the session from the Outputs panel, then play the recording in the page');
  await page.click('#record-button');
  await until(page, 'the recording is live', () => (window.huashenConsole.outputs[0] || {}).state === 'LIVE', undefined, 10000);
  await page.waitForTimeout(3000);
  // The panel shows what the recording writes, refreshed as it runs.
  await until(page, 'the recording shows its bitrate', () => (window.huashenConsole.outputs[0] || {}).bitrate > 0, undefined, 6000);
  found.outputFigures = await page.textContent('#output-list li .figures');
  check(/Mbit\/s/.test(found.outputFigures), `output figures: ${found.outputFigures}`);
  await page.click('#record-button');
  await until(page, 'the recording is listed, ended', () => window.huashenConsole.recordings.some((r) => r.ended && r.seconds > 2), undefined, 10000);
  found.outputs = await page.evaluate(() => window.huashenConsole.outputs);
  check(found.outputs[0].state === 'STOPPED', `output after stopping: ${JSON.stringify(found.outputs)}`);
  await page.click('#recording-list li button.play');
  await until(page, 'the recording plays in the page', () => document.getElementById('recording-player').currentTime > 1, undefined, 15000);
  found.recordingPlayer = await page.evaluate(() => {
    const v = document.getElementById('recording-player');
    return { w: v.videoWidth, h: v.videoHeight, duration: v.duration };
  });
  check(found.recordingPlayer.w === 640 && found.recordingPlayer.h === 360 && found.recordingPlayer.duration > 2, `recording player: ${JSON.stringify(found.recordingPlayer)}`);
  await page.screenshot({ path: join(artifacts, 'console-recording.png'), fullPage: true });

  step('an RTMP server nobody answers: the panel shows it reconnecting, with the reason, never the key');
  await page.fill('#rtmp-url', 'rtmp://127.0.0.1:9/live');
  await page.fill('#rtmp-key', 'console-stream-key');
  await page.click('#rtmp-add');
  await until(page, 'the RTMP output reconnects', () => window.huashenConsole.outputs.some((o) => o.kind === 'rtmp' && o.state === 'RECONNECTING'), undefined, 15000);
  found.rtmp = await page.evaluate(() => window.huashenConsole.outputs.find((o) => o.kind === 'rtmp'));
  check(/refused/.test(found.rtmp.reason) && !JSON.stringify(found.rtmp).includes('console-stream-key'), `RTMP output: ${JSON.stringify(found.rtmp)}`);
  check(await page.inputValue('#rtmp-key') === '', 'the key stays in the form');
  await page.click('#output-list li:has-text("RTMP") button');
  await until(page, 'the RTMP output stops', () => window.huashenConsole.outputs.some((o) => o.kind === 'rtmp' && o.state === 'STOPPED'), undefined, 10000);

  step('a WHIP destination nobody answers: the panel shows it reconnecting, with the reason');
  await page.fill('#whip-url', 'http://127.0.0.1:9/whip');
  await page.fill('#whip-token', 'console-secret');
  await page.click('#whip-add');
  await until(page, 'the WHIP output reconnects', () => window.huashenConsole.outputs.some((o) => o.kind === 'whip' && o.state === 'RECONNECTING'), undefined, 15000);
  found.whip = await page.evaluate(() => window.huashenConsole.outputs.find((o) => o.kind === 'whip'));
  check(/refused/.test(found.whip.reason) && !JSON.stringify(found.whip).includes('console-secret'), `WHIP output: ${JSON.stringify(found.whip)}`);
  check(await page.inputValue('#whip-token') === '', 'the token stays in the form');
  await page.click('#output-list li:has-text("WHIP") button');
  await until(page, 'the WHIP output stops', () => window.huashenConsole.outputs.some((o) => o.kind === 'whip' && o.state === 'STOPPED'), undefined, 10000);

  step('close the session: the console and the viewer say it ended');
  await page.click('#close-button');
  await until(page, 'closed', () => window.huashenConsole.session.state === 'CLOSED');
  found.closedText = await page.textContent('#session-state');
  check(/closed by the studio/.test(found.closedText), `closed state: ${found.closedText}`);
  check(await page.isVisible('#player-message'), 'the player does not say the session ended');
  await until(viewer, 'the viewer says the session ended', () => window.huashenViewer.state === 'ended', undefined, 30000);
  found.viewerEnded = await viewer.evaluate(() => window.huashenViewer.error);

  step('Chinese interface');
  await page.click('#lang');
  found.zhHeading = await page.textContent('#avatars-h');
  check(found.zhHeading === '数字人形象', `zh heading: ${found.zhHeading}`);
  found.zhClosed = await page.textContent('#session-state');
  check(/由直播间结束/.test(found.zhClosed), `zh closed state: ${found.zhClosed}`);
  check(/拖入另一张可替换/.test(await page.textContent('#drop-text')), 'the chosen-file text stays English');
  await page.screenshot({ path: join(artifacts, 'console-zh.png') });
  await page.click('#lang');

  step('delete the avatar');
  await page.click('#avatar-list button.danger');
  await until(page, 'avatar deleted', () => window.huashenConsole.avatars.length === 0);

  check(consoleErrors.length === 0, `page errors: ${consoleErrors.join('; ')}`);
  console.log(JSON.stringify(found));
} finally {
  await browser.close();
}
