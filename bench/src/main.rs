//! The imgpipe side of `bench/compare.sh`: runs the library's real code paths in-process and
//! reports CPU time, wall time and peak RSS as JSON lines, so a driver can alternate it with
//! sharp, Pillow and libvips run for run.
//!
//! ```text
//! bench worker --input FILE (--preset NAME | --recipe JSON) --out-dir DIR --stem NAME
//!     reads `run` lines on stdin: each does one iteration (read, decode, render, operations,
//!     encode) and prints {"cpuMs","wallMs","outputs"}; at EOF writes the last outputs to DIR
//!     and prints {"peakRssKb"}.
//! bench process FILE --out DIR --data DIR [--preset NAME] [--cap-mb N]
//!     one upload through the local pipeline exactly as `imgpipe process` runs it, optionally
//!     under an RLIMIT_DATA cap; prints {"status","peakRssKb","cpuMs","wallMs"}.
//! bench time CMD [ARGS...]
//!     runs a command to its end and prints {"wallMs","cpuMs","peakRssKb","code"} for it: a
//!     small launcher, because a child's peak RSS starts from its parent's at fork time.
//! bench synth OUT --width W --height H [--quality Q]
//!     writes a synthetic photo-like JPEG (the 50 MP memory test makes its input this way).
//! bench encode --input PNG --format jpeg|webp|avif --quality N|auto [--jpeg-encoder small|fast]
//!              [--effort 0-9] [--target T] --out FILE
//!     encodes the decoded PNG as a rendition with those settings would be (the decode is not
//!     timed) and prints {"cpuMs","wallMs","bytes","quality","score"}: the quality used (the
//!     one chosen, for auto) and the score the automatic search measured (null otherwise).
//! bench score --reference PNG FILE...
//!     the SSIMULACRA2 score of each file against the reference, one {"file","score"} a line.
//! ```

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use imaging::{EncodeOptions, Limits};
use pipeline::{Config, Presets, Recipe};
use serde_json::json;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| anyhow!("usage: bench worker|process|time|synth ..."))?;
    if cmd == "time" {
        return time(rest);
    }
    let opts = Opts::parse(rest)?;
    match cmd.as_str() {
        "worker" => worker(&opts),
        "process" => process(&opts),
        "synth" => synth(&opts),
        "encode" => encode(&opts),
        "score" => score(&opts),
        other => bail!("unknown subcommand `{other}`"),
    }
}

/// `--name value` pairs and positional arguments; every option here takes a value.
struct Opts {
    named: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut named = Vec::new();
        let mut positional = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let value = it
                    .next()
                    .with_context(|| format!("--{name} needs a value"))?;
                named.push((name.to_string(), value.clone()));
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Opts { named, positional })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, name: &str) -> Result<&str> {
        self.get(name)
            .with_context(|| format!("--{name} is required"))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("--{name} `{v}` is not a number")),
        }
    }

    fn first(&self) -> Result<&str> {
        self.positional
            .first()
            .map(String::as_str)
            .context("a file argument is required")
    }
}

/// Process CPU time (all threads), as precise as the kernel keeps it.
fn cpu_time() -> Result<Duration> {
    use nix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)?;
    Ok(Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
}

/// Peak resident set size of this process (VmHWM), in KiB.
fn peak_rss_kb() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

fn recipe_of(opts: &Opts) -> Result<Recipe> {
    if let Some(text) = opts.get("recipe") {
        return Recipe::from_json(text).map_err(|e| anyhow!("--recipe: {e}"));
    }
    let name = opts.get("preset").unwrap_or("web");
    Presets::builtin()
        .get(name)
        .cloned()
        .map_err(|e| anyhow!("--preset: {e}"))
}

/// One encoded rendition.
struct Output {
    name: String,
    ext: &'static str,
    width: u32,
    height: u32,
    bytes: Vec<u8>,
}

/// What the Resize, Filter and Store steps compute for one upload, in one process and
/// without the stores: decode once (shrink-on-load for the largest rendition), the render
/// cascade, each rendition's operations, then its encoder. The source's sha256, which the
/// Resize step records, is left out: no other tool computes one.
/// Also returns the decoded (possibly shrunk-on-load) size.
fn render_all(bytes: &[u8], recipe: &Recipe, limits: &Limits) -> Result<(Vec<Output>, (u32, u32))> {
    let header = imaging::probe(bytes, limits)?;
    let source = header.oriented_dims();
    let decoded = Arc::new(imaging::decode(
        bytes,
        limits,
        Some(recipe.max_output(source)),
    )?);
    let resized =
        pipeline::render::render(&decoded, source, recipe).map_err(|e| anyhow!("render: {e}"))?;
    let decoded_size = (decoded.width(), decoded.height());
    // Dropped so that renditions without a resize own their image and skip a copy below.
    drop(decoded);
    let mut out = Vec::with_capacity(resized.len());
    for r in resized {
        let rendition = &recipe.renditions[r.index];
        let mut img = Arc::unwrap_or_clone(r.image);
        for op in &rendition.operations {
            img = imaging::apply(img, op)?;
        }
        let format = rendition
            .format
            .resolve(header.format, img.color().has_alpha());
        let opts = rendition.encode_options(format, None, None);
        let bytes = pipeline::output::encode(&img, rendition, &opts)?.bytes;
        out.push(Output {
            name: rendition.name.clone(),
            ext: format.extension(),
            width: img.width(),
            height: img.height(),
            bytes,
        });
    }
    Ok((out, decoded_size))
}

