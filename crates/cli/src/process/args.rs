//! The command line of `imgpipe process`.

use std::path::PathBuf;

use clap::Args;

use crate::CommonArgs;

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
    Outputs are written as OUT/{dir}/{stem}-{rendition}.{ext}: a folder's subfolders are \
    kept under OUT. --name changes that; files already there are left alone unless \
    --overwrite or --skip-existing says otherwise, and files under OUT named like this \
    recipe's outputs are never taken as inputs. `-` as the input reads one image from \
    standard input; --out - writes the one rendition of one input to standard output.")]
#[command(group(clap::ArgGroup::new("size").args(["resize", "width", "height"]).multiple(true)))]
pub struct ProcessArgs {
    /// Image files and folders (folders are searched recursively for image files), or `-`
    /// for one image on standard input.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where the renditions are written, or `-` for standard output (one rendition of one
    /// input).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Use a named preset.
    #[arg(help_heading = "Recipe", long, conflicts_with_all = ["recipe", "size", "ops", "format", "rendition_name"])]
    pub preset: Option<String>,
    /// Use a recipe JSON file ({"renditions": [...]}).
    #[arg(help_heading = "Recipe", long, conflicts_with_all = ["size", "ops", "format", "rendition_name"])]
    pub recipe: Option<PathBuf>,
    /// Resize to WIDTHxHEIGHT, WIDTHx or xHEIGHT.
    #[arg(help_heading = "One rendition from the command line", long, value_name = "WxH", conflicts_with_all = ["width", "height"])]
    pub resize: Option<String>,
    /// Resize to this width (the height follows the aspect ratio unless --height is given).
    #[arg(help_heading = "One rendition from the command line", long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..))]
    pub width: Option<u32>,
    /// Resize to this height (the width follows the aspect ratio unless --width is given).
    #[arg(help_heading = "One rendition from the command line", long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..))]
    pub height: Option<u32>,
    /// How to fit the resize box.
    #[arg(
        help_heading = "One rendition from the command line",
        long,
        value_enum,
        default_value = "cover",
        requires = "size"
    )]
    pub fit: FitArg,
    /// Which part cover keeps.
    #[arg(
        help_heading = "One rendition from the command line",
        long,
        value_enum,
        default_value = "center",
        requires = "size"
    )]
    pub gravity: GravityArg,
    /// The name of the one rendition described on the command line, as {rendition} in
    /// --name [default: out].
    #[arg(
        help_heading = "One rendition from the command line",
        long,
        value_name = "NAME"
    )]
    pub rendition_name: Option<String>,
    /// Never enlarge a smaller source. With a preset or recipe, applies to every rendition
    /// that resizes.
    #[arg(help_heading = "Rendition settings (every rendition they fit)", long)]
    pub without_enlargement: bool,
    /// An operation, e.g. grayscale or blur=2 (repeatable, in order).
    #[arg(
        help_heading = "One rendition from the command line",
        long = "op",
        value_name = "OP[=ARGS]"
    )]
    pub ops: Vec<String>,
    /// Output format (any case; `jpg` is `jpeg`).
    #[arg(
        help_heading = "One rendition from the command line",
        long,
        value_enum,
        ignore_case = true
    )]
    pub format: Option<FormatArg>,
    /// Quality for JPEG, lossy WebP and AVIF: 1-100, or `auto` for the lowest quality whose
    /// output still scores --quality-target (SSIMULACRA2) against the resized image. With a
    /// preset or recipe, applies to every rendition that has a quality.
    #[arg(help_heading = "Rendition settings (every rendition they fit)", long, value_name = "1-100|auto", value_parser = parse_quality)]
    pub quality: Option<pipeline::Quality>,
    /// The SSIMULACRA2 score `--quality auto` aims at, 30-95: 70 is high quality, 80 very
    /// high, 90 visually lossless [default: 70]. Applies to every rendition whose quality is
    /// auto, of a preset or recipe too.
    #[arg(
        help_heading = "Rendition settings (every rendition they fit)",
        long,
        value_name = "SCORE"
    )]
    pub quality_target: Option<f64>,
    /// JPEG encoder: `small` (mozjpeg's trellis quantisation, the fewest bytes) or `fast`
    /// (libjpeg-turbo, about a tenth of the encode time, some 15-20 % more bytes) [default:
    /// small]. Applies to every JPEG rendition, of a preset or recipe too.
    #[arg(
        help_heading = "Rendition settings (every rendition they fit)",
        long,
        value_enum
    )]
    pub jpeg_encoder: Option<JpegEncoderArg>,
    /// Encoder effort, 0-9: slower for fewer bytes [default: 4]. AVIF: libaom speed 9 - effort
    /// (4: speed 4 without 1:4 partitions);
    /// WebP: method min(effort, 6); JPEG (small encoder, progressive): 4 searches the scan
    /// layout of smooth renditions up to 1.6 MP (under 0.75 bits a pixel), 5 and up of every
    /// image, 0-3 never. Applies to every rendition it fits, of a preset or recipe too.
    #[arg(help_heading = "Rendition settings (every rendition they fit)", long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub effort: Option<u8>,
    /// Keep EXIF metadata (including GPS) in the outputs, of a preset or recipe too.
    #[arg(help_heading = "Rendition settings (every rendition they fit)", long)]
    pub keep_metadata: bool,
    /// Colours of the outputs: `srgb` converts a photo's embedded profile (Display P3, Adobe
    /// RGB, ...) to sRGB and writes no profile; `keep` leaves its colours as they are and
    /// embeds its profile. Applies to every rendition, of a preset or recipe too.
    #[arg(
        help_heading = "Rendition settings (every rendition they fit)",
        long,
        value_enum,
        value_name = "srgb|keep"
    )]
    pub color_profile: Option<ColorProfileArg>,
    /// Colour that transparent areas become in formats without alpha (JPEG), as #rrggbb
    /// [default: #ffffff]. Applies to every rendition, of a preset or recipe too.
    #[arg(help_heading = "Rendition settings (every rendition they fit)", long, value_name = "#RRGGBB", value_parser = parse_background)]
    pub background: Option<imaging::Color>,
    /// Output file names under --out: {stem} (the input's name without extension),
    /// {rendition}, {ext}, {width}, {height} and {dir} (the input's folder relative to the
    /// folder given, so trees are kept).
    #[arg(help_heading = "Output files", long, value_name = "TEMPLATE", default_value = super::naming::DEFAULT_TEMPLATE)]
    pub name: String,
    /// Copy each original into the data directory. Without it the record keeps the path,
    /// size, modification time and SHA-256 of your file and reads it where it lies (a batch
    /// costs no extra disk), as long as its size and modification time are unchanged.
    #[arg(help_heading = "Data directory", long)]
    pub keep_originals: bool,
    /// Replace output files that are already there.
    #[arg(help_heading = "Output files", long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// Leave output files that are already there, and skip inputs whose outputs all are.
    #[arg(help_heading = "Output files", long)]
    pub skip_existing: bool,
    /// How many images at once (default: the number of CPU cores).
    #[arg(help_heading = "Run", short, long)]
    pub jobs: Option<usize>,
    /// Print one JSON document with every result instead of text.
    #[arg(help_heading = "Run", long)]
    pub json: bool,
    /// Print only failures (one line each on stderr) and no progress bar or summary.
    #[arg(help_heading = "Run", short, long, conflicts_with = "json")]
    pub quiet: bool,
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
    /// The part with the most detail, colour and skin.
    Smart,
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
