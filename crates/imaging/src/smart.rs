//! Content-aware cover crops (`"gravity": "smart"`): of every window the crop could keep, the
//! one holding the most detail, colour and skin, after the ideas of smartcrop.js. The image is
//! scored on a small copy (at most [`ANALYSIS_SIDE`] pixels a side), so the search costs the
//! same for a thumbnail and a 50 MP photo; a flat image keeps the centre.

use crate::{Error, Image};

/// The long side of the copy the scores are computed on.
const ANALYSIS_SIDE: u32 = 256;
/// Weights of a pixel's score: detail (edges) matters most, skin next (faces and people are
/// what crops most often cut badly), saturated colour a little.
const DETAIL: f64 = 1.0;
const SKIN: f64 = 0.6;
const SATURATION: f64 = 0.2;
/// A window must beat the centre by this much to be chosen: between near equals the centre,
/// which people expect, wins.
const BETTER: f64 = 1.05;
/// Below this mean score a picture is flat (a sky, a wall, a blank page): centre.
const FLAT: f64 = 0.004;

/// Where to place a `window` of the (already scaled) `img` to keep what matters, as the
/// top-left corner; `None` when the centre is as good (flat, or nothing stands out).
pub fn crop_offset(img: &Image, window: (u32, u32)) -> Result<Option<(u32, u32)>, Error> {
    let (sw, sh) = (img.width(), img.height());
    let (ow, oh) = (window.0.min(sw), window.1.min(sh));
    if (ow, oh) == (sw, sh) || sw == 0 || sh == 0 {
        return Ok(None);
    }
    let scale = (f64::from(sw.max(sh)) / f64::from(ANALYSIS_SIDE)).max(1.0);
    let aw = ((f64::from(sw) / scale).round() as u32).clamp(1, sw);
    let ah = ((f64::from(sh) / scale).round() as u32).clamp(1, sh);
    let small = crate::resize_exact(img, aw, ah)?.to_rgb8();
    let scores = score_map(&small);
    let table = Summed::new(&scores, aw as usize, ah as usize);
    let mean = table.sum(0, 0, aw as usize, ah as usize) / f64::from(aw * ah);
    if mean < FLAT {
        return Ok(None);
    }
    // The window in the small copy's pixels.
    let ww = ((f64::from(ow) / scale).round() as usize).clamp(1, aw as usize);
    let wh = ((f64::from(oh) / scale).round() as usize).clamp(1, ah as usize);
    let (free_x, free_y) = (aw as usize - ww, ah as usize - wh);
    // What the window holds, with its middle counted twice: a subject cut by the window's
    // edge is worth less than one inside it.
    let value = |x: usize, y: usize| {
        let (iw, ih) = (ww / 2, wh / 2);
        table.sum(x, y, ww, wh) + table.sum(x + (ww - iw) / 2, y + (wh - ih) / 2, iw, ih)
    };
    let centre = value(free_x.div_ceil(2), free_y.div_ceil(2));
    let mut best = (centre, free_x.div_ceil(2), free_y.div_ceil(2));
    for y in 0..=free_y {
        for x in 0..=free_x {
            let v = value(x, y);
            if v > best.0 {
                best = (v, x, y);
            }
        }
    }
    if best.0 <= centre * BETTER {
        return Ok(None);
    }
    let to_full = |v: usize, room: u32| ((v as f64 * scale).round() as u32).min(room);
    Ok(Some((to_full(best.1, sw - ow), to_full(best.2, sh - oh))))
}

/// A score per pixel of `img`: detail (the luma Laplacian), skin likeness and saturation.
fn score_map(img: &image::RgbImage) -> Vec<f64> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let luma: Vec<f64> = img
        .pixels()
        .map(|p| {
            (0.2126 * f64::from(p[0]) + 0.7152 * f64::from(p[1]) + 0.0722 * f64::from(p[2])) / 255.0
        })
        .collect();
    let at = |x: usize, y: usize| luma[y * w + x];
    let mut out = Vec::with_capacity(w * h);
    for (i, p) in img.pixels().enumerate() {
        let (x, y) = (i % w, i / w);
        let l = luma[i];
        let n = |dx: isize, dy: isize| {
            let nx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
            let ny = (y as isize + dy).clamp(0, h as isize - 1) as usize;
            at(nx, ny)
        };
        let detail = (4.0 * l - n(-1, 0) - n(1, 0) - n(0, -1) - n(0, 1)).abs();
        let [r, g, b] = [p[0], p[1], p[2]].map(|c| f64::from(c) / 255.0);
        let (max, min) = (r.max(g).max(b), r.min(g).min(b));
        let saturation = if max > 0.0 && (0.05..0.95).contains(&l) {
            (max - min) / max
        } else {
            0.0
        };
        out.push(DETAIL * detail + SKIN * skin(r, g, b, l) + SATURATION * saturation);
    }
    out
}

