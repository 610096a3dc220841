//! `imgpipe process`: every input through the local pipeline, in parallel, renditions exported
//! to the output folder.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use imaging::{Fit, Gravity, Operation, OutputFormat, ResizeSpec};
use indicatif::{ProgressBar, ProgressStyle};
use local::{ExecutionStatus, LocalPipeline};
use pipeline::io::Upload;
use pipeline::model::{ImageRecord, Status};
use pipeline::{Recipe, Rendition};
use serde::Serialize;

use crate::CommonArgs;

/// Extensions picked up when a folder is given; files named explicitly are always tried, and
/// their magic bytes decide what they are.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "png", "webp", "gif", "tif", "tiff", "bmp", "avif", "heic", "heif",
    "hif",
    // Camera RAW files are picked up too, so a folder's RAWs are reported as rejected (by
    // name, from their magic bytes) rather than passed over without a word.
    "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "dng", "raf", "orf", "rw2", "pef",
    "srw", "3fr", "iiq", "dcr", "kdc", "erf", "mef", "mrw", "x3f", "rwl",
];

#[derive(Args)]
#[command(after_help = "Recipe options (one of):\n  \
    --preset NAME        a named recipe (see `imgpipe presets`); default: web\n  \
    --recipe FILE        a recipe JSON file\n  \
    --resize/--op/...    one rendition described on the command line\n\n\
    With a preset or recipe, --quality, --keep-metadata, --without-enlargement, \
    --color-profile, --background, --jpeg-encoder, --effort and --quality-target change \
    every rendition they fit (the summary says what they changed); one that fits none is \
    refused.\n\n\
    Operations (--op, repeatable, applied in order): rotate=DEG, flip, flop, \
    crop=LEFT,TOP,WIDTH,HEIGHT, grayscale, sepia, blur=SIGMA, sharpen=SIGMA[,AMOUNT], \
    brightness=F, contrast=F, saturation=F, hue=DEG, gamma=G, invert, tint=#RRGGBB\n\n\
    Outputs are written as OUT/<file stem>-<rendition>.<ext>.")]
