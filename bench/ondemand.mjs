// The sharp side of bench/ondemand.sh.
//
//   node ondemand.mjs make --input FILE --out FILE --width W --height H
//       the 12 MP source: FILE resized to cover WxH, JPEG q90
//   node ondemand.mjs render --input FILE --width W --iterations N
//       N times, in-process and warm: decode FILE, resize to W wide, encode WebP q80 (what
//       `GET /v1/images/{id}/transform?w=W&fmt=auto` with `Accept: image/webp` renders);
//       prints {"wallMs": [...], "cpuMs": [...]}, one entry per iteration
// sharp is loaded from $IMGPIPE_CACHE/bench/node_modules (see compare.sh), with its default
// concurrency (all cores), as a server would run it.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { homedir } from 'node:os';

const cache = process.env.IMGPIPE_CACHE || join(homedir(), '.cache', 'imgpipe');
const require = createRequire(join(cache, 'bench', 'package.json'));
const sharp = require('sharp');

const [mode, ...rest] = process.argv.slice(2);
const opts = {};
for (let i = 0; i < rest.length; i += 2) opts[rest[i].slice(2)] = rest[i + 1];

if (mode === 'make') {
  await sharp(opts.input)
    .rotate()
    .resize(Number(opts.width), Number(opts.height), { fit: 'cover' })
    .jpeg({ quality: 90 })
    .toFile(opts.out);
} else if (mode === 'render') {
  // No operation cache: every iteration decodes as a first request would.
  sharp.cache(false);
  const buf = readFileSync(opts.input);
  const width = Number(opts.width);
  const wallMs = [];
  const cpuMs = [];
  // One warm-up, not counted: the library's first call loads code.
  await sharp(buf).rotate().resize({ width }).webp({ quality: 80 }).toBuffer();
  for (let i = 0; i < Number(opts.iterations); i++) {
    const cpu = process.cpuUsage();
    const t = process.hrtime.bigint();
    await sharp(buf).rotate().resize({ width }).webp({ quality: 80 }).toBuffer();
    wallMs.push(Number(process.hrtime.bigint() - t) / 1e6);
    const used = process.cpuUsage(cpu);
    cpuMs.push((used.user + used.system) / 1000);
  }
  console.log(JSON.stringify({ wallMs, cpuMs }));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
