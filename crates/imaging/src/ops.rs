//! The operations of a rendition, applied in recipe order after the resize.
//!
//! Each one works on the raw 8-bit buffer of an RGB or RGBA image, in place where the size
//! does not change, and single-threaded: imgpipe runs images in parallel, not pixels.
//! Meanings follow sharp (libvips) wherever sharp has the operation, so recipes carried over
//! from sharp look the same; the docs of each variant say where they differ.

use std::sync::OnceLock;

use image::{DynamicImage, ImageBuffer, Rgb, Rgba};
use libblur::{
    BlurImage, BlurImageMut, ConvolutionMode, EdgeMode, EdgeMode2D, FastBlurChannels,
    GaussianBlurParams, ThreadingPolicy,
};
use serde::{Deserialize, Serialize};

use crate::{Color, Error, Image};

/// One operation of a rendition, applied in order after the resize.
/// JSON form: `{"op": "blur", "sigma": 2}`.
///
/// Every operation keeps the image's layout (RGB stays RGB, RGBA stays RGBA) and leaves alpha
/// untouched, except that [`Operation::Rotate`] may add alpha (see there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Operation {
    /// Clockwise degrees, any finite value (taken mod 360, so -90 is 270).
    ///
    /// Exact multiples of 90 are lossless. Other angles enlarge the canvas to hold the whole
    /// rotated image, as sharp does, sample bilinearly and fill the corners with `background`:
    /// by default transparent if the image has alpha, else black (sharp always defaults to
    /// black). An RGB image rotated onto a background that is not opaque gains alpha.
    Rotate {
        angle: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        background: Option<Color>,
    },
    /// Mirror top to bottom.
    Flip,
    /// Mirror left to right.
    Flop,
    /// Extract a region; it must lie inside the image.
    Crop {
        left: u32,
        top: u32,
        width: u32,
        height: u32,
    },
    /// Replace each colour by the grey of the same luminance, as sharp does: Rec. 709 weights
    /// on linear light, encoded back to sRGB. Keeps three channels (R = G = B).
    Grayscale,
    /// The classic sepia matrix (rows .393 .769 .189 / .349 .686 .168 / .272 .534 .131),
    /// clamped.
    Sepia,
    /// Gaussian blur, sigma in pixels (0.3..=100); RGBA is blurred premultiplied.
    Blur { sigma: f32 },
    /// Unsharp mask: `v + amount * (v - gaussian(v, sigma))` on R, G and B; sigma 0.3..=10,
    /// amount 0..=10. sharp sharpens only the L* channel, so strong settings may fringe
    /// colour edges a little more here.
    Sharpen {
        sigma: f32,
        #[serde(default = "one")]
        amount: f32,
    },
    /// Multiply R, G and B by `factor` (0..=10); 1.0 = unchanged. sharp multiplies L*
    /// instead, which keeps hues; this is close for factors near 1.
    Brightness { factor: f32 },
    /// Scale distance from mid-grey, `(v - 128) * factor + 128` (0..=10); 1.0 = unchanged.
    /// The same as sharp's `linear(factor, 128 - 128 * factor)`.
    Contrast { factor: f32 },
    /// Scale colourfulness by mixing with the pixel's grey (see [`Operation::Grayscale`]):
    /// `grey + (v - grey) * factor` (0..=10); 0.0 = grey, 1.0 = unchanged.
    Saturation { factor: f32 },
    /// Rotate hue by degrees with the matrix of CSS `hue-rotate()`; positive turns red towards
    /// yellow and green, as in sharp. sharp turns LCh hue, which keeps lightness exactly;
    /// this keeps greys exact and lightness only roughly, so saturated colours can come out
    /// darker.
    Hue { degrees: f32 },
    /// `255 * (v / 255) ^ (1 / gamma)` (0.1..=10): above 1 brightens midtones, 1.0 =
    /// unchanged. Unlike sharp's gamma, which only brackets its resize.
    Gamma { gamma: f32 },
    /// `255 - v` on R, G and B; alpha is kept (sharp's `negate({ alpha: false })`).
    Invert,
    /// Keep each pixel's lightness and take the colour's chroma, as sharp does: L* from the
    /// pixel, a* and b* from `color` (whose alpha is ignored), clipped to sRGB. So black and
    /// white come out tinted too, as they do in sharp.
    Tint { color: Color },
    /// Composite another of the owner's images over this one, e.g. a logo as a watermark
    /// (overlay.rs): `image` is that image's id, whose original the pipeline's Filter step
    /// loads (a PNG with alpha, typically); `scale` its width as a share of this image's
    /// (0.01..=1), `margin` pixels from the edges (..=10000), `opacity` 0..=1 times its alpha.
    Overlay {
        image: String,
        #[serde(default = "south_east")]
        gravity: crate::Gravity,
        #[serde(default = "sixteen")]
        margin: u32,
        #[serde(default = "one")]
        opacity: f32,
        #[serde(default = "a_fifth")]
        scale: f32,
    },
}

fn one() -> f32 {
    1.0
}

fn south_east() -> crate::Gravity {
    crate::Gravity::SouthEast
}

fn sixteen() -> u32 {
    16
}

fn a_fifth() -> f32 {
    0.2
}

impl Operation {
    /// Checks parameter ranges. On error returns (parameter name, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match *self {
            Operation::Rotate { angle, .. } => finite("angle", angle),
            Operation::Crop { width, height, .. } => {
                if width == 0 {
                    return Err(("width", "must be at least 1".to_owned()));
                }
                if height == 0 {
                    return Err(("height", "must be at least 1".to_owned()));
                }
                Ok(())
            }
            Operation::Blur { sigma } => within("sigma", sigma, 0.3, 100.0),
            Operation::Sharpen { sigma, amount } => {
                within("sigma", sigma, 0.3, 10.0)?;
                within("amount", amount, 0.0, 10.0)
            }
            Operation::Brightness { factor }
            | Operation::Contrast { factor }
            | Operation::Saturation { factor } => within("factor", factor, 0.0, 10.0),
            Operation::Hue { degrees } => finite("degrees", degrees),
            Operation::Gamma { gamma } => within("gamma", gamma, 0.1, 10.0),
            Operation::Overlay {
                ref image,
                margin,
                opacity,
                scale,
                ..
            } => {
                let id_ok = !image.is_empty()
                    && image.len() <= 128
                    && !image.starts_with('.')
                    && image
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !id_ok {
                    return Err((
                        "image",
                        "must be an image id (1-128 of A-Z a-z 0-9 - _ .)".into(),
                    ));
                }
                if margin > 10_000 {
                    return Err(("margin", "must be 0..=10000".to_owned()));
                }
                within("opacity", opacity, 0.0, 1.0)?;
                within("scale", scale, 0.01, 1.0)
            }
            Operation::Flip
            | Operation::Flop
            | Operation::Grayscale
            | Operation::Sepia
            | Operation::Invert
            | Operation::Tint { .. } => Ok(()),
        }
    }
}

fn finite(field: &'static str, v: f32) -> Result<(), (&'static str, String)> {
    if v.is_finite() {
        Ok(())
    } else {
        Err((field, "must be a finite number".to_owned()))
    }
}

/// NaN fails `contains`, so it is refused along with infinities.
fn within(field: &'static str, v: f32, lo: f32, hi: f32) -> Result<(), (&'static str, String)> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err((field, format!("must be {lo}..={hi}")))
    }
}