pub struct ProcessArgs {
    /// Image files and folders (folders are searched recursively for image files).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where the renditions are written.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Use a named preset.
    #[arg(long, conflicts_with_all = ["recipe", "resize", "ops", "format"])]
    pub preset: Option<String>,
    /// Use a recipe JSON file ({"renditions": [...]}).
    #[arg(long, conflicts_with_all = ["resize", "ops", "format"])]
    pub recipe: Option<PathBuf>,
    /// Resize to WIDTHxHEIGHT, WIDTHx or xHEIGHT.
    #[arg(long, value_name = "WxH")]
    pub resize: Option<String>,
    /// How to fit the resize box.
    #[arg(long, value_enum, default_value = "cover", requires = "resize")]
    pub fit: FitArg,
    /// Which part cover keeps.
    #[arg(long, value_enum, default_value = "center", requires = "resize")]
    pub gravity: GravityArg,
    /// Never enlarge a smaller source. With a preset or recipe, applies to every rendition
    /// that resizes.
    #[arg(long)]
    pub without_enlargement: bool,
    /// An operation, e.g. grayscale or blur=2 (repeatable, in order).
    #[arg(long = "op", value_name = "OP[=ARGS]")]
    pub ops: Vec<String>,
    /// Output format (any case; `jpg` is `jpeg`).
    #[arg(long, value_enum, ignore_case = true)]
    pub format: Option<FormatArg>,
    /// Quality for JPEG, lossy WebP and AVIF: 1-100, or `auto` for the lowest quality whose
    /// output still scores --quality-target (SSIMULACRA2) against the resized image. With a
    /// preset or recipe, applies to every rendition that has a quality.
    #[arg(long, value_name = "1-100|auto", value_parser = parse_quality)]
    pub quality: Option<pipeline::Quality>,
    /// The SSIMULACRA2 score `--quality auto` aims at, 30-95: 70 is high quality, 80 very
    /// high, 90 visually lossless [default: 70]. Applies to every rendition whose quality is
    /// auto, of a preset or recipe too.
    #[arg(long, value_name = "SCORE")]
    pub quality_target: Option<f64>,
    /// JPEG encoder: `small` (mozjpeg's trellis quantisation, the fewest bytes) or `fast`
    /// (libjpeg-turbo, about a tenth of the encode time, some 15-20 % more bytes) [default:
    /// small]. Applies to every JPEG rendition, of a preset or recipe too.
    #[arg(long, value_enum)]
    pub jpeg_encoder: Option<JpegEncoderArg>,
    /// Encoder effort, 0-9: slower for fewer bytes [default: 4]. AVIF: libaom speed 9 - effort;
    /// WebP: method min(effort, 6); JPEG (small encoder, progressive): 5 and up search the
    /// scan layout per image. Applies to every rendition it fits, of a preset or recipe too.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub effort: Option<u8>,
    /// Keep EXIF metadata (including GPS) in the outputs, of a preset or recipe too.
    #[arg(long)]
    pub keep_metadata: bool,
    /// Colours of the outputs: `srgb` converts a photo's embedded profile (Display P3, Adobe
    /// RGB, ...) to sRGB and writes no profile; `keep` leaves its colours as they are and
    /// embeds its profile. Applies to every rendition, of a preset or recipe too.
    #[arg(long, value_enum, value_name = "srgb|keep")]
    pub color_profile: Option<ColorProfileArg>,
    /// Colour that transparent areas become in formats without alpha (JPEG), as #rrggbb
    /// [default: #ffffff]. Applies to every rendition, of a preset or recipe too.
    #[arg(long, value_name = "#RRGGBB", value_parser = parse_background)]
    pub background: Option<imaging::Color>,
    /// How many images at once (default: the number of CPU cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Print one JSON document with every result instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FitArg {
    Cover,
    Contain,
    Fill,
    Inside,
    Outside,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GravityArg {
    Center,
    North,
    Northeast,
    East,
    Southeast,
    South,
    Southwest,
    West,
    Northwest,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum JpegEncoderArg {
    Small,
    Fast,
}

impl From<JpegEncoderArg> for imaging::JpegEncoder {
    fn from(a: JpegEncoderArg) -> Self {
        match a {
            JpegEncoderArg::Small => imaging::JpegEncoder::Small,
            JpegEncoderArg::Fast => imaging::JpegEncoder::Fast,
        }
    }
}

fn parse_quality(text: &str) -> std::result::Result<pipeline::Quality, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(pipeline::Quality::Auto);
    }
    match text.parse::<u8>() {
        Ok(q @ 1..=100) => Ok(pipeline::Quality::Fixed(q)),
        _ => Err(format!("`{text}` is neither a quality 1-100 nor `auto`")),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ColorProfileArg {
    Srgb,
    Keep,
}

impl From<ColorProfileArg> for imaging::ColorHandling {
    fn from(a: ColorProfileArg) -> Self {
        match a {
            ColorProfileArg::Srgb => imaging::ColorHandling::Srgb,
            ColorProfileArg::Keep => imaging::ColorHandling::Keep,
        }
    }
}

fn parse_background(text: &str) -> std::result::Result<imaging::Color, String> {
    let colour: imaging::Color = text.parse()?;
    if colour.0[3] != 255 {
        return Err(format!(
            "`{text}` is not opaque: the background fills what JPEG cannot keep transparent, so it is #rrggbb"
        ));
    }
    Ok(colour)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    #[value(alias = "jpg")]
    Jpeg,
    Png,
    Webp,
    Avif,
    Same,
}

/// What one input became.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileResult {
    input: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<String>,
    status: String,
    outputs: Vec<Output>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
    ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    rendition: String,
    path: PathBuf,
    width: u32,
    height: u32,
    bytes: u64,
}

pub fn describe_rendition(r: &Rendition) -> String {
    let mut parts = Vec::new();
    if let Some(spec) = &r.resize {
        let dim = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        parts.push(format!(
            "{}x{} {:?}{}",
            dim(spec.width),
            dim(spec.height),
            spec.fit,
            if spec.without_enlargement {
                " (never enlarge)"
            } else {
                ""
            }
        ));
    }
    for op in &r.operations {
        parts.push(serde_json::to_string(op).unwrap_or_default());
    }
    match r.auto_target() {
        Some(target) => {
            parts.push(format!("{:?} quality auto (score {target})", r.format).to_lowercase())
        }
        None => parts.push(format!("{:?} q{}", r.format, r.quality()).to_lowercase()),
    }
    if r.color_profile == imaging::ColorHandling::Keep {
        parts.push("source colour profile kept".into());
    }
    if let Some(bg) = r.background {
        parts.push(format!("background {bg}"));
    }
    parts.join(", ")
}

fn parse_resize(text: &str) -> Result<(Option<u32>, Option<u32>)> {
    let (w, h) = text
        .to_ascii_lowercase()
        .split_once('x')
        .map(|(w, h)| (w.to_string(), h.to_string()))
        .with_context(|| format!("--resize `{text}`: expected WIDTHxHEIGHT, WIDTHx or xHEIGHT"))?;
    let num = |s: &str| -> Result<Option<u32>> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<u32>()
            .map(Some)
            .with_context(|| format!("--resize `{text}`: `{s}` is not a whole number"))
    };
    let (w, h) = (num(&w)?, num(&h)?);
    if w.is_none() && h.is_none() {
        bail!("--resize `{text}`: give a width, a height or both");
    }
    Ok((w, h))
}

