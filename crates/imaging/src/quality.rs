//! Perceptual quality: the SSIMULACRA2 score of an encoded image against the pixels it was
//! made from, and `quality: "auto"`, the lowest quality whose result still scores a target.

use image::RgbImage;
use ssimulacra2::{ColorPrimaries, Rgb, TransferCharacteristic, compute_frame_ssimulacra2};

use crate::encode::{EncodeOptions, encode_pixels, flatten, with_metadata};
use crate::{Color, Error, Format, Image, Limits};

/// The default `autoQualityTarget`: SSIMULACRA2 70 is "high quality", where artefacts are
/// hard to see at 1:1 without flipping between the images.
pub const DEFAULT_TARGET: f64 = 70.0;
/// Most trial encodes one search makes.
pub const MAX_TRIALS: usize = 5;
/// Largest area scored as a whole. A bigger rendition is searched on its centre, this many
/// pixels at most: one score takes about 150 bytes a pixel and 0.6 s of CPU a megapixel, so a
/// whole 16384x16384 rendition would need 40 GB, while a 1024x1024 centre (150 MB) judges
/// the encoder's settings on a photo about as the whole does.
pub const MAX_SCORED_PIXELS: u64 = 1024 * 1024;

/// What an automatic-quality encode chose.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoEncoded {
    /// The file, with the metadata the options ask for.
    pub bytes: Vec<u8>,
    /// The quality it was encoded at; `None` for a lossless output, which has none to choose.
    pub quality: Option<u8>,
    /// Its SSIMULACRA2 score against the pixels given (their centre, for large images).
    pub score: f64,
}

/// SSIMULACRA2 of `distorted` against `reference` (same size, 8x8 at least): 100 is
/// identical, 90 visually lossless, 70 high, 50 medium, 30 low. Transparent pixels are judged
/// as they would look on `background`.
pub fn score(reference: &Image, distorted: &Image, background: Color) -> Result<f64, Error> {
    let (w, h) = (reference.width(), reference.height());
    if (distorted.width(), distorted.height()) != (w, h) {
        return Err(score_error(format!(
            "the images differ in size: {w}x{h} and {}x{}",
            distorted.width(),
            distorted.height()
        )));
    }
    let a = linear_input(reference, background)?;
    let b = linear_input(distorted, background)?;
    compute_frame_ssimulacra2(a, b).map_err(|e| score_error(e.to_string()))
}

fn score_error(message: String) -> Error {
    Error::Encode {
        format: Format::Png,
        message: format!("SSIMULACRA2: {message}"),
    }
}

/// The sRGB pixels as the metric's input, opaque.
fn linear_input(img: &Image, background: Color) -> Result<Rgb, Error> {
    let flattened;
    let rgb: &RgbImage = match img {
        Image::ImageRgb8(buf) => buf,
        Image::ImageRgba8(buf) => {
            flattened = flatten(buf, background);
            &flattened
        }
        other => {
            return Err(score_error(format!(
                "expects 8-bit RGB or RGBA, got {:?}",
                other.color()
            )));
        }
    };
    let data = rgb
        .as_raw()
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]].map(|c| f32::from(c) / 255.0))
        .collect();
    Rgb::new(
        data,
        rgb.width() as usize,
        rgb.height() as usize,
        TransferCharacteristic::SRGB,
        ColorPrimaries::BT709,
    )
    .map_err(|e| score_error(format!("{e:?}")))
}

/// Encodes `img` at the lowest quality whose result scores at least `target`, found with at
/// most [`MAX_TRIALS`] trial encodes (each decoded and scored). When even quality 100 stays
/// under the target, the best quality tried is kept. Lossless and PNG outputs have no quality
/// to choose: they are encoded as asked and scored.
pub fn encode_auto(img: &Image, opts: &EncodeOptions, target: f64) -> Result<AutoEncoded, Error> {
    let sample = scored_area(img);
    let sample = sample.as_ref().unwrap_or(img);
    let lossy = matches!(opts.format, Format::Jpeg | Format::Avif)
        || (opts.format == Format::Webp && !opts.lossless);
    if !lossy {
        let bytes = encode_pixels(img, opts, opts.quality)?;
        let score = trial_score(sample, &bytes, opts)?;
        return Ok(AutoEncoded {
            bytes: with_metadata(bytes, img, opts)?,
            quality: None,
            score,
        });
    }
    let mut search = Search::new(opts.format, target);
    while let Some(quality) = search.next() {
        let bytes = encode_pixels(sample, opts, quality)?;
        let score = trial_score(sample, &bytes, opts)?;
        search.record(quality, score, bytes);
    }
    let (quality, score, sample_bytes) = search.best().ok_or_else(|| Error::Encode {
        format: opts.format,
        message: "automatic quality: no trial encode was made".into(),
    })?;
    // The trial's file is the result when the whole image was scored; a centre only chose
    // the quality for the whole.
    let bytes = if std::ptr::eq(sample, img) {
        sample_bytes
    } else {
        encode_pixels(img, opts, quality)?
    };
    Ok(AutoEncoded {
        bytes: with_metadata(bytes, img, opts)?,
        quality: Some(quality),
        score,
    })
}