/// Applies one operation.
pub fn apply(img: Image, op: &Operation) -> Result<Image, Error> {
    // Recipes are validated when loaded, but a value that slipped through must become an
    // error here rather than reach libblur's asserts.
    op.validate()
        .map_err(|(field, msg)| Error::InvalidOperation(format!("{field}: {msg}")))?;
    match img {
        DynamicImage::ImageRgb8(buf) => {
            let (w, h) = buf.dimensions();
            apply_to::<3>(buf.into_raw(), w, h, op)
        }
        DynamicImage::ImageRgba8(buf) => {
            let (w, h) = buf.dimensions();
            apply_to::<4>(buf.into_raw(), w, h, op)
        }
        // The crate only ever makes the two layouts above; converting anything else is
        // cheaper for a caller than an error.
        other if other.color().has_alpha() => apply(DynamicImage::ImageRgba8(other.to_rgba8()), op),
        other => apply(DynamicImage::ImageRgb8(other.to_rgb8()), op),
    }
}

/// `raw` holds `w * h` pixels of `N` (3 or 4) channels.
fn apply_to<const N: usize>(
    mut raw: Vec<u8>,
    w: u32,
    h: u32,
    op: &Operation,
) -> Result<Image, Error> {
    raw.truncate(w as usize * h as usize * N);
    match *op {
        Operation::Overlay { ref image, .. } => {
            return Err(Error::InvalidOperation(format!(
                "overlay of {image}: the image to put over is loaded by the pipeline (overlay::overlay)"
            )));
        }
        Operation::Rotate { angle, background } => {
            return rotate::<N>(raw, w, h, angle, background);
        }
        Operation::Crop {
            left,
            top,
            width,
            height,
        } => {
            let out = crop::<N>(&raw, (w, h), (left, top, width, height))?;
            return image_from::<N>(out, width, height);
        }
        Operation::Flip => flip::<N>(&mut raw, w, h),
        Operation::Flop => flop::<N>(&mut raw, w),
        Operation::Grayscale => {
            let grey = GreyTables::get();
            map_rgb::<N>(&mut raw, |r, g, b| [grey.of(r, g, b); 3]);
        }
        Operation::Sepia => recombine::<N>(&mut raw, SEPIA),
        Operation::Blur { sigma } => raw = gaussian::<N>(&raw, w, h, sigma)?,
        Operation::Sharpen { sigma, amount } => sharpen::<N>(&mut raw, w, h, sigma, amount)?,
        Operation::Brightness { factor } => apply_lut::<N>(&mut raw, &lut(|v| v * factor)),
        Operation::Contrast { factor } => {
            apply_lut::<N>(&mut raw, &lut(|v| (v - 128.0) * factor + 128.0));
        }
        Operation::Saturation { factor } => saturate::<N>(&mut raw, factor),
        Operation::Hue { degrees } => rotate_hue::<N>(&mut raw, degrees),
        Operation::Gamma { gamma } => {
            let exponent = 1.0 / gamma;
            apply_lut::<N>(&mut raw, &lut(|v| 255.0 * (v / 255.0).powf(exponent)));
        }
        Operation::Invert => apply_lut::<N>(&mut raw, &lut(|v| 255.0 - v)),
        Operation::Tint { color } => tint::<N>(&mut raw, color),
    }
    image_from::<N>(raw, w, h)
}

fn image_from<const N: usize>(raw: Vec<u8>, w: u32, h: u32) -> Result<Image, Error> {
    let img = if N == 4 {
        ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, raw).map(DynamicImage::ImageRgba8)
    } else {
        ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, raw).map(DynamicImage::ImageRgb8)
    };
    img.ok_or_else(|| Error::InvalidOperation(format!("pixel buffer does not fit {w}x{h}")))
}

// ---- Geometry -------------------------------------------------------------------------------

/// An arbitrary rotation grows the canvas towards (w + h)^2 / 2 pixels, beyond what the decode
/// limits bound, so it has its own ceiling.
const MAX_ROTATED_PIXELS: f64 = 100_000_000.0;

/// Pixels per side of the blocks the 90-degree rotations copy, so that both the rows read and
/// the columns written stay in cache.
const TILE: usize = 64;

fn rotate<const N: usize>(
    mut raw: Vec<u8>,
    w: u32,
    h: u32,
    angle: f32,
    background: Option<Color>,
) -> Result<Image, Error> {
    // Exact comparisons on purpose: like sharp, only true multiples of 90 take the lossless
    // path. rem_euclid can round a tiny negative angle up to 360.0 itself.
    let deg = angle.rem_euclid(360.0);
    if deg == 0.0 || deg == 360.0 {
        image_from::<N>(raw, w, h)
    } else if deg == 90.0 {
        image_from::<N>(rotate_quarter::<N>(&raw, w, h, true), h, w)
    } else if deg == 180.0 {
        raw.as_chunks_mut::<N>().0.reverse();
        image_from::<N>(raw, w, h)
    } else if deg == 270.0 {
        image_from::<N>(rotate_quarter::<N>(&raw, w, h, false), h, w)
    } else if w == 0 || h == 0 {
        image_from::<N>(raw, w, h)
    } else {
        let bg = background.unwrap_or(if N == 4 {
            Color::TRANSPARENT
        } else {
            Color::BLACK
        });
        let (ow, oh) = rotated_canvas(w, h, deg)?;
        if N == 4 || bg.0[3] < 255 {
            image_from::<4>(
                rotate_bilinear::<N, 4>(&raw, (w, h), (ow, oh), deg, bg),
                ow,
                oh,
            )
        } else {
            image_from::<3>(
                rotate_bilinear::<N, 3>(&raw, (w, h), (ow, oh), deg, bg),
                ow,
                oh,
            )
        }
    }
}

/// Rotates by 90 degrees, clockwise or counter-clockwise; the result is `h` wide, `w` high.
fn rotate_quarter<const N: usize>(raw: &[u8], w: u32, h: u32, clockwise: bool) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let src = raw.as_chunks::<N>().0;
    let mut out = vec![[0u8; N]; w * h];
    for ty in (0..h).step_by(TILE) {
        for tx in (0..w).step_by(TILE) {
            for y in ty..(ty + TILE).min(h) {
                for x in tx..(tx + TILE).min(w) {
                    let to = if clockwise {
                        x * h + (h - 1 - y)
                    } else {
                        (w - 1 - x) * h + y
                    };
                    out[to] = src[y * w + x];
                }
            }
        }
    }
    out.into_flattened()
}

/// Size of the canvas that holds a `w` x `h` image rotated by `deg`, refused above
/// [`MAX_ROTATED_PIXELS`].
fn rotated_canvas(w: u32, h: u32, deg: f32) -> Result<(u32, u32), Error> {
    let (sin, cos) = f64::from(deg).to_radians().sin_cos();
    let (sin, cos) = (sin.abs(), cos.abs());
    let (wf, hf) = (f64::from(w), f64::from(h));
    // The epsilon keeps rounding noise in sin/cos from adding a whole row or column.
    let ow = (wf * cos + hf * sin - 1e-9).ceil().max(1.0);
    let oh = (wf * sin + hf * cos - 1e-9).ceil().max(1.0);
    if ow * oh > MAX_ROTATED_PIXELS {
        return Err(Error::InvalidOperation(format!(
            "rotating {w}x{h} by {deg} degrees needs a {ow}x{oh} canvas; the limit is \
             {MAX_ROTATED_PIXELS} pixels"
        )));
    }
    Ok((ow as u32, oh as u32))
}