/// `blur=2`, `sharpen=1,0.5`, `crop=0,0,100,100`, `tint=#ff8800`, `grayscale`.
pub fn parse_op(text: &str) -> Result<Operation> {
    let (name, args) = match text.split_once('=') {
        Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim())),
        None => (text.trim().to_ascii_lowercase(), None),
    };
    let nums = |want: std::ops::RangeInclusive<usize>| -> Result<Vec<f32>> {
        let list: Vec<f32> = match args {
            None => Vec::new(),
            Some(a) => a
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<f32>()
                        .with_context(|| format!("--op {text}: `{p}` is not a number"))
                })
                .collect::<Result<_>>()?,
        };
        if !want.contains(&list.len()) {
            bail!("--op {text}: {name} takes {want:?} numbers");
        }
        Ok(list)
    };
    let one = || -> Result<f32> { Ok(nums(1..=1)?[0]) };
    let as_u32 = |v: f32| -> Result<u32> {
        if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f32 {
            bail!("--op {text}: crop takes whole, non-negative numbers");
        }
        Ok(v as u32)
    };
    let op = match name.as_str() {
        "rotate" => Operation::Rotate {
            angle: one()?,
            background: None,
        },
        "flip" => Operation::Flip,
        "flop" => Operation::Flop,
        "crop" | "extract" => {
            let v = nums(4..=4)?;
            Operation::Crop {
                left: as_u32(v[0])?,
                top: as_u32(v[1])?,
                width: as_u32(v[2])?,
                height: as_u32(v[3])?,
            }
        }
        "grayscale" | "greyscale" => Operation::Grayscale,
        "sepia" => Operation::Sepia,
        "blur" => Operation::Blur { sigma: one()? },
        "sharpen" => {
            let v = nums(1..=2)?;
            Operation::Sharpen {
                sigma: v[0],
                amount: v.get(1).copied().unwrap_or(1.0),
            }
        }
        "brightness" => Operation::Brightness { factor: one()? },
        "contrast" => Operation::Contrast { factor: one()? },
        "saturation" => Operation::Saturation { factor: one()? },
        "hue" => Operation::Hue { degrees: one()? },
        "gamma" => Operation::Gamma { gamma: one()? },
        "invert" | "negate" => Operation::Invert,
        "tint" => {
            let color = args
                .context("--op tint needs a colour, e.g. tint=#ff8800")?
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--op {text}: {e}"))?;
            Operation::Tint { color }
        }
        other => bail!(
            "--op {text}: unknown operation `{other}` (rotate, flip, flop, crop, grayscale, sepia, blur, sharpen, brightness, contrast, saturation, hue, gamma, invert, tint)"
        ),
    };
    if let Err((field, msg)) = op.validate() {
        bail!("--op {text}: {field}: {msg}");
    }
    Ok(op)
}

/// What `imgpipe process` applies: a preset by name, or an explicit recipe, and the
/// recipe-level options that changed a preset's or recipe's renditions (said in the summary).
struct Plan {
    preset: Option<String>,
    recipe: Option<Recipe>,
    /// The preset or recipe file the renditions came from, and what the options set in them.
    changed: Option<(String, Vec<String>)>,
}