/// The centre of an image larger than [`MAX_SCORED_PIXELS`], on the 16-pixel grid JPEG's
/// 4:2:0 blocks fall on so the crop compresses as it does in place; `None` for smaller ones.
fn scored_area(img: &Image) -> Option<Image> {
    let (w, h) = (img.width(), img.height());
    if u64::from(w) * u64::from(h) <= MAX_SCORED_PIXELS {
        return None;
    }
    let side = (MAX_SCORED_PIXELS as f64).sqrt() as u32;
    let (cw, ch) = (w.min(side), h.min(side));
    // A long thin image gets the rest of the budget along its long side.
    let (cw, ch) = if cw < side {
        (cw, h.min((MAX_SCORED_PIXELS / u64::from(cw)) as u32))
    } else if ch < side {
        (w.min((MAX_SCORED_PIXELS / u64::from(ch)) as u32), ch)
    } else {
        (cw, ch)
    };
    let x = ((w - cw) / 2) & !15;
    let y = ((h - ch) / 2) & !15;
    Some(img.crop_imm(x, y, cw, ch))
}

/// Decodes a trial encode and scores it against what it was made from.
fn trial_score(reference: &Image, bytes: &[u8], opts: &EncodeOptions) -> Result<f64, Error> {
    let pixels = u64::from(reference.width()) * u64::from(reference.height());
    let limits = Limits {
        max_bytes: bytes.len() as u64,
        max_pixels: pixels,
        max_side: reference.width().max(reference.height()),
        max_frames: 1,
    };
    let decoded = crate::decode(bytes, &limits, None)?;
    let decoded = match (&decoded, reference) {
        (Image::ImageRgb8(_), Image::ImageRgba8(_)) => Image::ImageRgba8(decoded.to_rgba8()),
        _ => decoded,
    };
    score(reference, &decoded, opts.background)
}

/// The quality search: a bracket narrowed by interpolating between the qualities tried.
struct Search {
    format: Format,
    target: f64,
    low: u8,
    high: u8,
    tried: Vec<(u8, f64, Vec<u8>)>,
}

impl Search {
    fn new(format: Format, target: f64) -> Search {
        Search {
            format,
            target,
            low: 1,
            high: 100,
            tried: Vec::new(),
        }
    }

    /// Where the format's score usually crosses the target on photos at web sizes, so the
    /// bracket closes in a few steps: scores rise about a point a quality step between 40
    /// and 90 (AVIF: over one from 20 to 50, where libavif's scale reaches 70).
    fn first_guess(&self) -> u8 {
        let offset = match self.format {
            Format::Avif => -25.0,
            Format::Webp => 8.0,
            _ => 4.0,
        };
        (self.target + offset).round().clamp(20.0, 95.0) as u8
    }

    fn next(&self) -> Option<u8> {
        if self.tried.len() >= MAX_TRIALS || self.low > self.high {
            return None;
        }
        let below = self
            .tried
            .iter()
            .filter(|t| t.1 < self.target)
            .max_by_key(|t| t.0);
        let above = self
            .tried
            .iter()
            .filter(|t| t.1 >= self.target)
            .min_by_key(|t| t.0);
        let q = match (below, above) {
            (None, None) => f64::from(self.first_guess()),
            // Interpolated between the two closest qualities on either side of the target,
            // kept to the middle half of a wide bracket: where the score is flat on one side
            // (WebP's often is) plain interpolation creeps along that side a step at a time.
            (Some(b), Some(a)) => {
                if a.0 <= b.0 + 1 {
                    return None;
                }
                let (lo, hi) = (f64::from(b.0), f64::from(a.0));
                let t = (self.target - b.1) / (a.1 - b.1).max(1e-6);
                let q = lo + t * (hi - lo);
                if hi - lo > 4.0 {
                    q.clamp(lo + (hi - lo) / 4.0, hi - (hi - lo) / 4.0)
                } else {
                    q
                }
            }
            // On one side of the target only: extrapolated along the line through the two
            // closest tries (at least a quarter point a quality step, so a flat stretch does
            // not send it to the end of the scale), else a guessed slope; at least 5
            // steps either way.
            (Some(b), None) => {
                let step = (self.target - b.1) / self.slope(b.0);
                f64::from(b.0) + step.max(5.0)
            }
            (None, Some(a)) => {
                let step = (a.1 - self.target) / self.slope(a.0);
                f64::from(a.0) - step.max(5.0)
            }
        };
        // The untried setting in the bracket nearest the estimate: a quality whose encoder
        // setting was tried already (AVIF's qualities come in pairs that share a quantizer)
        // would spend a trial on a file already scored.
        (self.low..=self.high)
            .filter(|&c| !self.tried.iter().any(|t| self.same_setting(t.0, c)))
            .min_by(|&a, &b| {
                (f64::from(a) - q)
                    .abs()
                    .total_cmp(&(f64::from(b) - q).abs())
            })
    }