/// Rotates clockwise by `deg` onto an `ow` x `oh` canvas by inverse mapping with bilinear
/// sampling. Hand-written because the crates that do this for `DynamicImage` (imageproc) pull
/// in far more than one function's worth of dependencies. `M` is 3 only when the image and
/// the background are both opaque.
fn rotate_bilinear<const N: usize, const M: usize>(
    raw: &[u8],
    (w, h): (u32, u32),
    (ow, oh): (u32, u32),
    deg: f32,
    bg: Color,
) -> Vec<u8> {
    let src = raw.as_chunks::<N>().0;
    let (w, h, ow, oh) = (w as usize, h as usize, ow as usize, oh as usize);
    let (sin, cos) = deg.to_radians().sin_cos();
    let rgba = |p: &[u8; N]| [p[0], p[1], p[2], p.get(3).copied().unwrap_or(255)];
    let tap = |x: isize, y: isize| {
        if x < 0 || y < 0 || x as usize >= w || y as usize >= h {
            bg.0
        } else {
            rgba(&src[y as usize * w + x as usize])
        }
    };
    let bg_out: [u8; M] = std::array::from_fn(|k| bg.0[k]);
    // Pixel centres sit at +0.5; the two images share their centre.
    let (cx, cy) = (w as f32 / 2.0 - 0.5, h as f32 / 2.0 - 0.5);
    let (half_ow, half_oh) = (ow as f32 / 2.0, oh as f32 / 2.0);
    let (wf, hf) = (w as f32, h as f32);

    let mut out = vec![[0u8; M]; ow * oh];
    for (y, row) in out.chunks_exact_mut(ow).enumerate() {
        let dy = y as f32 + 0.5 - half_oh;
        for (x, o) in row.iter_mut().enumerate() {
            let dx = x as f32 + 0.5 - half_ow;
            // The inverse of the clockwise rotation (y points down).
            let u = dx * cos + dy * sin + cx;
            let v = dy * cos - dx * sin + cy;
            if !(u > -1.0 && v > -1.0 && u < wf && v < hf) {
                *o = bg_out;
                continue;
            }
            // Both are above -1, so truncating after a shift of one is floor, without the libm
            // call `floor` is on baseline x86-64.
            let (x0, y0) = ((u + 1.0) as isize - 1, (v + 1.0) as isize - 1);
            let (fx, fy) = (u - x0 as f32, v - y0 as f32);
            let weights = [
                (1.0 - fx) * (1.0 - fy),
                fx * (1.0 - fy),
                (1.0 - fx) * fy,
                fx * fy,
            ];
            let quad = if x0 >= 0 && y0 >= 0 && (x0 as usize) + 1 < w && (y0 as usize) + 1 < h {
                let i = y0 as usize * w + x0 as usize;
                [src[i], src[i + 1], src[i + w], src[i + w + 1]].map(|p| rgba(&p))
            } else {
                [
                    tap(x0, y0),
                    tap(x0 + 1, y0),
                    tap(x0, y0 + 1),
                    tap(x0 + 1, y0 + 1),
                ]
            };
            *o = bilinear(quad, weights);
        }
    }
    out.into_flattened()
}

/// Mixes four RGBA samples. Where any is not opaque the mix is premultiplied, so a
/// transparent background (or transparent source pixels) does not darken the anti-aliased
/// edge.
fn bilinear<const M: usize>(quad: [[u8; 4]; 4], weights: [f32; 4]) -> [u8; M] {
    let mut acc = [0f32; 4];
    if quad.iter().all(|p| p[3] == 255) {
        for (p, wt) in quad.iter().zip(weights) {
            for (a, &c) in acc.iter_mut().zip(p) {
                *a += f32::from(c) * wt;
            }
        }
    } else {
        for (p, wt) in quad.iter().zip(weights) {
            let alpha = f32::from(p[3]) * wt;
            for (a, &c) in acc[..3].iter_mut().zip(p) {
                *a += f32::from(c) * alpha;
            }
            acc[3] += alpha;
        }
        if acc[3] <= 0.0 {
            return [0; M];
        }
        let unpremultiply = 1.0 / acc[3];
        for a in &mut acc[..3] {
            *a *= unpremultiply;
        }
    }
    // Non-negative, so adding a half and letting the saturating cast truncate rounds.
    std::array::from_fn(|k| (acc[k] + 0.5) as u8)
}

fn flip<const N: usize>(raw: &mut [u8], w: u32, h: u32) {
    let row = w as usize * N;
    let h = h as usize;
    for y in 0..h / 2 {
        let (top, bottom) = raw.split_at_mut((h - 1 - y) * row);
        top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
    }
}

fn flop<const N: usize>(raw: &mut [u8], w: u32) {
    let row = w as usize * N;
    if row == 0 {
        return;
    }
    for line in raw.chunks_exact_mut(row) {
        line.as_chunks_mut::<N>().0.reverse();
    }
}

fn crop<const N: usize>(
    raw: &[u8],
    (w, h): (u32, u32),
    (left, top, width, height): (u32, u32, u32, u32),
) -> Result<Vec<u8>, Error> {
    if u64::from(left) + u64::from(width) > u64::from(w)
        || u64::from(top) + u64::from(height) > u64::from(h)
    {
        return Err(Error::InvalidOperation(format!(
            "crop {width}x{height}+{left}+{top} falls outside the {w}x{h} image"
        )));
    }
    let (w, left, top) = (w as usize, left as usize, top as usize);
    let (width, height) = (width as usize, height as usize);
    let mut out = Vec::with_capacity(width * height * N);
    // w >= left + width >= 1 here, so the chunk size is not zero.
    for line in raw.chunks_exact(w * N).skip(top).take(height) {
        out.extend_from_slice(&line[left * N..(left + width) * N]);
    }
    Ok(out)
}

// ---- Point and colour operations --------------------------------------------------------------

const SEPIA: [[f32; 3]; 3] = [
    [0.393, 0.769, 0.189],
    [0.349, 0.686, 0.168],
    [0.272, 0.534, 0.131],
];

/// Tabulates a per-channel function of the 8-bit value, rounded and clamped.
fn lut(f: impl Fn(f32) -> f32) -> [u8; 256] {
    std::array::from_fn(|v| f(v as f32).round().clamp(0.0, 255.0) as u8)
}

/// Maps R, G and B through `lut`, leaving alpha alone.
fn apply_lut<const N: usize>(raw: &mut [u8], lut: &[u8; 256]) {
    if N == 3 {
        for v in raw {
            *v = lut[usize::from(*v)];
        }
    } else {
        for p in raw.as_chunks_mut::<N>().0 {
            for v in &mut p[..3] {
                *v = lut[usize::from(*v)];
            }
        }
    }
}

/// Replaces each pixel's R, G and B by `f(r, g, b)`, leaving alpha alone.
fn map_rgb<const N: usize>(raw: &mut [u8], f: impl Fn(u8, u8, u8) -> [u8; 3]) {
    for p in raw.as_chunks_mut::<N>().0 {
        let [r, g, b] = f(p[0], p[1], p[2]);
        p[0] = r;
        p[1] = g;
        p[2] = b;
    }
}

/// Multiplies R, G and B by a 3x3 matrix (rows give the output channels), in 12-bit fixed
/// point, clamped.
fn recombine<const N: usize>(raw: &mut [u8], matrix: [[f32; 3]; 3]) {
    let q = matrix.map(|row| row.map(|v| (v * 4096.0).round() as i32));
    map_rgb::<N>(raw, |r, g, b| {
        let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
        q.map(|[kr, kg, kb]| ((kr * r + kg * g + kb * b + 2048) >> 12).clamp(0, 255) as u8)
    });
}