/// The recipe the flags describe. `--quality`, `--keep-metadata` and `--without-enlargement`
/// shape the one ad-hoc rendition of `--resize`/`--op`/`--format`, or else apply to every
/// rendition of the preset or recipe they fit; `--color-profile`, `--background`,
/// `--jpeg-encoder`, `--effort` and `--quality-target` apply to every rendition they fit
/// either way. An option that fits no rendition is refused by name, never dropped.
fn recipe_of(args: &ProcessArgs, config: &pipeline::Config) -> Result<Plan> {
    let (preset, recipe) = base_recipe_of(args, config)?;
    let ad_hoc = is_ad_hoc(args);
    let overrides_shape =
        !ad_hoc && (args.quality.is_some() || args.keep_metadata || args.without_enlargement);
    if !overrides_shape
        && args.color_profile.is_none()
        && args.background.is_none()
        && args.jpeg_encoder.is_none()
        && args.effort.is_none()
        && args.quality_target.is_none()
    {
        return Ok(Plan {
            preset,
            recipe,
            changed: None,
        });
    }
    let source = match (&preset, &args.recipe) {
        (Some(name), _) => format!("preset {name}"),
        (None, Some(path)) => format!("recipe {}", path.display()),
        (None, None) => "this command line".to_string(),
    };
    let mut recipe = match (preset, recipe) {
        (_, Some(recipe)) => recipe,
        (Some(name), None) => config.presets.get(&name)?.clone(),
        (None, None) => bail!("no recipe to apply these options to"),
    };
    use imaging::OutputFormat as F;
    #[derive(Default)]
    struct Used {
        quality: bool,
        enlargement: bool,
        jpeg_encoder: bool,
        effort: bool,
        target: bool,
    }
    let mut used = Used::default();
    for r in &mut recipe.renditions {
        if !ad_hoc {
            if let Some(q) = args.quality
                && (matches!(r.format, F::Jpeg | F::Avif | F::Same)
                    || (r.format == F::Webp && !r.lossless))
            {
                r.quality = Some(q);
                used.quality = true;
            }
            if args.keep_metadata {
                r.keep_metadata = true;
            }
            if args.without_enlargement
                && let Some(resize) = &mut r.resize
            {
                resize.without_enlargement = true;
                used.enlargement = true;
            }
        }
        if let Some(c) = args.color_profile {
            r.color_profile = c.into();
        }
        if let Some(bg) = args.background {
            r.background = Some(bg);
        }
        if let Some(e) = args.jpeg_encoder
            && matches!(r.format, F::Jpeg | F::Same)
        {
            r.jpeg_encoder = Some(e.into());
            used.jpeg_encoder = true;
        }
        if let Some(e) = args.effort
            && (matches!(r.format, F::Avif | F::Webp | F::Same)
                || (r.format == F::Jpeg && r.searches_jpeg_scans()))
        {
            r.effort = Some(e);
            used.effort = true;
        }
        if let Some(t) = args.quality_target
            && r.quality == Some(pipeline::Quality::Auto)
        {
            r.auto_quality_target = Some(t);
            used.target = true;
        }
    }
    // An option no rendition can use is a mistake to report, not to drop.
    let mut changed = Vec::new();
    if !ad_hoc {
        if let Some(q) = args.quality {
            if !used.quality {
                bail!(
                    "--quality: no rendition of {source} has a quality to set (PNG and lossless WebP have none)"
                );
            }
            changed.push(format!("quality {}", quality_text(q)));
        }
        if args.keep_metadata {
            changed.push("EXIF kept".to_string());
        }
        if args.without_enlargement {
            if !used.enlargement {
                bail!("--without-enlargement: no rendition of {source} resizes");
            }
            changed.push("never enlarged".to_string());
        }
    }
    if let Some(c) = args.color_profile {
        changed.push(match c {
            ColorProfileArg::Srgb => "colours converted to sRGB".to_string(),
            ColorProfileArg::Keep => "colour profile kept".to_string(),
        });
    }
    if let Some(bg) = args.background {
        changed.push(format!("background {bg}"));
    }
    if let Some(e) = args.jpeg_encoder {
        if !used.jpeg_encoder {
            bail!("--jpeg-encoder: no rendition of {source} is JPEG");
        }
        changed.push(format!(
            "JPEG encoder {}",
            match e {
                JpegEncoderArg::Small => "small",
                JpegEncoderArg::Fast => "fast",
            }
        ));
    }
    if let Some(e) = args.effort {
        if !used.effort {
            bail!(
                "--effort: no rendition of {source} is AVIF, WebP or a small-encoder progressive JPEG"
            );
        }
        changed.push(format!("effort {e}"));
    }
    if let Some(t) = args.quality_target {
        if !used.target {
            bail!(
                "--quality-target: no rendition of {source} has quality auto (give --quality auto)"
            );
        }
        changed.push(format!("quality target {t}"));
    }
    recipe.validate()?;
    Ok(Plan {
        preset: None,
        recipe: Some(recipe),
        changed: (!ad_hoc).then_some((source, changed)),
    })
}

