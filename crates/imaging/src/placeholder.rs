//! What a page shows while a rendition loads: a ThumbHash (a ~25-byte sketch of the picture,
//! its colours and aspect ratio, that a browser paints blurred) and the picture's dominant
//! colour. Both come from an area-averaged copy of at most 100 px a side, so they cost next to
//! nothing beside the encode.

use base64::Engine as _;

use crate::{Color, Error, Image};

/// ThumbHash's own bound: it encodes at most 100 x 100 pixels.
const SIDE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// The ThumbHash, standard base64.
    pub thumbhash: String,
    /// The most common colour, #rrggbb.
    pub dominant_color: Color,
}

pub fn placeholder(img: &Image) -> Result<Placeholder, Error> {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(Error::InvalidOperation(
            "an empty image has no placeholder".into(),
        ));
    }
    let scale = f64::from(w.max(h)) / f64::from(SIDE);
    let (sw, sh) = if scale > 1.0 {
        (
            ((f64::from(w) / scale).round() as u32).clamp(1, SIDE),
            ((f64::from(h) / scale).round() as u32).clamp(1, SIDE),
        )
    } else {
        (w, h)
    };
    // Area averaging (image's `thumbnail`) rather than the Lanczos of renditions: a 100 px
    // sketch needs no sharpness, and this runs for every rendition on the Store step's path.
    let small = match img {
        Image::ImageRgb8(buf) => {
            image::DynamicImage::ImageRgb8(image::imageops::thumbnail(buf, sw, sh)).to_rgba8()
        }
        Image::ImageRgba8(buf) => image::imageops::thumbnail(buf, sw, sh),
        other => image::imageops::thumbnail(&other.to_rgba8(), sw, sh),
    };
    let hash = thumbhash::rgba_to_thumb_hash(sw as usize, sh as usize, small.as_raw());
    Ok(Placeholder {
        thumbhash: base64::engine::general_purpose::STANDARD.encode(hash),
        dominant_color: dominant(&small),
    })
}

/// The most common colour: pixels counted in 4096 bins (4 bits a channel, weighted by their
/// opacity), and the mean of the fullest bin. A mean of the whole picture would be a muddy
/// colour nobody sees in it.
fn dominant(img: &image::RgbaImage) -> Color {
    let mut weight = vec![0.0f64; 4096];
    let mut sums = vec![[0.0f64; 3]; 4096];
    for p in img.pixels() {
        let bin =
            (usize::from(p[0] >> 4) << 8) | (usize::from(p[1] >> 4) << 4) | usize::from(p[2] >> 4);
        let a = f64::from(p[3]) / 255.0;
        weight[bin] += a;
        for (sum, v) in sums[bin].iter_mut().zip(p.0) {
            *sum += a * f64::from(v);
        }
    }
    let (bin, &w) = weight
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap_or((0, &0.0));
    if w == 0.0 {
        // Fully transparent.
        return Color([0, 0, 0, 0]);
    }
    let [r, g, b] = sums[bin].map(|s| (s / w).round().clamp(0.0, 255.0) as u8);
    Color([r, g, b, 255])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_decodes_to_the_aspect_ratio_and_colour() {
        // 400x200: mostly teal, a red stripe on the left.
        let img = Image::ImageRgb8(image::RgbImage::from_fn(400, 200, |x, _| {
            if x < 60 {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([20, 140, 150])
            }
        }));
        let p = placeholder(&img).unwrap();
        let hash = base64::engine::general_purpose::STANDARD
            .decode(&p.thumbhash)
            .unwrap();
        assert!(hash.len() <= 32, "{} bytes", hash.len());
        // ThumbHash keeps the ratio coarsely (its sketch is 7 cells on the long side): 2:1
        // comes back as 7:4.
        let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
        assert!((ratio - 2.0).abs() <= 0.25, "aspect {ratio}");
        let (w, h, rgba) = thumbhash::thumb_hash_to_rgba(&hash).unwrap();
        assert!(w > h);
        // The right of the sketch is teal, its left edge reddish.
        let at = |x: usize, y: usize| &rgba[(y * w + x) * 4..(y * w + x) * 4 + 3];
        let right = at(w - 2, h / 2);
        assert!(
            right[2] > right[0] + 60 && right[1] > right[0] + 40,
            "{right:?}"
        );
        let left = at(0, h / 2);
        assert!(left[0] > right[0] + 40, "{left:?} vs {right:?}");
        assert_eq!(p.dominant_color, Color([20, 140, 150, 255]));
        assert_eq!(p.dominant_color.to_string(), "#148c96");
    }

    #[test]
    fn small_and_transparent_images_have_one_too() {
        let tiny = Image::ImageRgb8(image::RgbImage::from_pixel(3, 2, image::Rgb([250, 250, 0])));
        assert_eq!(
            placeholder(&tiny).unwrap().dominant_color,
            Color([250, 250, 0, 255])
        );
        let clear = Image::ImageRgba8(image::RgbaImage::from_pixel(
            50,
            50,
            image::Rgba([9, 9, 9, 0]),
        ));
        let p = placeholder(&clear).unwrap();
        assert_eq!(p.dominant_color, Color([0, 0, 0, 0]));
        assert!(!p.thumbhash.is_empty());
    }
}