fn saturate<const N: usize>(raw: &mut [u8], factor: f32) {
    let grey = GreyTables::get();
    let k = (factor * 4096.0).round() as i32;
    map_rgb::<N>(raw, |r, g, b| {
        let y = i32::from(grey.of(r, g, b));
        let mix = |v: u8| (y + (((i32::from(v) - y) * k + 2048) >> 12)).clamp(0, 255) as u8;
        [mix(r), mix(g), mix(b)]
    });
}

fn rotate_hue<const N: usize>(raw: &mut [u8], degrees: f32) {
    let deg = degrees.rem_euclid(360.0);
    if deg == 0.0 || deg == 360.0 {
        return;
    }
    let (s, c) = deg.to_radians().sin_cos();
    // feColorMatrix type="hueRotate" from the W3C Filter Effects spec: a plain matrix, so no
    // per-pixel colour-space conversion, that keeps greys grey and luminance roughly
    // constant, which sharp's LCh rotation does exactly.
    let matrix = [
        [
            0.213 + c * 0.787 - s * 0.213,
            0.715 - c * 0.715 - s * 0.715,
            0.072 - c * 0.072 + s * 0.928,
        ],
        [
            0.213 - c * 0.213 + s * 0.143,
            0.715 + c * 0.285 + s * 0.140,
            0.072 - c * 0.072 - s * 0.283,
        ],
        [
            0.213 - c * 0.213 - s * 0.787,
            0.715 - c * 0.715 + s * 0.715,
            0.072 + c * 0.928 + s * 0.072,
        ],
    ];
    recombine::<N>(raw, matrix);
}

// ---- Luminance: grayscale, saturation, tint -----------------------------------------------------

/// Rec. 709 luminance weights in 15-bit fixed point (they sum to 32768).
const LUMA_WEIGHTS: [u32; 3] = [6966, 23436, 2366];

/// Lookup tables between sRGB codes and 16-bit linear light. They never change, so they are
/// built once per process (about a millisecond) rather than per image.
struct GreyTables {
    /// sRGB code -> linear light, 0..=65535.
    to_linear: [u16; 256],
    /// Linear light, 0..=65535 -> nearest sRGB code.
    to_srgb: [u8; 65536],
}

impl GreyTables {
    fn get() -> &'static GreyTables {
        static TABLES: OnceLock<Box<GreyTables>> = OnceLock::new();
        TABLES.get_or_init(|| {
            Box::new(GreyTables {
                to_linear: std::array::from_fn(|v| {
                    (srgb_to_linear(v as f64 / 255.0) * 65535.0).round() as u16
                }),
                to_srgb: nearest_srgb_codes(),
            })
        })
    }

    /// Relative luminance (Y) of an sRGB colour, as 16-bit linear light.
    fn luminance(&self, r: u8, g: u8, b: u8) -> u16 {
        let [kr, kg, kb] = LUMA_WEIGHTS;
        let y = kr * u32::from(self.to_linear[usize::from(r)])
            + kg * u32::from(self.to_linear[usize::from(g)])
            + kb * u32::from(self.to_linear[usize::from(b)]);
        // At most 32768 * 65535 + 16384, so this fits u16.
        ((y + 16384) >> 15) as u16
    }

    /// The sRGB grey with the same luminance; a grey input comes back unchanged.
    fn of(&self, r: u8, g: u8, b: u8) -> u8 {
        self.to_srgb[usize::from(self.luminance(r, g, b))]
    }
}

/// For every 16-bit linear value, the sRGB code whose own linear value is nearest in sRGB
/// terms: the 255 midpoints between codes, mapped to linear once, split the range, which
/// spares 65536 `powf` calls.
fn nearest_srgb_codes() -> [u8; 65536] {
    let midpoints: [f64; 255] =
        std::array::from_fn(|k| srgb_to_linear((k as f64 + 0.5) / 255.0) * 65535.0);
    let mut table = [0u8; 65536];
    let mut code = 0;
    for (l, slot) in table.iter_mut().enumerate() {
        while code < midpoints.len() && l as f64 > midpoints[code] {
            code += 1;
        }
        *slot = code as u8;
    }
    table
}

fn srgb_to_linear(v: f64) -> f64 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(v: f64) -> f64 {
    if v <= 0.003_130_8 {
        v * 12.92
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    }
}

/// D65 white in XYZ, as libvips uses for sRGB <-> Lab.
const WHITE: [f64; 3] = [0.950_47, 1.0, 1.088_83];

/// CIE Lab's companding function and its inverse.
fn lab_f(t: f64) -> f64 {
    const D: f64 = 6.0 / 29.0;
    if t > D * D * D {
        t.cbrt()
    } else {
        t / (3.0 * D * D) + 4.0 / 29.0
    }
}

fn lab_f_inverse(f: f64) -> f64 {
    const D: f64 = 6.0 / 29.0;
    if f > D {
        f * f * f
    } else {
        3.0 * D * D * (f - 4.0 / 29.0)
    }
}

/// Buckets of luminance the tint table has: plenty for a smooth ramp, cheap to build per call.
const TINT_STEPS: usize = 4096;

fn tint<const N: usize>(raw: &mut [u8], color: Color) {
    let grey = GreyTables::get();
    let [r, g, b, _] = color.0.map(|v| srgb_to_linear(f64::from(v) / 255.0));
    let x = 0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b;
    let z = 0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b;
    let fy = lab_f(y / WHITE[1]);
    let a_star = 500.0 * (lab_f(x / WHITE[0]) - fy);
    let b_star = 200.0 * (fy - lab_f(z / WHITE[2]));
    // With a* and b* fixed the result depends only on the pixel's luminance, so it is
    // tabulated over luminance once per call instead of converting every pixel through Lab.
    let table: Vec<[u8; 3]> = (0..TINT_STEPS)
        .map(|i| {
            let y = (i as f64 + 0.5) / TINT_STEPS as f64;
            let fy = lab_f(y);
            let x = WHITE[0] * lab_f_inverse(fy + a_star / 500.0);
            let z = WHITE[2] * lab_f_inverse(fy - b_star / 200.0);
            let rgb = [
                3.240_454_2 * x - 1.537_138_5 * y - 0.498_531_4 * z,
                -0.969_266_0 * x + 1.876_010_8 * y + 0.041_556_0 * z,
                0.055_643_4 * x - 0.204_025_9 * y + 1.057_225_2 * z,
            ];
            rgb.map(|v| (linear_to_srgb(v.clamp(0.0, 1.0)) * 255.0).round() as u8)
        })
        .collect();
    let shift = 16 - TINT_STEPS.trailing_zeros();
    map_rgb::<N>(raw, |r, g, b| {
        let bucket = usize::from(grey.luminance(r, g, b) >> shift);
        table.get(bucket).copied().unwrap_or([r, g, b])
    });
}

// ---- Convolution ------------------------------------------------------------------------------

/// Repeat edge pixels, so a blur does not darken the borders.
const EDGES: EdgeMode2D = EdgeMode2D::new(EdgeMode::Clamp);

/// f32 weights and accumulators. libblur's fixed-point mode quantises its kernels so that they
/// no longer sum to one: flat areas darken by about 2% at sigma 0.3 and at 40 and above.
/// Exact costs about the same at small sigmas and up to 1.5x at sigma 10.
const CONVOLUTION: ConvolutionMode = ConvolutionMode::Exact;

fn blur_failed(e: libblur::BlurError) -> Error {
    Error::InvalidOperation(format!("blur failed: {e}"))
}