/// How much a colour looks like skin, 0 to 1: closeness of its chromaticity to a typical
/// skin tone's (smartcrop.js's measure), for pixels neither very dark nor blown out.
fn skin(r: f64, g: f64, b: f64, luma: f64) -> f64 {
    if !(0.15..0.95).contains(&luma) {
        return 0.0;
    }
    let mag = (r * r + g * g + b * b).sqrt();
    if mag == 0.0 {
        return 0.0;
    }
    let tone = [0.78, 0.57, 0.44];
    let tone_mag: f64 = tone.iter().map(|c| c * c).sum::<f64>().sqrt();
    let d = ((r / mag - tone[0] / tone_mag).powi(2)
        + (g / mag - tone[1] / tone_mag).powi(2)
        + (b / mag - tone[2] / tone_mag).powi(2))
    .sqrt();
    (1.0 - d / 0.25).max(0.0)
}

/// A summed-area table: the sum of any rectangle in four lookups.
struct Summed {
    w: usize,
    sums: Vec<f64>,
}

impl Summed {
    fn new(values: &[f64], w: usize, h: usize) -> Summed {
        // One extra row and column of zeros, so no rectangle needs a special case.
        let stride = w + 1;
        let mut sums = vec![0.0; stride * (h + 1)];
        for y in 0..h {
            let mut row = 0.0;
            for x in 0..w {
                row += values[y * w + x];
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
            }
        }
        Summed { w: stride, sums }
    }

    fn sum(&self, x: usize, y: usize, w: usize, h: usize) -> f64 {
        let s = |x: usize, y: usize| self.sums[y * self.w + x];
        s(x + w, y + h) - s(x, y + h) - s(x + w, y) + s(x, y)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Fit, Gravity, ResizeSpec};

    /// A soft gradient with a small, busy, colourful subject whose left edge is at `at_x`.
    fn scene(at_x: u32) -> Image {
        let img = image::RgbImage::from_fn(800, 400, |x, y| {
            if (at_x..at_x + 60).contains(&x) && (170..230).contains(&y) {
                // A fine red/yellow checkerboard: detail and colour.
                if (x / 4 + y / 4) % 2 == 0 {
                    image::Rgb([220, 40, 30])
                } else {
                    image::Rgb([250, 220, 40])
                }
            } else {
                let v = 120 + (x / 20) as u8;
                image::Rgb([v, v, v + 10])
            }
        });
        Image::ImageRgb8(img)
    }

    /// How busy a picture is: the mean absolute difference between horizontal neighbours.
    fn busyness(img: &Image) -> f64 {
        let rgb = img.to_rgb8();
        let mut total = 0.0;
        for y in 0..rgb.height() {
            for x in 1..rgb.width() {
                let (a, b) = (rgb.get_pixel(x - 1, y), rgb.get_pixel(x, y));
                total += (0..3)
                    .map(|c| (f64::from(a[c]) - f64::from(b[c])).abs())
                    .sum::<f64>();
            }
        }
        total / f64::from(rgb.width() * rgb.height())
    }

    fn cover(gravity: Gravity) -> ResizeSpec {
        ResizeSpec {
            width: Some(300),
            height: Some(300),
            fit: Fit::Cover,
            gravity,
            without_enlargement: false,
            background: None,
            focal_point: None,
        }
    }

    #[test]
    fn a_small_busy_subject_stays_in_the_frame_the_centre_loses_it() {
        // Scaled to 600x300, the subject sits at 525-570: outside the centre crop (150-450).
        let img = scene(700);
        let centre = crate::resize(&img, &cover(Gravity::Center)).unwrap();
        let smart = crate::resize(&img, &cover(Gravity::Smart)).unwrap();
        assert_eq!((smart.width(), smart.height()), (300, 300));
        assert!(
            busyness(&centre) < 2.0,
            "the centre crop holds only the gradient"
        );
        assert!(
            busyness(&smart) > 10.0 * busyness(&centre),
            "smart {} vs centre {}",
            busyness(&smart),
            busyness(&centre)
        );
        // On the left too; the window found is the leftmost (the subject is at 15-60).
        let left = scene(20);
        let centre = crate::resize(&left, &cover(Gravity::Center)).unwrap();
        let smart = crate::resize(&left, &cover(Gravity::Smart)).unwrap();
        assert!(busyness(&smart) > 10.0 * busyness(&centre));
        let scaled = crate::resize_exact(&left, 600, 300).unwrap();
        let (x, y) = crop_offset(&scaled, (300, 300)).unwrap().unwrap();
        assert!(x <= 15 && y == 0, "{x},{y}");
    }

    #[test]
    fn a_flat_image_keeps_the_centre() {
        let flat = Image::ImageRgb8(image::RgbImage::from_pixel(
            800,
            400,
            image::Rgb([90, 120, 200]),
        ));
        let scaled = crate::resize_exact(&flat, 600, 300).unwrap();
        assert_eq!(crop_offset(&scaled, (300, 300)).unwrap(), None);
        // A subject in the middle: the centre is as good as any.
        let scaled = crate::resize_exact(&scene(370), 600, 300).unwrap();
        assert_eq!(crop_offset(&scaled, (300, 300)).unwrap(), None);
        // Nothing to choose when the window is the whole image.
        assert_eq!(crop_offset(&scaled, (600, 300)).unwrap(), None);
    }
}