fn worker(opts: &Opts) -> Result<()> {
    let input = PathBuf::from(opts.need("input")?);
    let out_dir = PathBuf::from(opts.need("out-dir")?);
    let stem = opts.get("stem").unwrap_or("imgpipe").to_string();
    let recipe = recipe_of(opts)?;
    let limits = Limits::default();
    let stdout = std::io::stdout();
    let mut last = Vec::new();
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "run" => {}
            "quit" => break,
            other => bail!("unknown worker command `{other}`"),
        }
        let (cpu0, wall0) = (cpu_time()?, Instant::now());
        // Reading the file is part of every tool's iteration (from the page cache).
        let bytes = std::fs::read(&input).with_context(|| format!("{}", input.display()))?;
        let (outputs, decoded) = render_all(&bytes, &recipe, &limits)?;
        let (cpu, wall) = (cpu_time()? - cpu0, wall0.elapsed());
        let described: Vec<_> = outputs
            .iter()
            .map(|o| json!({"name": o.name, "width": o.width, "height": o.height, "bytes": o.bytes.len()}))
            .collect();
        let mut lock = stdout.lock();
        writeln!(
            lock,
            "{}",
            json!({"cpuMs": cpu.as_secs_f64() * 1e3, "wallMs": wall.as_secs_f64() * 1e3, "decoded": [decoded.0, decoded.1], "outputs": described})
        )?;
        lock.flush()?;
        last = outputs;
    }
    std::fs::create_dir_all(&out_dir)?;
    let mut files = Vec::new();
    for o in &last {
        let path = out_dir.join(format!("{stem}-{}.{}", o.name, o.ext));
        std::fs::write(&path, &o.bytes).with_context(|| format!("{}", path.display()))?;
        files.push(path);
    }
    println!("{}", json!({"peakRssKb": peak_rss_kb()?, "files": files}));
    Ok(())
}

/// Caps this process's writable private memory (heap, mmap'd buffers, thread stacks): the
/// kernel refuses any allocation beyond it, so exceeding the budget fails the run. Unlike
/// RLIMIT_AS it does not count the address space Rust and glibc reserve without touching.
fn cap_memory(mb: u64) -> Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    let bytes = mb * 1024 * 1024;
    setrlimit(Resource::RLIMIT_DATA, bytes, bytes).context("setrlimit(RLIMIT_DATA)")?;
    Ok(())
}

fn process(opts: &Opts) -> Result<()> {
    if let Some(mb) = opts.get("cap-mb") {
        cap_memory(mb.parse().context("--cap-mb")?)?;
    }
    let (cpu0, wall0) = (cpu_time()?, Instant::now());
    let file = PathBuf::from(opts.first()?);
    let out = PathBuf::from(opts.need("out")?);
    let data = PathBuf::from(opts.need("data")?);
    let preset = opts.get("preset").unwrap_or("web").to_string();
    // One worker thread, as `imgpipe process --jobs 1` effectively uses for one image.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(run_pipeline(&file, &out, &data, preset))?;
    let (cpu, wall) = (cpu_time()? - cpu0, wall0.elapsed());
    println!(
        "{}",
        json!({"status": status, "peakRssKb": peak_rss_kb()?, "cpuMs": cpu.as_secs_f64() * 1e3, "wallMs": wall.as_secs_f64() * 1e3})
    );
    if status != "COMPLETE" {
        bail!("{} ended {status}", file.display());
    }
    Ok(())
}

/// What `imgpipe process` does for one file: ingest into the data directory, run the state
/// machine, export the renditions.
async fn run_pipeline(file: &Path, out: &Path, data: &Path, preset: String) -> Result<String> {
    let pipeline = local::LocalPipeline::open(data, Config::default())?;
    let upload = pipeline.ingest(file, "local")?;
    let upload = pipeline::io::Upload {
        preset: Some(preset),
        ..upload
    };
    let outcome = pipeline.run(&upload).await?;
    let record = outcome.record.context("no record after the run")?;
    std::fs::create_dir_all(out)?;
    for r in &record.renditions {
        let path = out.join(format!("{}.{}", r.name, r.format.extension()));
        pipeline.store.export(&r.key, &path, true)?;
    }
    if let Some(e) = &record.error {
        eprintln!("{}: {}", e.kind, e.message);
    }
    Ok(record.status.as_str().to_string())
}