/// A Gaussian-blurred copy of the image, same layout.
fn gaussian<const N: usize>(raw: &[u8], w: u32, h: u32, sigma: f32) -> Result<Vec<u8>, Error> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let params = GaussianBlurParams::new_from_sigma(f64::from(sigma));
    if N == 4 && raw.as_chunks::<4>().0.iter().any(|p| p[3] != 255) {
        return gaussian_premultiplied(raw, w, h, params);
    }
    let channels = if N == 4 {
        FastBlurChannels::Channels4
    } else {
        FastBlurChannels::Channels3
    };
    let mut out = vec![0u8; raw.len()];
    libblur::gaussian_blur(
        &BlurImage::borrow(raw, w, h, channels),
        &mut BlurImageMut::borrow(&mut out, w, h, channels),
        params,
        EDGES,
        ThreadingPolicy::Single,
        CONVOLUTION,
    )
    .map_err(blur_failed)?;
    if N == 4 {
        // Opaque in, opaque out, whatever rounding did to the alpha plane.
        for p in out.as_chunks_mut::<4>().0 {
            p[3] = 255;
        }
    }
    Ok(out)
}

/// Blurs RGBA with colour weighted by alpha, so invisible pixels (often black or garbage)
/// do not bleed into visible edges, as sharp does. Premultiplied in 8 bits, like a browser's
/// canvas: the straight colour of faint pixels comes back in steps of 255 / alpha, but once
/// composited the error stays under half a level. 16 bits would be exact but are about ten
/// times slower through libblur's exact path.
fn gaussian_premultiplied(
    raw: &[u8],
    w: u32,
    h: u32,
    params: GaussianBlurParams,
) -> Result<Vec<u8>, Error> {
    let mut pm = raw.to_vec();
    for p in pm.as_chunks_mut::<4>().0 {
        let a = u32::from(p[3]);
        for c in &mut p[..3] {
            *c = ((u32::from(*c) * a + 127) / 255) as u8;
        }
    }
    let mut out = vec![0u8; raw.len()];
    libblur::gaussian_blur(
        &BlurImage::borrow(&pm, w, h, FastBlurChannels::Channels4),
        &mut BlurImageMut::borrow(&mut out, w, h, FastBlurChannels::Channels4),
        params,
        EDGES,
        ThreadingPolicy::Single,
        CONVOLUTION,
    )
    .map_err(blur_failed)?;
    // 255 / alpha in 16-bit fixed point, so unpremultiplying needs no division per pixel.
    let reciprocal: [u32; 256] = std::array::from_fn(|a| {
        if a == 0 {
            0
        } else {
            (255 * 65536 + a as u32 / 2) / a as u32
        }
    });
    for p in out.as_chunks_mut::<4>().0 {
        let r = reciprocal[usize::from(p[3])];
        for c in &mut p[..3] {
            // At most 255 * 255 * 65536 + 32768, which fits u32.
            *c = ((u32::from(*c) * r + 32768) >> 16).min(255) as u8;
        }
    }
    Ok(out)
}

