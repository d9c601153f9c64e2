// Unit tests of the console's typing helpers: `node --test` (run by
// scripts/test.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { takeFinished, pieces } from '../src/typing.js';

test('finished sentences are ready, the rest waits', () => {
  assert.deepEqual(takeFinished('Hello there. How are'), { ready: 'Hello there.', rest: 'How are' });
  assert.deepEqual(takeFinished('Hello there.'), { ready: '', rest: 'Hello there.' });
  assert.deepEqual(takeFinished('Wow! Really? Yes. '), { ready: 'Wow! Really? Yes.', rest: '' });
  assert.deepEqual(takeFinished('It costs 3.5 dollars'), { ready: '', rest: 'It costs 3.5 dollars' });
  assert.deepEqual(takeFinished('"Stop." She left'), { ready: '"Stop."', rest: 'She left' });
});

test('CJK sentences end at their own punctuation, lines at line breaks', () => {
  assert.deepEqual(takeFinished('大家好。欢迎来到'), { ready: '大家好。', rest: '欢迎来到' });
  assert.deepEqual(takeFinished('真的吗？」好'), { ready: '真的吗？」', rest: '好' });
  assert.deepEqual(takeFinished('first line\nsecond'), { ready: 'first line', rest: 'second' });
});

test('pieces fit the per-message limit and cut at sentences', () => {
  const sentence = 'This sentence is about forty characters. ';
  const text = sentence.repeat(300);
  const out = pieces(text, 4000);
  const enc = new TextEncoder();
  assert.ok(out.length > 1);
  for (const p of out) {
    assert.ok(enc.encode(p).length <= 4000);
    assert.ok(p.endsWith('.'), `cut mid-sentence: …${p.slice(-20)}`);
  }
  assert.equal(out.join(' '), text.trim());
  // Multi-byte text without spaces is cut between characters.
  const zh = '好'.repeat(2000);
  const zp = pieces(zh, 4000);
  assert.equal(zp.join(''), zh);
  for (const p of zp) assert.ok(enc.encode(p).length <= 4000);
  assert.deepEqual(pieces('  short  '), ['short']);
});
