// Bundles the console (src/console.js and what it imports: the generated
// huashen.v1 code, Connect's gRPC-Web transport, protobuf-es, whep.js) into
// one minified ES module. `node build.mjs` writes dist/console.js (commit
// it: the server compiles it in); `node build.mjs --check` builds into a
// temporary file and fails if dist/console.js differs (a stale bundle).
import { build } from 'esbuild';
import { readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const check = process.argv.includes('--check');
const outfile = check ? join(mkdtempSync(join(tmpdir(), 'huashen-web-')), 'console.js') : 'dist/console.js';
await build({
  entryPoints: ['src/console.js'],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  legalComments: 'none',
  outfile,
  logLevel: 'warning',
});
if (check) {
  if (!readFileSync(outfile).equals(readFileSync('dist/console.js'))) {
    console.error('web-demo/dist/console.js is stale: run `npm run build` in web-demo and commit it');
    process.exit(1);
  }
  console.log('web-demo/dist/console.js matches its sources');
} else {
  console.log(`wrote ${outfile}`);
}
