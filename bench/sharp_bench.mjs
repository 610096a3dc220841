// The sharp side of bench/compare.sh: the same cases as `bench worker`, measured in-process
// with process.cpuUsage() (all threads), one libvips thread and no operation cache.
//
//   node sharp_bench.mjs worker --case CASE --input FILE --out-dir DIR --stem NAME
//       `run` lines on stdin, one JSON line per iteration, {"peakRssKb"} at EOF
//   node sharp_bench.mjs once --case CASE --input FILE --out-dir DIR --stem NAME
//       one iteration and exit (the cold-start case measures the whole process)
//   node sharp_bench.mjs batch --concurrency N --out-dir DIR FILE...
//       the web preset over many files, N images at a time, sharp.concurrency(N)
//   node sharp_bench.mjs encode
//       one encode per JSON line on stdin, {"input","out","format","quality","mozjpeg"}
//       (format jpeg, webp or avif, each with sharp's defaults otherwise): prints
//       {"cpuMs","wallMs","bytes"} for the encode alone, like `bench encode` (the bytes case)
//
// CASE: one (1024 px wide JPEG q80), web (the `web` preset), webp (1024 px wide WebP q80),
// grayblur (grayscale + blur sigma 2, JPEG q80, no resize).
// sharp is loaded from $IMGPIPE_CACHE/bench/node_modules (see compare.sh).
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { homedir } from 'node:os';

const cache = process.env.IMGPIPE_CACHE || join(homedir(), '.cache', 'imgpipe');
const require = createRequire(join(cache, 'bench', 'package.json'));
const sharp = require('sharp');

const [mode, ...rest] = process.argv.slice(2);
const opts = { files: [] };
for (let i = 0; i < rest.length; i++) {
  if (rest[i].startsWith('--')) opts[rest[i].slice(2)] = rest[++i];
  else opts.files.push(rest[i]);
}

sharp.cache(false);
sharp.concurrency(Number(opts.concurrency || 1));

// The `web` preset (crates/pipeline/presets/presets.json), one pipeline per rendition from
// one input, run one after another so that a single core does all the work.
async function web(buf) {
  const img = sharp(buf).rotate();
  return [
    ['thumb', 'webp', await img.clone()
      .resize(256, 256, { fit: 'cover', withoutEnlargement: true })
      .webp({ quality: 80 }).toBuffer()],
    ['medium', 'jpg', await img.clone()
      .resize(1024, 1024, { fit: 'inside', withoutEnlargement: true })
      .jpeg({ quality: 82 }).toBuffer()],
    ['large', 'jpg', await img.clone()
      .resize(2048, 2048, { fit: 'inside', withoutEnlargement: true })
      .jpeg({ quality: 82 }).toBuffer()],
  ];
}

const cases = {
  one: async (buf) => [['out', 'jpg',
    await sharp(buf).rotate().resize({ width: 1024 }).jpeg({ quality: 80 }).toBuffer()]],
  // The same rendition through sharp's mozjpeg options (trellis quantisation, overshoot
  // deringing, optimised scans, table 3): the trade imgpipe's default JPEG encoder makes.
  'one-mozjpeg': async (buf) => [['out', 'jpg',
    await sharp(buf).rotate().resize({ width: 1024 }).jpeg({ quality: 80, mozjpeg: true })
      .toBuffer()]],
  webp: async (buf) => [['out', 'webp',
    await sharp(buf).rotate().resize({ width: 1024 }).webp({ quality: 80 }).toBuffer()]],
  grayblur: async (buf) => [['out', 'jpg',
    await sharp(buf).rotate().grayscale().blur(2).jpeg({ quality: 80 }).toBuffer()]],
  web,
};

function save(outputs, dir, stem) {
  mkdirSync(dir, { recursive: true });
  return outputs.map(([name, ext, data]) => {
    const path = join(dir, `${stem}-${name}.${ext}`);
    writeFileSync(path, data);
    return path;
  });
}

async function iteration(run, input) {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const outputs = await run(readFileSync(input));
  const cpu = process.cpuUsage(cpu0);
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  return { cpuMs: (cpu.user + cpu.system) / 1e3, wallMs, outputs };
}

// VmHWM of this process: getrusage's maxrss would include the parent's RSS at fork time.
const peak = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);

if (mode === 'worker' || mode === 'once') {
  const run = cases[opts.case];
  if (!run) throw new Error(`unknown case ${opts.case}`);
  let last = [];
  const report = ({ cpuMs, wallMs, outputs }) => {
    last = outputs;
    console.log(JSON.stringify({
      cpuMs, wallMs, outputs: outputs.map(([name, , data]) => ({ name, bytes: data.length })),
    }));
  };
  if (mode === 'once') {
    report(await iteration(run, opts.input));
  } else {
    for await (const line of createInterface({ input: process.stdin })) {
      if (line.trim() === 'quit') break;
      report(await iteration(run, opts.input));
    }
  }
  const files = save(last, opts['out-dir'], opts.stem || 'sharp');
  console.log(JSON.stringify({ peakRssKb: peak(), files }));
} else if (mode === 'batch') {
  const inflight = Number(opts.concurrency || 1);
  const queue = opts.files.map((f, i) => [f, i]);
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: inflight }, async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [file, i] = next;
      save(await web(readFileSync(file)), opts['out-dir'], `${i}`);
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({
    images: opts.files.length,
    wallMs: Number(process.hrtime.bigint() - t0) / 1e6,
    cpuMs: (cpu.user + cpu.system) / 1e3,
    peakRssKb: peak(),
  }));
} else if (mode === 'encode') {
  // The bytes case compares encoders only: each input PNG is decoded to raw pixels once,
  // untimed (as `bench encode` leaves its decode out), and every request encodes those pixels.
  // One long-lived process, so node's start-up is not paid per encode.
  const decoded = new Map();
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    if (line.trim() === 'quit') break;
    const req = JSON.parse(line);
    if (!decoded.has(req.input)) {
      decoded.set(req.input, await sharp(readFileSync(req.input)).removeAlpha().raw()
        .toBuffer({ resolveWithObject: true }));
    }
    const { data, info } = decoded.get(req.input);
    const raw = { raw: { width: info.width, height: info.height, channels: info.channels } };
    const encoders = {
      jpeg: (img) => img.jpeg({ quality: req.quality, mozjpeg: Boolean(req.mozjpeg) }),
      webp: (img) => img.webp({ quality: req.quality }),
      avif: (img) => img.avif({ quality: req.quality }),
    };
    if (!encoders[req.format]) throw new Error(`unknown format ${req.format}`);
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const out = await encoders[req.format](sharp(data, raw)).toBuffer();
    const cpu = process.cpuUsage(cpu0);
    const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
    writeFileSync(req.out, out);
    console.log(JSON.stringify({ cpuMs: (cpu.user + cpu.system) / 1e3, wallMs, bytes: out.length }));
  }
} else {
  throw new Error('usage: sharp_bench.mjs worker|once|batch|encode ...');
}
