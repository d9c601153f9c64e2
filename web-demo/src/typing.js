// Streaming what the operator types: finished sentences leave the text box
// for the presenter at once, the unfinished rest waits for more typing (or
// Enter). Pure functions, tested with `node --test` (tests/typing.test.js).

// Ends a sentence: Latin terminators when whitespace follows (so "3.5" and
// "e.g.x" do not), CJK terminators at once, and line breaks.
const BOUNDARY = /[.!?;…]+["'”’)]*\s+|[。！？；…]+["'”’」』）)]*\s*|\n+/g;

// Splits `text` into what is ready to speak (everything up to the last
// sentence boundary, trimmed) and the rest still being typed.
export function takeFinished(text) {
  let end = 0;
  for (const m of text.matchAll(BOUNDARY)) end = m.index + m[0].length;
  return { ready: text.slice(0, end).trim(), rest: text.slice(end) };
}

// Cuts `text` into pieces of at most `maxBytes` UTF-8 bytes (the API takes
// 4096 per Speak message), at sentence boundaries where possible, else at
// spaces, else between characters.
export function pieces(text, maxBytes = 4000) {
  const enc = new TextEncoder();
  const size = (s) => enc.encode(s).length;
  const out = [];
  let rest = text.trim();
  while (rest && size(rest) > maxBytes) {
    // The longest prefix that fits, in whole characters.
    let fit = '';
    for (const ch of rest) {
      if (size(fit + ch) > maxBytes) break;
      fit += ch;
    }
    let cut = 0;
    for (const m of fit.matchAll(BOUNDARY)) cut = m.index + m[0].length;
    if (cut === 0) cut = fit.lastIndexOf(' ') + 1;
    if (cut <= 0) cut = fit.length;
    out.push(rest.slice(0, cut).trim());
    rest = rest.slice(cut).trim();
  }
  if (rest) out.push(rest);
  return out.filter((p) => p.length > 0);
}