/// A photo-like test image: smooth gradients (sky, shading) with fine texture, which a JPEG
/// encoder treats like a real photo (neither trivially small nor noise-sized).
fn synth(opts: &Opts) -> Result<()> {
    let out = PathBuf::from(opts.first()?);
    let width: u32 = opts.num("width", 9400)?;
    let height: u32 = opts.num("height", 5300)?;
    let quality: u8 = opts.num("quality", 90)?;
    let mut raw = Vec::with_capacity(width as usize * height as usize * 3);
    let mut seed: u32 = 0x9e37_79b9;
    for y in 0..height {
        let fy = y * 255 / height.max(1);
        for x in 0..width {
            // xorshift32: cheap texture without a dependency.
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let grain = (seed & 15) as u8;
            let fx = x * 255 / width.max(1);
            let ring = (((x / 7) ^ (y / 11)) & 31) as u8;
            raw.push((fx as u8 / 2).wrapping_add(ring).wrapping_add(grain));
            raw.push((fy as u8 / 2).wrapping_add(grain));
            raw.push(((fx + fy) / 3) as u8 + ring);
        }
    }
    let img = imaging::image::RgbImage::from_raw(width, height, raw)
        .context("synthetic buffer does not fit its size")?;
    let bytes = imaging::encode(
        &imaging::Image::ImageRgb8(img),
        &EncodeOptions {
            format: imaging::Format::Jpeg,
            quality,
            ..Default::default()
        },
    )?;
    std::fs::write(&out, &bytes).with_context(|| format!("{}", out.display()))?;
    println!(
        "{}",
        json!({"path": out, "width": width, "height": height, "bytes": bytes.len()})
    );
    Ok(())
}

/// Reads a file in any format imgpipe decodes, upright and in sRGB.
fn read_image(path: &str) -> Result<imaging::Image> {
    let bytes = std::fs::read(path).with_context(|| path.to_string())?;
    imaging::decode(&bytes, &Limits::default(), None).with_context(|| path.to_string())
}

/// One rendition's encode, exactly as the Store step makes it from the same pixels.
fn encode(opts: &Opts) -> Result<()> {
    let img = read_image(opts.need("input")?)?;
    let out = PathBuf::from(opts.need("out")?);
    let mut rendition = serde_json::json!({
        "name": "bench",
        "format": opts.need("format")?,
    });
    let quality = opts.need("quality")?;
    rendition["quality"] = match quality {
        "auto" => json!("auto"),
        q => json!(
            q.parse::<u8>()
                .map_err(|_| anyhow!("--quality `{q}` is not 1..=100 or auto"))?
        ),
    };
    if let Some(e) = opts.get("jpeg-encoder") {
        rendition["jpegEncoder"] = json!(e);
    }
    if let Some(e) = opts.get("effort") {
        rendition["effort"] = json!(e.parse::<u8>().context("--effort")?);
    }
    if let Some(t) = opts.get("target") {
        rendition["autoQualityTarget"] = json!(t.parse::<f64>().context("--target")?);
    }
    let recipe = Recipe::from_json(&json!({"renditions": [rendition]}).to_string())
        .map_err(|e| anyhow!("{e}"))?;
    let rendition = &recipe.renditions[0];
    let format = rendition.format.resolve(imaging::Format::Png, false);
    let encode_opts = rendition.encode_options(format, None, None);
    let (cpu0, wall0) = (cpu_time()?, Instant::now());
    let encoded = pipeline::output::encode(&img, rendition, &encode_opts)?;
    let (cpu, wall) = (cpu_time()? - cpu0, wall0.elapsed());
    std::fs::write(&out, &encoded.bytes).with_context(|| format!("{}", out.display()))?;
    println!(
        "{}",
        json!({
            "cpuMs": cpu.as_secs_f64() * 1e3,
            "wallMs": wall.as_secs_f64() * 1e3,
            "bytes": encoded.bytes.len(),
            "quality": encoded.quality.unwrap_or(encode_opts.quality),
            "score": encoded.score,
        })
    );
    Ok(())
}

fn score(opts: &Opts) -> Result<()> {
    let reference = read_image(opts.need("reference")?)?;
    if opts.positional.is_empty() {
        bail!("bench score --reference PNG FILE...");
    }
    for file in &opts.positional {
        let distorted = read_image(file)?;
        let score = imaging::score(&reference, &distorted, imaging::Color::WHITE)
            .with_context(|| file.clone())?;
        println!("{}", json!({"file": file, "score": score}));
    }
    Ok(())
}

/// Whole-process CPU time and peak RSS of one child, from getrusage(RUSAGE_CHILDREN): this
/// process has no other children, and its own small footprint at spawn time is all that the
/// child's peak can inherit.
fn time(argv: &[String]) -> Result<()> {
    use nix::sys::resource::{UsageWho, getrusage};
    let (program, args) = argv.split_first().context("bench time CMD [ARGS...]")?;
    let started = Instant::now();
    let status = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {program}"))?;
    let wall = started.elapsed();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let cpu = secs(usage.user_time()) + secs(usage.system_time());
    println!(
        "{}",
        json!({"wallMs": wall.as_secs_f64() * 1e3, "cpuMs": cpu * 1e3, "peakRssKb": usage.max_rss(), "code": status.code()})
    );
    Ok(())
}