fn quality_text(q: pipeline::Quality) -> String {
    match q {
        pipeline::Quality::Auto => "auto".to_string(),
        pipeline::Quality::Fixed(n) => n.to_string(),
    }
}

/// Whether the command line describes its own single rendition rather than naming a preset
/// or recipe.
fn is_ad_hoc(args: &ProcessArgs) -> bool {
    args.recipe.is_none()
        && args.preset.is_none()
        && (args.resize.is_some() || !args.ops.is_empty() || args.format.is_some())
}

fn base_recipe_of(
    args: &ProcessArgs,
    config: &pipeline::Config,
) -> Result<(Option<String>, Option<Recipe>)> {
    if let Some(path) = &args.recipe {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading recipe {}", path.display()))?;
        let recipe = Recipe::from_json(&text).with_context(|| format!("in {}", path.display()))?;
        return Ok((None, Some(recipe)));
    }
    if !is_ad_hoc(args) {
        let name = args
            .preset
            .clone()
            .unwrap_or_else(|| config.default_preset.clone());
        config.presets.get(&name)?;
        return Ok((Some(name), None));
    }
    let resize = match &args.resize {
        Some(text) => {
            let (width, height) = parse_resize(text)?;
            Some(ResizeSpec {
                width,
                height,
                fit: match args.fit {
                    FitArg::Cover => Fit::Cover,
                    FitArg::Contain => Fit::Contain,
                    FitArg::Fill => Fit::Fill,
                    FitArg::Inside => Fit::Inside,
                    FitArg::Outside => Fit::Outside,
                },
                gravity: match args.gravity {
                    GravityArg::Center => Gravity::Center,
                    GravityArg::North => Gravity::North,
                    GravityArg::Northeast => Gravity::NorthEast,
                    GravityArg::East => Gravity::East,
                    GravityArg::Southeast => Gravity::SouthEast,
                    GravityArg::South => Gravity::South,
                    GravityArg::Southwest => Gravity::SouthWest,
                    GravityArg::West => Gravity::West,
                    GravityArg::Northwest => Gravity::NorthWest,
                },
                without_enlargement: args.without_enlargement,
                background: None,
            })
        }
        None => None,
    };
    let recipe = Recipe {
        description: None,
        renditions: vec![Rendition {
            name: "out".to_string(),
            resize,
            operations: args
                .ops
                .iter()
                .map(|o| parse_op(o))
                .collect::<Result<_>>()?,
            format: match args.format {
                None | Some(FormatArg::Same) => OutputFormat::Same,
                Some(FormatArg::Jpeg) => OutputFormat::Jpeg,
                Some(FormatArg::Png) => OutputFormat::Png,
                Some(FormatArg::Webp) => OutputFormat::Webp,
                Some(FormatArg::Avif) => OutputFormat::Avif,
            },
            quality: args.quality,
            auto_quality_target: None,
            progressive: None,
            jpeg_encoder: None,
            effort: None,
            lossless: false,
            keep_metadata: args.keep_metadata,
            color_profile: imaging::ColorHandling::Srgb,
            background: None,
        }],
    };
    recipe.validate()?;
    Ok((None, Some(recipe)))
}

fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
        if depth > 64 {
            return Ok(());
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading folder {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                walk(&path, out, depth + 1)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if meta.is_dir() {
            walk(input, &mut files, 0)?;
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// Output stems, unique within the run: `a.jpg` and `x/a.png` become `a` and `a-2`.
fn unique_stems(files: &[PathBuf]) -> Vec<String> {
    let mut seen = HashSet::new();
    files
        .iter()
        .map(|f| {
            let stem = pipeline::keys::sanitise_name(
                &f.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let mut candidate = stem.clone();
            let mut n = 2;
            while !seen.insert(candidate.clone()) {
                candidate = format!("{stem}-{n}");
                n += 1;
            }
            candidate
        })
        .collect()
}

pub async fn run(args: ProcessArgs) -> Result<bool> {
    let mut config = args.common.config()?;
    let jobs = crate::workers(args.jobs);
    config.compute = pipeline::ComputeSlots::new(jobs);
    let Plan {
        preset,
        recipe,
        changed,
    } = recipe_of(&args, &config)?;
    let files = collect_inputs(&args.inputs)?;
    if files.is_empty() {
        bail!("no image files found in the inputs given");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output folder {}", args.out.display()))?;
    let pipeline = Arc::new(
        LocalPipeline::open(&args.common.data, config)
            .with_context(|| format!("opening data directory {}", args.common.data.display()))?,
    );
    let stems = unique_stems(&files);
    let bar = if !args.json && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let recipe_json = recipe.as_ref().map(serde_json::to_value).transpose()?;
    let results: Vec<FileResult> = futures::stream::iter(files.into_iter().zip(stems))
        .map(|(file, stem)| {
            let pipeline = pipeline.clone();
            let preset = preset.clone();
            let recipe = recipe_json.clone();
            let out = args.out.clone();
            let bar = bar.clone();
            async move {
                let result = process_one(&pipeline, &file, &stem, &out, preset, recipe).await;
                bar.inc(1);
                // Every file that did not make it is named with its reason on stderr, whether
                // or not a bar is drawn there (piped, under cron or CI) and with --json too.
                if let Some(line) = failure_line(&result) {
                    if bar.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
                result
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let ok = count(Status::Complete.as_str());
    let rejected = count(Status::Rejected.as_str());
    let failed = results.len() - ok - rejected;
    if args.json {
        let doc = serde_json::json!({
            "results": results,
            "summary": { "images": results.len(), "ok": ok, "rejected": rejected, "failed": failed, "seconds": elapsed.as_secs_f64() },
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &results {
            for o in &r.outputs {
                outln!(
                    "{}  {}x{}  {} bytes",
                    o.path.display(),
                    o.width,
                    o.height,
                    o.bytes
                );
            }
        }
        if let Some((source, changed)) = &changed {
            outln!(
                "{source}, in every rendition it fits: {}",
                changed.join(", ")
            );
        }
        outln!(
            "{} image{}: {ok} ok, {rejected} rejected, {failed} failed in {:.2} s",
            results.len(),
            if results.len() == 1 { "" } else { "s" },
            elapsed.as_secs_f64()
        );
    }
    Ok(ok == results.len())
}

/// `INPUT: rejected (KIND): MESSAGE` for a file that was not processed; `None` for one that
/// was.
fn failure_line(r: &FileResult) -> Option<String> {
    if r.status == Status::Complete.as_str() {
        return None;
    }
    let field = |name: &str| {
        r.error
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
    };
    Some(format!(
        "{}: {} ({}): {}",
        r.input.display(),
        r.status.to_lowercase(),
        field("type").unwrap_or("Error"),
        field("message").unwrap_or("no reason was recorded")
    ))
}

async fn process_one(
    pipeline: &LocalPipeline,
    file: &Path,
    stem: &str,
    out: &Path,
    preset: Option<String>,
    recipe: Option<serde_json::Value>,
) -> FileResult {
    let started = Instant::now();
    let mut result = FileResult {
        input: file.to_path_buf(),
        image_id: None,
        status: Status::Failed.as_str().to_string(),
        outputs: Vec::new(),
        error: None,
        ms: 0,
    };
    let outcome = async {
        let upload = pipeline.ingest(file, "local")?;
        let upload = Upload {
            preset,
            recipe,
            ..upload
        };
        pipeline.run(&upload).await.map_err(anyhow::Error::from)
    }
    .await;
    match outcome {
        Err(e) => {
            result.error =
                Some(serde_json::json!({"type": "Internal", "message": format!("{e:#}")}))
        }
        Ok(outcome) => {
            if let ExecutionStatus::Failed { error, cause } = &outcome.execution.status
                && outcome.record.as_ref().is_none_or(|r| r.error.is_none())
            {
                result.error = Some(serde_json::json!({"type": error, "message": cause}));
            }
            if let Some(record) = outcome.record {
                result.image_id = Some(record.id.clone());
                result.status = record.status.as_str().to_string();
                if let Some(e) = &record.error {
                    result.error = Some(serde_json::json!({"type": e.kind, "message": e.message}));
                }
                if record.status == Status::Complete {
                    match export(pipeline, &record, stem, out) {
                        Ok(outputs) => result.outputs = outputs,
                        Err(e) => {
                            result.status = Status::Failed.as_str().to_string();
                            result.error = Some(
                                serde_json::json!({"type": "Export", "message": format!("{e:#}")}),
                            );
                        }
                    }
                }
            }
        }
    }
    result.ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result
}

fn export(
    pipeline: &LocalPipeline,
    record: &ImageRecord,
    stem: &str,
    out: &Path,
) -> Result<Vec<Output>> {
    record
        .renditions
        .iter()
        .map(|r| {
            let ext = r.format.extension();
            let path = out.join(format!("{stem}-{}.{ext}", r.name));
            pipeline
                .store
                .export(&r.key, &path)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(Output {
                rendition: r.name.clone(),
                path,
                width: r.width,
                height: r.height,
                bytes: r.bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operations() {
        assert_eq!(parse_op("grayscale").unwrap(), Operation::Grayscale);
        assert_eq!(parse_op("blur=2").unwrap(), Operation::Blur { sigma: 2.0 });
        assert_eq!(
            parse_op("sharpen=1,0.5").unwrap(),
            Operation::Sharpen {
                sigma: 1.0,
                amount: 0.5
            }
        );
        assert_eq!(
            parse_op("crop=1,2,30,40").unwrap(),
            Operation::Crop {
                left: 1,
                top: 2,
                width: 30,
                height: 40
            }
        );
        assert!(parse_op("blur").unwrap_err().to_string().contains("blur"));
        assert!(parse_op("crop=1,2,3").is_err());
        assert!(
            parse_op("explode")
                .unwrap_err()
                .to_string()
                .contains("unknown operation")
        );
        assert!(parse_op("tint=#zz0000").is_err());
    }

    #[test]
    fn parses_resize_boxes() {
        assert_eq!(parse_resize("800x600").unwrap(), (Some(800), Some(600)));
        assert_eq!(parse_resize("800x").unwrap(), (Some(800), None));
        assert_eq!(parse_resize("x600").unwrap(), (None, Some(600)));
        assert!(parse_resize("x").is_err());
        assert!(parse_resize("big").is_err());
    }

    /// The plan `imgpipe process ARGS` makes, with the built-in presets.
    fn plan(argv: &[&str]) -> Result<Plan> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ProcessArgs,
        }
        use clap::Parser;
        let argv = ["process", "in.jpg", "--out", "out"].iter().chain(argv);
        let cli = Cli::try_parse_from(argv)?;
        recipe_of(&cli.args, &pipeline::Config::default())
    }

    fn renditions(plan: &Plan) -> &[Rendition] {
        &plan.recipe.as_ref().expect("an explicit recipe").renditions
    }

    #[test]
    fn recipe_options_change_every_rendition_of_a_preset_and_say_so() {
        use pipeline::Quality;
        // A named preset keeps its renditions; --quality goes into each.
        let p = plan(&["--preset", "web", "--quality", "50"]).unwrap();
        let names: Vec<_> = renditions(&p).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["thumb", "medium", "large"]);
        assert!(
            renditions(&p)
                .iter()
                .all(|r| r.quality == Some(Quality::Fixed(50)))
        );
        let (source, changed) = p.changed.as_ref().unwrap();
        assert_eq!(source, "preset web");
        assert_eq!(changed, &["quality 50"]);

        // The default preset too, when no rendition is described on the command line.
        let p = plan(&["--quality", "auto", "--quality-target", "75"]).unwrap();
        assert_eq!(renditions(&p).len(), 3);
        assert!(
            renditions(&p)
                .iter()
                .all(|r| r.quality == Some(Quality::Auto) && r.auto_quality_target == Some(75.0))
        );

        let p = plan(&[
            "--preset",
            "thumbnail",
            "--keep-metadata",
            "--without-enlargement",
        ])
        .unwrap();
        let thumb = &renditions(&p)[0];
        assert_eq!(thumb.name, "thumb");
        assert!(thumb.keep_metadata);
        assert!(thumb.resize.as_ref().unwrap().without_enlargement);
        assert_eq!(
            p.changed.as_ref().unwrap().1,
            ["EXIF kept", "never enlarged"]
        );

        // Without options the preset is used by name, unchanged.
        let p = plan(&["--preset", "social"]).unwrap();
        assert_eq!(p.preset.as_deref(), Some("social"));
        assert!(p.recipe.is_none() && p.changed.is_none());
    }

    #[test]
    fn recipe_options_change_a_recipe_files_renditions_they_fit() {
        let dir = std::env::temp_dir().join(format!("imgpipe-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mixed = dir.join("mixed.json");
        std::fs::write(
            &mixed,
            r#"{"renditions": [
                {"name": "photo", "format": "jpeg", "quality": 90},
                {"name": "icon", "resize": {"width": 64}, "format": "png"}]}"#,
        )
        .unwrap();
        let p = plan(&["--recipe", mixed.to_str().unwrap(), "--quality", "50"]).unwrap();
        let r = renditions(&p);
        assert_eq!(r[0].quality, Some(pipeline::Quality::Fixed(50)));
        assert_eq!(r[1].quality, None, "PNG has no quality");

        // An option that fits no rendition is refused by name.
        let png = dir.join("png.json");
        std::fs::write(&png, r#"{"renditions": [{"name": "a", "format": "png"}]}"#).unwrap();
        let png = png.to_str().unwrap();
        for (extra, words) in [
            ("--quality", "--quality: no rendition of recipe"),
            (
                "--without-enlargement",
                "--without-enlargement: no rendition of recipe",
            ),
            ("--jpeg-encoder", "--jpeg-encoder: no rendition of recipe"),
        ] {
            let mut argv = vec!["--recipe", png, extra];
            match extra {
                "--quality" => argv.push("50"),
                "--jpeg-encoder" => argv.push("fast"),
                _ => {}
            }
            let e = plan(&argv).err().unwrap().to_string();
            assert!(e.starts_with(words), "{extra}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_ad_hoc_rendition_takes_its_options_and_conflicts_are_refused() {
        let p = plan(&["--resize", "100x", "--quality", "50", "--keep-metadata"]).unwrap();
        let r = renditions(&p);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "out");
        assert_eq!(r[0].quality, Some(pipeline::Quality::Fixed(50)));
        assert!(r[0].keep_metadata);
        assert!(p.changed.is_none());
        // `jpg` and any case name JPEG.
        for name in ["jpg", "JPG", "Jpeg"] {
            let p = plan(&["--resize", "100x", "--format", name]).unwrap();
            assert_eq!(renditions(&p)[0].format, OutputFormat::Jpeg, "{name}");
        }
        assert!(plan(&["--format", "jpx"]).is_err());
        // A format with a preset is a contradiction clap names.
        let e = plan(&["--preset", "web", "--format", "png"]).err().unwrap();
        assert!(e.to_string().contains("--format"), "{e}");
    }

    #[test]
    fn failures_are_named_with_their_reason() {
        let mut r = FileResult {
            input: PathBuf::from("shoot/a.cr2"),
            image_id: None,
            status: "REJECTED".into(),
            outputs: Vec::new(),
            error: Some(
                serde_json::json!({"type": "UnsupportedFormat", "message": "raw: Canon CR2"}),
            ),
            ms: 1,
        };
        assert_eq!(
            failure_line(&r).unwrap(),
            "shoot/a.cr2: rejected (UnsupportedFormat): raw: Canon CR2"
        );
        r.status = "FAILED".into();
        r.error = None;
        assert_eq!(
            failure_line(&r).unwrap(),
            "shoot/a.cr2: failed (Error): no reason was recorded"
        );
        r.status = "COMPLETE".into();
        assert_eq!(failure_line(&r), None);
    }

    #[test]
    fn stems_are_unique() {
        let files = [
            PathBuf::from("a.jpg"),
            PathBuf::from("x/a.png"),
            PathBuf::from("b c.jpg"),
        ];
        assert_eq!(unique_stems(&files), ["a", "a-2", "b_c"]);
    }
}