    /// Whether two qualities make the same file: libavif maps its 0-100 onto libaom's 64
    /// quantizer levels (`((100 - q) * 63 + 50) / 100`), so neighbouring qualities often do.
    fn same_setting(&self, a: u8, b: u8) -> bool {
        match self.format {
            Format::Avif => {
                let level = |q: u8| (u32::from(100 - q.min(100)) * 63 + 50) / 100;
                level(a) == level(b)
            }
            _ => a == b,
        }
    }

    /// Score points a quality step near `quality`, from the try there and the nearest other.
    fn slope(&self, quality: u8) -> f64 {
        let here = self.tried.iter().find(|t| t.0 == quality);
        let other = self
            .tried
            .iter()
            .filter(|t| t.0 != quality)
            .min_by_key(|t| t.0.abs_diff(quality));
        match (here, other) {
            (Some(h), Some(o)) => ((h.1 - o.1) / (f64::from(h.0) - f64::from(o.0))).max(0.25),
            // From one try: AVIF's score climbs faster than a point a step where it reaches
            // the usual targets (1.5 to 2 on the bench photos between q40 and q60), so a point
            // a step would overshoot its second try by half the distance.
            _ if self.format == Format::Avif => 1.6,
            _ => 1.0,
        }
    }

    fn record(&mut self, quality: u8, score: f64, bytes: Vec<u8>) {
        if score >= self.target {
            self.high = self.high.min(quality.saturating_sub(1));
        } else {
            // Past 100 when 100 missed: the bracket is empty and the search ends.
            self.low = self.low.max(quality.saturating_add(1));
        }
        self.tried.push((quality, score, bytes));
    }

    /// The smallest file that reached the target (the lowest quality, unless scores were not
    /// monotone in quality), else the highest quality tried.
    fn best(self) -> Option<(u8, f64, Vec<u8>)> {
        let target = self.target;
        let (hit, miss): (Vec<_>, Vec<_>) = self.tried.into_iter().partition(|t| t.1 >= target);
        hit.into_iter()
            .min_by_key(|t| (t.2.len(), t.0))
            .or_else(|| miss.into_iter().max_by_key(|t| t.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a made-up encoder: `score` of a quality, bytes growing with it.
    fn run(format: Format, score: impl Fn(u8) -> f64) -> (Vec<u8>, Option<(u8, f64)>) {
        let mut search = Search::new(format, DEFAULT_TARGET);
        while let Some(q) = search.next() {
            search.record(q, score(q), vec![0; usize::from(q) * 100]);
        }
        let tried = search.tried.iter().map(|t| t.0).collect();
        (tried, search.best().map(|(q, s, _)| (q, s)))
    }

    #[test]
    fn avif_trials_never_repeat_a_quantizer() {
        // libavif's staircase (two qualities often share a quantizer, hence a file and a
        // score), with the scores the bench's foliage photo measured at the default effort,
        // which once ran the search out of tries one step short, 3.7 over the target.
        let level = |q: u8| (u32::from(100 - q) * 63 + 50) / 100;
        let measured = [
            (40, 37.9),
            (42, 41.7),
            (44, 49.4),
            (46, 52.4),
            (48, 55.2),
            (50, 58.4),
            (52, 63.9),
            (54, 65.8),
            (55, 67.8),
            (57, 69.8),
            (58, 71.7),
            (60, 73.7),
            (66, 78.3),
            (80, 85.8),
        ];
        let score = |q: u8| {
            // The score of the nearest measured quality with the same quantizer, else linear
            // between the measured ones around it.
            if let Some(m) = measured.iter().find(|m| level(m.0) == level(q)) {
                return m.1;
            }
            let upper = measured
                .iter()
                .position(|m| m.0 > q)
                .unwrap_or(measured.len() - 1);
            let (a, b) = (measured[upper.saturating_sub(1)], measured[upper]);
            a.1 + (b.1 - a.1) * (f64::from(q) - f64::from(a.0)) / f64::from(b.0 - a.0).max(1.0)
        };
        let (tried, best) = run(Format::Avif, score);
        let levels: Vec<u32> = tried.iter().map(|&q| level(q)).collect();
        let mut distinct = levels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), levels.len(), "tried {tried:?}");
        let (q, s) = best.expect("a result");
        assert!(
            (DEFAULT_TARGET..DEFAULT_TARGET + 3.0).contains(&s),
            "q{q} scored {s}, tried {tried:?}"
        );
    }

    #[test]
    fn other_formats_try_each_quality_once() {
        let (tried, best) = run(Format::Webp, |q| f64::from(q) * 0.9);
        let mut distinct = tried.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), tried.len(), "tried {tried:?}");
        assert!(tried.len() <= MAX_TRIALS);
        assert_eq!(best.map(|b| b.0), Some(78));
    }
}