fn sharpen<const N: usize>(
    raw: &mut [u8],
    w: u32,
    h: u32,
    sigma: f32,
    amount: f32,
) -> Result<(), Error> {
    let k = (amount * 256.0).round() as i32;
    if k == 0 || raw.is_empty() {
        return Ok(());
    }
    let blurred = gaussian::<N>(raw, w, h, sigma)?;
    for (p, b) in raw
        .as_chunks_mut::<N>()
        .0
        .iter_mut()
        .zip(blurred.as_chunks::<N>().0)
    {
        for (v, &soft) in p[..3].iter_mut().zip(&b[..3]) {
            let x = i32::from(*v);
            *v = ((x * 256 + k * (x - i32::from(soft)) + 128) >> 8).clamp(0, 255) as u8;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use image::{GenericImageView, GrayImage, Luma, RgbImage, RgbaImage};

    use super::*;

    fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Image {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y))))
    }

    fn rgba(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Image {
        DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, y| Rgba(f(x, y))))
    }

    fn run(img: &Image, op: Operation) -> Image {
        apply(img.clone(), &op).unwrap()
    }

    fn px3(img: &Image, x: u32, y: u32) -> [u8; 3] {
        img.as_rgb8().expect("an RGB image").get_pixel(x, y).0
    }

    fn px4(img: &Image, x: u32, y: u32) -> [u8; 4] {
        img.as_rgba8().expect("an RGBA image").get_pixel(x, y).0
    }

    /// Every pixel a different colour, including saturated primaries in row 0.
    fn colourful() -> Image {
        rgb(16, 8, |x, y| match (x, y) {
            (0, 0) => [255, 0, 0],
            (1, 0) => [0, 255, 0],
            (2, 0) => [0, 0, 255],
            _ => [(x * 16) as u8, (y * 32) as u8, (255 - x * 7 - y * 11) as u8],
        })
    }

    fn colourful_rgba() -> Image {
        let c = colourful();
        let (w, h) = (c.width(), c.height());
        rgba(w, h, |x, y| {
            let [r, g, b] = px3(&c, x, y);
            [r, g, b, (x * 16 + y) as u8]
        })
    }

    /// 3x2, each pixel naming its position: R = 10x + 100y, G = x, B = y.
    fn labelled() -> Image {
        rgb(3, 2, |x, y| [(10 * x + 100 * y) as u8, x as u8, y as u8])
    }

    fn close(a: &[u8], b: &[u8], tolerance: u8) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= tolerance)
    }

    fn rotate(angle: f32) -> Operation {
        Operation::Rotate {
            angle,
            background: None,
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let field = |op: Operation| op.validate().unwrap_err().0;
        assert_eq!(field(Operation::Blur { sigma: f32::NAN }), "sigma");
        assert_eq!(field(Operation::Blur { sigma: 0.0 }), "sigma");
        assert_eq!(field(Operation::Blur { sigma: 100.5 }), "sigma");
        let crop = |width, height| Operation::Crop {
            left: 0,
            top: 0,
            width,
            height,
        };
        assert_eq!(field(crop(0, 5)), "width");
        assert_eq!(field(crop(5, 0)), "height");
        assert_eq!(field(Operation::Gamma { gamma: 0.0 }), "gamma");
        assert_eq!(
            field(Operation::Sharpen {
                sigma: 11.0,
                amount: 1.0
            }),
            "sigma"
        );
        assert_eq!(
            field(Operation::Sharpen {
                sigma: 1.0,
                amount: -0.1
            }),
            "amount"
        );
        assert_eq!(
            field(Operation::Brightness {
                factor: f32::INFINITY
            }),
            "factor"
        );
        assert_eq!(field(Operation::Contrast { factor: 10.5 }), "factor");
        assert_eq!(field(Operation::Saturation { factor: -1.0 }), "factor");
        assert_eq!(field(rotate(f32::NAN)), "angle");
        assert_eq!(
            field(Operation::Hue {
                degrees: f32::NEG_INFINITY
            }),
            "degrees"
        );
        assert_eq!(
            Operation::Blur { sigma: 0.0 }.validate().unwrap_err().1,
            "must be 0.3..=100"
        );

        for ok in [
            Operation::Blur { sigma: 0.3 },
            Operation::Blur { sigma: 100.0 },
            Operation::Sharpen {
                sigma: 10.0,
                amount: 0.0,
            },
            Operation::Gamma { gamma: 0.1 },
            Operation::Brightness { factor: 0.0 },
            rotate(-12345.5),
            Operation::Hue { degrees: 720.0 },
            crop(1, 1),
            Operation::Tint {
                color: Color::WHITE,
            },
        ] {
            assert_eq!(ok.validate(), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn apply_refuses_invalid_parameters_instead_of_panicking() {
        let err = apply(colourful(), &Operation::Blur { sigma: 0.0 }).unwrap_err();
        assert_eq!(err.kind(), "InvalidOperation");
        assert!(err.to_string().contains("sigma"), "{err}");
    }

    #[test]
    fn grayscale_makes_greys_of_equal_luminance_and_keeps_alpha() {
        let out = run(&colourful_rgba(), Operation::Grayscale);
        let src = colourful_rgba();
        for (x, y, p) in out.as_rgba8().unwrap().enumerate_pixels() {
            let [r, g, b, a] = p.0;
            assert!(r == g && g == b, "({x},{y}) = {:?}", p.0);
            assert_eq!(a, px4(&src, x, y)[3]);
        }
        // Rec. 709 on linear light, as sharp: red, green and blue are not 54/182/18.
        assert!(
            close(&px4(&out, 0, 0)[..1], &[127], 1),
            "{:?}",
            px4(&out, 0, 0)
        );
        assert!(
            close(&px4(&out, 1, 0)[..1], &[220], 1),
            "{:?}",
            px4(&out, 1, 0)
        );
        assert!(
            close(&px4(&out, 2, 0)[..1], &[76], 1),
            "{:?}",
            px4(&out, 2, 0)
        );

        // Greys are fixed points, and RGB stays RGB.
        let ramp = rgb(256, 1, |x, _| [x as u8; 3]);
        assert_eq!(run(&ramp, Operation::Grayscale), ramp);
    }

    #[test]
    fn flip_and_flop_mirror_exactly() {
        let src = labelled();
        let flipped = run(&src, Operation::Flip);
        let flopped = run(&src, Operation::Flop);
        for y in 0..2 {
            for x in 0..3 {
                assert_eq!(px3(&flipped, x, y), px3(&src, x, 1 - y));
                assert_eq!(px3(&flopped, x, y), px3(&src, 2 - x, y));
            }
        }
        let alpha = colourful_rgba();
        assert_eq!(run(&run(&alpha, Operation::Flip), Operation::Flip), alpha);
        assert_eq!(run(&run(&alpha, Operation::Flop), Operation::Flop), alpha);
    }

    #[test]
    fn quarter_turns_are_exact() {
        let src = labelled();
        let r90 = run(&src, rotate(90.0));
        let r180 = run(&src, rotate(180.0));
        let r270 = run(&src, rotate(270.0));
        assert_eq!(r90.dimensions(), (2, 3));
        assert_eq!(r180.dimensions(), (3, 2));
        assert_eq!(r270.dimensions(), (2, 3));
        // The top-left pixel goes to the top-right under a clockwise quarter turn.
        assert_eq!(px3(&r90, 1, 0), px3(&src, 0, 0));
        for y in 0..3 {
            for x in 0..2 {
                assert_eq!(px3(&r90, x, y), px3(&src, y, 1 - x), "90 at ({x},{y})");
                assert_eq!(px3(&r270, x, y), px3(&src, 2 - y, x), "270 at ({x},{y})");
            }
        }
        for y in 0..2 {
            for x in 0..3 {
                assert_eq!(px3(&r180, x, y), px3(&src, 2 - x, 1 - y));
            }
        }
        assert_eq!(run(&src, rotate(-90.0)), r270);
        assert_eq!(run(&src, rotate(450.0)), r90);
        assert_eq!(run(&src, rotate(-180.0)), r180);
        assert_eq!(run(&src, rotate(360.0)), src);
        assert_eq!(run(&src, rotate(0.0)), src);
        assert_eq!(run(&src, rotate(-0.0)), src);

        // Alpha rides along, and four quarter turns are the identity.
        let alpha = colourful_rgba();
        let mut turned = alpha.clone();
        for _ in 0..4 {
            turned = run(&turned, rotate(90.0));
        }
        assert_eq!(turned, alpha);
    }

    #[test]
    fn arbitrary_rotation_enlarges_the_canvas_and_fills_corners() {
        let colour = [200, 100, 50];
        let src = rgb(100, 50, |_, _| colour);
        let out = run(&src, rotate(45.0));
        // ceil(100 cos 45 + 50 sin 45) = ceil(106.07)
        assert_eq!(out.dimensions(), (107, 107));
        for (x, y) in [(0, 0), (106, 0), (0, 106), (106, 106)] {
            assert_eq!(px3(&out, x, y), [0, 0, 0], "corner ({x},{y})");
        }
        assert_eq!(px3(&out, 53, 53), colour);

        let white = run(
            &src,
            Operation::Rotate {
                angle: 45.0,
                background: Some(Color::WHITE),
            },
        );
        assert_eq!(px3(&white, 0, 0), [255, 255, 255]);
        assert_eq!(px3(&white, 53, 53), colour);

        // RGB onto a transparent background gains alpha; only the corners are transparent.
        let clear = run(
            &src,
            Operation::Rotate {
                angle: 45.0,
                background: Some(Color::TRANSPARENT),
            },
        );
        assert_eq!(px4(&clear, 0, 0)[3], 0);
        assert_eq!(px4(&clear, 53, 53), [200, 100, 50, 255]);
        // The anti-aliased edge keeps its colour rather than fading towards black.
        let edge = clear
            .as_rgba8()
            .unwrap()
            .pixels()
            .find(|p| (32..224).contains(&p.0[3]))
            .expect("a partly transparent edge pixel");
        assert!(close(&edge.0[..3], &colour, 2), "{:?}", edge.0);

        // RGBA defaults to a transparent background.
        let alpha = rgba(100, 50, |_, _| [200, 100, 50, 255]);
        let out = run(&alpha, rotate(-30.0));
        assert_eq!(out.dimensions(), (112, 94));
        assert_eq!(px4(&out, 0, 0), [0, 0, 0, 0]);
        assert_eq!(px4(&out, 56, 47), [200, 100, 50, 255]);
    }

    #[test]
    fn arbitrary_rotation_turns_clockwise() {
        // Left half red, right half blue: turned clockwise, red goes up-left, blue down-right.
        let src = rgb(
            100,
            50,
            |x, _| if x < 50 { [255, 0, 0] } else { [0, 0, 255] },
        );
        let out = run(&src, rotate(45.0));
        assert_eq!(px3(&out, 53 - 18, 53 - 18), [255, 0, 0]);
        assert_eq!(px3(&out, 53 + 18, 53 + 18), [0, 0, 255]);
        // Counter-clockwise, these would be inside the image and those two outside.
        assert_eq!(px3(&out, 53 - 25, 53 + 25), [0, 0, 0]);
        assert_eq!(px3(&out, 53 + 25, 53 - 25), [0, 0, 0]);
    }

    #[test]
    fn rotation_canvas_is_bounded() {
        assert_eq!(rotated_canvas(100, 50, 45.0).unwrap(), (107, 107));
        assert_eq!(rotated_canvas(100, 50, 30.0).unwrap(), (112, 94));
        assert_eq!(rotated_canvas(1, 1, 45.0).unwrap(), (2, 2));
        let err = rotated_canvas(10_000, 10_000, 45.0).unwrap_err();
        assert_eq!(err.kind(), "InvalidOperation");
        assert!(rotated_canvas(u32::MAX, u32::MAX, 10.0).is_err());
    }

    #[test]
    fn crop_extracts_and_refuses_out_of_bounds() {
        let src = colourful_rgba();
        let crop = |left, top, width, height| Operation::Crop {
            left,
            top,
            width,
            height,
        };
        let out = run(&src, crop(3, 2, 4, 5));
        assert_eq!(out.dimensions(), (4, 5));
        for y in 0..5 {
            for x in 0..4 {
                assert_eq!(px4(&out, x, y), px4(&src, x + 3, y + 2));
            }
        }
        assert_eq!(run(&src, crop(0, 0, 16, 8)), src);

        for bad in [
            crop(13, 0, 4, 1),
            crop(0, 8, 1, 1),
            crop(u32::MAX, 0, 1, 1),
            crop(1, 1, u32::MAX, u32::MAX),
        ] {
            let err = apply(src.clone(), &bad).unwrap_err();
            assert_eq!(err.kind(), "InvalidOperation", "{bad:?}");
            assert!(err.to_string().contains("16x8"), "{err}");
        }
        let err = apply(src, &crop(13, 0, 4, 1)).unwrap_err();
        assert!(err.to_string().contains("4x1+13+0"), "{err}");
    }

    #[test]
    fn sepia_gives_a_warm_tone() {
        let out = run(
            &rgb(2, 1, |x, _| [[255; 3], [128; 3]][x as usize]),
            Operation::Sepia,
        );
        // White: .393+.769+.189 and .349+.686+.168 exceed 1 and clamp; blue is .937 * 255.
        assert_eq!(px3(&out, 0, 0), [255, 255, 239]);
        // Mid grey: 1.351, 1.203, .937 times 128.
        assert!(
            close(&px3(&out, 1, 0), &[173, 154, 120], 1),
            "{:?}",
            px3(&out, 1, 0)
        );
    }

    #[test]
    fn blur_spreads_a_point_and_keeps_its_energy() {
        let src = rgb(
            21,
            21,
            |x, y| if (x, y) == (10, 10) { [255; 3] } else { [0; 3] },
        );
        let out = run(&src, Operation::Blur { sigma: 1.0 });
        let centre = px3(&out, 10, 10)[0];
        assert!(centre > 0 && centre < 255, "centre {centre}");
        for (x, y) in [(9, 10), (11, 10), (10, 9), (10, 11)] {
            let v = px3(&out, x, y)[0];
            assert!(v > 0 && v < centre, "({x},{y}) = {v}");
            assert!(close(&[v], &[px3(&out, 11, 10)[0]], 1), "not symmetric");
        }
        let total: u32 = out
            .as_rgb8()
            .unwrap()
            .pixels()
            .map(|p| u32::from(p.0[0]))
            .sum();
        assert!((240..=270).contains(&total), "energy {total} of 255");
        assert_eq!(px3(&out, 0, 0), [0, 0, 0]);
    }

    #[test]
    fn blur_keeps_flat_images_flat() {
        let flat = rgb(20, 20, |_, _| [90, 160, 230]);
        for sigma in [0.3, 1.0, 3.0, 40.0] {
            let out = run(&flat, Operation::Blur { sigma });
            for p in out.as_rgb8().unwrap().pixels() {
                assert_eq!(p.0, [90, 160, 230], "sigma {sigma}");
            }
        }
        let opaque = [90, 160, 230, 255];
        let out = run(&rgba(20, 20, |_, _| opaque), Operation::Blur { sigma: 2.5 });
        assert!(out.as_rgba8().unwrap().pixels().all(|p| p.0 == opaque));
        // Semi-transparent colour goes through 8-bit premultiplication: within a level.
        for colour in [[90, 160, 230, 128], [255, 255, 255, 1], [90, 160, 230, 200]] {
            let out = run(&rgba(20, 20, |_, _| colour), Operation::Blur { sigma: 2.5 });
            for p in out.as_rgba8().unwrap().pixels() {
                assert!(close(&p.0[..3], &colour[..3], 1), "{colour:?}: {:?}", p.0);
                assert_eq!(p.0[3], colour[3]);
            }
        }
    }

    #[test]
    fn blur_does_not_bleed_the_colour_of_transparent_pixels() {
        // Invisible green on the left, opaque red on the right.
        let src = rgba(20, 10, |x, _| {
            if x < 10 {
                [0, 255, 0, 0]
            } else {
                [255, 0, 0, 255]
            }
        });
        let out = run(&src, Operation::Blur { sigma: 2.0 });
        for x in 7..13 {
            let p = px4(&out, x, 5);
            assert!(p[3] > 0 && p[3] < 255, "x {x}: alpha {}", p[3]);
            assert!(p[0] >= 250 && p[1] <= 2, "x {x}: {p:?}");
        }
        assert_eq!(px4(&out, 0, 5)[3], 0);
        assert_eq!(px4(&out, 19, 5), [255, 0, 0, 255]);
    }

    #[test]
    fn sharpen_steepens_a_step_edge() {
        let src = rgb(20, 5, |x, _| if x < 10 { [100; 3] } else { [150; 3] });
        let out = run(
            &src,
            Operation::Sharpen {
                sigma: 1.0,
                amount: 1.0,
            },
        );
        assert!(px3(&out, 9, 2)[0] < 100, "{:?}", px3(&out, 9, 2));
        assert!(px3(&out, 10, 2)[0] > 150, "{:?}", px3(&out, 10, 2));
        assert_eq!(px3(&out, 0, 2), [100; 3]);
        assert_eq!(px3(&out, 19, 2), [150; 3]);

        let unchanged = run(
            &src,
            Operation::Sharpen {
                sigma: 1.0,
                amount: 0.0,
            },
        );
        assert_eq!(unchanged, src);

        let alpha = rgba(20, 5, |x, y| {
            let v = if x < 10 { 100 } else { 150 };
            [v, v, v, (100 + x * 5 + y) as u8]
        });
        let out = run(
            &alpha,
            Operation::Sharpen {
                sigma: 1.0,
                amount: 2.0,
            },
        );
        for (x, y, p) in out.as_rgba8().unwrap().enumerate_pixels() {
            assert_eq!(p.0[3], px4(&alpha, x, y)[3]);
        }
        assert!(px4(&out, 9, 2)[0] < 100 && px4(&out, 10, 2)[0] > 150);
    }

    #[test]
    fn brightness_scales_and_clamps() {
        let src = rgba(2, 1, |x, _| {
            [[200, 100, 0, 77], [255, 3, 60, 255]][x as usize]
        });
        let half = run(&src, Operation::Brightness { factor: 0.5 });
        assert_eq!(px4(&half, 0, 0), [100, 50, 0, 77]);
        assert_eq!(px4(&half, 1, 0), [128, 2, 30, 255]);
        let double = run(&src, Operation::Brightness { factor: 2.0 });
        assert_eq!(px4(&double, 0, 0), [255, 200, 0, 77]);
        assert_eq!(run(&src, Operation::Brightness { factor: 1.0 }), src);
    }

    #[test]
    fn contrast_scales_around_mid_grey() {
        let src = colourful_rgba();
        let flat = run(&src, Operation::Contrast { factor: 0.0 });
        for (x, y, p) in flat.as_rgba8().unwrap().enumerate_pixels() {
            assert_eq!(p.0, [128, 128, 128, px4(&src, x, y)[3]]);
        }
        assert_eq!(run(&src, Operation::Contrast { factor: 1.0 }), src);
        let steep = run(
            &rgb(2, 1, |x, _| [[138; 3], [118; 3]][x as usize]),
            Operation::Contrast { factor: 2.0 },
        );
        assert_eq!(px3(&steep, 0, 0), [148; 3]);
        assert_eq!(px3(&steep, 1, 0), [108; 3]);
    }

    #[test]
    fn saturation_zero_is_grayscale_and_one_is_identity() {
        for src in [colourful(), colourful_rgba()] {
            assert_eq!(
                run(&src, Operation::Saturation { factor: 0.0 }),
                run(&src, Operation::Grayscale)
            );
            assert_eq!(run(&src, Operation::Saturation { factor: 1.0 }), src);
        }
        let vivid = run(
            &rgb(1, 1, |_, _| [150, 100, 100]),
            Operation::Saturation { factor: 2.0 },
        );
        let [r, g, b] = px3(&vivid, 0, 0);
        assert!(r > 150 && g < 100 && g == b, "{:?}", [r, g, b]);
    }

    #[test]
    fn hue_rotates_colours_and_keeps_greys() {
        let src = colourful_rgba();
        for degrees in [0.0, 360.0, -360.0, 720.0] {
            assert_eq!(run(&src, Operation::Hue { degrees }), src, "{degrees}");
        }
        let nearly = run(&src, Operation::Hue { degrees: 359.99 });
        assert!(close(nearly.as_bytes(), src.as_bytes(), 1));

        let red = rgb(1, 1, |_, _| [255, 0, 0]);
        let [r, g, b] = px3(&run(&red, Operation::Hue { degrees: 120.0 }), 0, 0);
        assert!(g > r && g > b && g > 64, "red + 120 = {:?}", [r, g, b]);
        let [r, g, b] = px3(&run(&red, Operation::Hue { degrees: 240.0 }), 0, 0);
        assert!(b > r && b > g, "red + 240 = {:?}", [r, g, b]);
        assert_eq!(
            run(&src, Operation::Hue { degrees: -120.0 }),
            run(&src, Operation::Hue { degrees: 240.0 })
        );

        let greys = rgb(256, 1, |x, _| [x as u8; 3]);
        let turned = run(&greys, Operation::Hue { degrees: 77.0 });
        assert!(close(turned.as_bytes(), greys.as_bytes(), 1));
    }

    #[test]
    fn gamma_bends_midtones_only() {
        let src = colourful_rgba();
        assert_eq!(run(&src, Operation::Gamma { gamma: 1.0 }), src);
        let ramp = rgb(3, 1, |x, _| [[0, 64, 255][x as usize]; 3]);
        let out = run(&ramp, Operation::Gamma { gamma: 2.0 });
        // 255 * (64 / 255) ^ (1 / 2) = 127.7
        assert_eq!(out.as_bytes(), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
        let darker = run(&ramp, Operation::Gamma { gamma: 0.5 });
        assert_eq!(px3(&darker, 1, 0), [16; 3]);
    }

    #[test]
    fn invert_negates_colour_and_keeps_alpha() {
        let src = rgba(1, 1, |_, _| [10, 20, 30, 40]);
        assert_eq!(
            px4(&run(&src, Operation::Invert), 0, 0),
            [245, 235, 225, 40]
        );
        let all = colourful_rgba();
        assert_eq!(run(&run(&all, Operation::Invert), Operation::Invert), all);
        let plain = colourful();
        assert_eq!(
            run(&run(&plain, Operation::Invert), Operation::Invert),
            plain
        );
    }

    #[test]
    fn tint_keeps_lightness_and_takes_the_colour() {
        let red = Operation::Tint {
            color: "#ff0000".parse().unwrap(),
        };
        let ramp = rgba(256, 1, |x, _| [x as u8, x as u8, x as u8, 200]);
        let out = run(&ramp, red);
        let mut last = 0;
        for x in 0..256 {
            let [r, g, b, a] = px4(&out, x, 0);
            assert_eq!(a, 200);
            assert!(r >= last, "R must rise with lightness at {x}");
            last = r;
            // Up to mid grey the red chroma fits in gamut: G and B stay near zero. Above, L*
            // needs more light than pure red has, so G and B rise (as in sharp).
            if x <= 128 {
                assert!(g <= 8 && b <= 8, "grey {x} -> {:?}", [r, g, b]);
            }
        }
        // Mid grey has almost exactly the lightness of pure red.
        assert!(
            close(&px4(&out, 128, 0)[..3], &[255, 0, 0], 6),
            "{:?}",
            px4(&out, 128, 0)
        );
        assert!(px4(&out, 64, 0)[0] > px4(&out, 32, 0)[0]);

        // A neutral tint is a lightness-preserving grayscale.
        let neutral = Operation::Tint {
            color: "#808080".parse().unwrap(),
        };
        let src = colourful();
        let tinted = run(&src, neutral);
        assert!(close(
            tinted.as_bytes(),
            run(&src, Operation::Grayscale).as_bytes(),
            1
        ));
        assert!(
            close(&px3(&tinted, 0, 0), &[127; 3], 1),
            "{:?}",
            px3(&tinted, 0, 0)
        );
    }

    #[test]
    fn every_operation_survives_tiny_images_and_keeps_the_layout() {
        let ops = [
            rotate(90.0),
            rotate(33.0),
            Operation::Flip,
            Operation::Flop,
            Operation::Crop {
                left: 0,
                top: 0,
                width: 1,
                height: 1,
            },
            Operation::Grayscale,
            Operation::Sepia,
            Operation::Blur { sigma: 100.0 },
            Operation::Sharpen {
                sigma: 10.0,
                amount: 10.0,
            },
            Operation::Brightness { factor: 10.0 },
            Operation::Contrast { factor: 10.0 },
            Operation::Saturation { factor: 10.0 },
            Operation::Hue { degrees: 1e9 },
            Operation::Gamma { gamma: 0.1 },
            Operation::Invert,
            Operation::Tint {
                color: Color::BLACK,
            },
        ];
        let images = [
            rgb(1, 1, |_, _| [1, 2, 3]),
            rgb(1, 3, |_, y| [y as u8 * 90; 3]),
            rgba(3, 1, |x, _| [200, 0, 9, x as u8 * 100]),
            rgba(2, 2, |_, _| [5, 6, 7, 0]),
        ];
        for img in &images {
            for op in &ops {
                let out = apply(img.clone(), op).unwrap();
                let alpha = img.color().has_alpha();
                match out {
                    DynamicImage::ImageRgb8(_) => assert!(!alpha, "{op:?} dropped alpha"),
                    DynamicImage::ImageRgba8(_) => {
                        assert!(alpha || matches!(op, Operation::Rotate { .. }), "{op:?}");
                    }
                    _ => panic!("{op:?} returned {:?}", out.color()),
                }
            }
        }
    }

    #[test]
    fn other_layouts_are_converted_first() {
        let grey = DynamicImage::ImageLuma8(GrayImage::from_pixel(2, 2, Luma([10])));
        let out = apply(grey, &Operation::Invert).unwrap();
        assert_eq!(px3(&out, 1, 1), [245; 3]);
    }

    #[test]
    fn recipes_keep_their_json_shape() {
        let op: Operation = serde_json::from_str(r#"{"op": "sharpen", "sigma": 1}"#).unwrap();
        assert_eq!(
            op,
            Operation::Sharpen {
                sigma: 1.0,
                amount: 1.0
            }
        );
        let op: Operation =
            serde_json::from_str(r##"{"op": "rotate", "angle": 30, "background": "#ffffff"}"##)
                .unwrap();
        assert_eq!(
            op,
            Operation::Rotate {
                angle: 30.0,
                background: Some(Color::WHITE)
            }
        );
        assert_eq!(
            serde_json::to_string(&Operation::Flip).unwrap(),
            r#"{"op":"flip"}"#
        );
        assert!(serde_json::from_str::<Operation>(r#"{"op": "blur", "radius": 2}"#).is_err());
    }
}
