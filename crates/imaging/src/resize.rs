use serde::{Deserialize, Serialize};

use crate::{Color, Error, Image};

/// How the image fits the box, with sharp's meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Fill the box, keeping aspect ratio, cropping what overflows (by gravity).
    #[default]
    Cover,
    /// Fit inside the box, keeping aspect ratio, padding with the background colour.
    Contain,
    /// Stretch to exactly the box.
    Fill,
    /// Largest size inside the box, keeping aspect ratio; no padding.
    Inside,
    /// Smallest size covering the box, keeping aspect ratio; no cropping.
    Outside,
}

/// Which part of the image `cover` keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gravity {
    #[default]
    #[serde(alias = "centre")]
    Center,
    North,
    NorthEast,
    East,
    SouthEast,
    South,
    SouthWest,
    West,
    NorthWest,
    /// With `cover`, the window that keeps the most detail, colour and skin (smart.rs); the
    /// centre for a flat image and for `contain`'s padding.
    Smart,
    /// With `cover`, the window centred on the image's focal point as near as the edges
    /// allow ([`ResizeSpec::focal_point`], set on the image by its owner); the centre
    /// without one and for `contain`'s padding.
    Focal,
}

/// A point of interest in an image, as fractions of its upright width and height from the
/// top left: (0.5, 0.5) is the centre.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FocalPoint {
    pub x: f64,
    pub y: f64,
}

impl FocalPoint {
    /// Both coordinates finite and within 0..=1.
    pub fn new(x: f64, y: f64) -> Option<FocalPoint> {
        let ok = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        (ok(x) && ok(y)).then_some(FocalPoint { x, y })
    }
}

/// A resize request. With only one of width/height, the other follows the aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResizeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default)]
    pub fit: Fit,
    #[serde(default)]
    pub gravity: Gravity,
    /// Never make the image larger than the source (sharp's `withoutEnlargement`).
    #[serde(default)]
    pub without_enlargement: bool,
    /// Padding colour for `contain` (default transparent for images with alpha, else black).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Color>,
    /// Where `gravity: focal` centres the crop: the image's own focal point, filled in from
    /// its record when it is rendered, never written in a recipe.
    #[serde(skip)]
    pub focal_point: Option<FocalPoint>,
}

/// The geometry of a resize, computed from dimensions alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Size the whole source is scaled to (before any crop or pad).
    pub scaled: (u32, u32),
    /// Final output size.
    pub output: (u32, u32),
    /// Offset of the output window in the scaled image (cover: crop; contain: negative = pad).
    pub offset: (i64, i64),
}

/// Works out the geometry for a source of `src` (upright) dimensions, with sharp's rules:
/// the same shrink factors, rounding, crop gravity and embed position, so a recipe written
/// for sharp gives the same sizes here.
pub fn plan(src: (u32, u32), spec: &ResizeSpec) -> Plan {
    let (sw, sh) = (src.0.max(1), src.1.max(1));
    let (fw, fh) = (f64::from(sw), f64::from(sh));
    let mut hshrink = 1.0f64;
    let mut vshrink = 1.0f64;
    match (spec.width, spec.height) {
        (Some(tw), Some(th)) => {
            hshrink = fw / f64::from(tw.max(1));
            vshrink = fh / f64::from(th.max(1));
            match spec.fit {
                // Cover and outside keep the smaller shrink: the image covers the box.
                Fit::Cover | Fit::Outside => {
                    let s = hshrink.min(vshrink);
                    (hshrink, vshrink) = (s, s);
                }
                // Contain and inside keep the larger: the image fits in the box.
                Fit::Contain | Fit::Inside => {
                    let s = hshrink.max(vshrink);
                    (hshrink, vshrink) = (s, s);
                }
                Fit::Fill => {}
            }
        }
        (Some(tw), None) => {
            hshrink = fw / f64::from(tw.max(1));
            if spec.fit != Fit::Fill {
                vshrink = hshrink;
            }
        }
        (None, Some(th)) => {
            vshrink = fh / f64::from(th.max(1));
            if spec.fit != Fit::Fill {
                hshrink = vshrink;
            }
        }
        (None, None) => {}
    }
    if spec.without_enlargement {
        hshrink = hshrink.max(1.0);
        vshrink = vshrink.max(1.0);
    }
    // Never shrink an axis to nothing.
    hshrink = hshrink.min(fw);
    vshrink = vshrink.min(fh);
    let scaled = (
        ((fw / hshrink).round() as u32).clamp(1, u32::MAX),
        ((fh / vshrink).round() as u32).clamp(1, u32::MAX),
    );
    let target = (
        spec.width.unwrap_or(scaled.0),
        spec.height.unwrap_or(scaled.1),
    );
    let (w, h) = scaled;
    if (w, h) == target {
        return Plan {
            scaled,
            output: scaled,
            offset: (0, 0),
        };
    }
    match spec.fit {
        Fit::Contain => {
            let output = (w.max(target.0), h.max(target.1));
            let (left, top) = embed_position((w, h), output, spec.gravity);
            Plan {
                scaled,
                output,
                offset: (-left, -top),
            }
        }
        Fit::Cover => {
            let output = (w.min(target.0), h.min(target.1));
            let offset = match (spec.gravity, spec.focal_point) {
                (Gravity::Focal, Some(p)) => focal_position((w, h), output, p),
                _ => crop_position((w, h), output, spec.gravity),
            };
            Plan {
                scaled,
                output,
                offset,
            }
        }
        Fit::Fill | Fit::Inside | Fit::Outside => Plan {
            scaled,
            output: scaled,
            offset: (0, 0),
        },
    }
}

/// The window centred on `point` of the scaled image, moved inside it where the edges demand.
fn focal_position(input: (u32, u32), output: (u32, u32), point: FocalPoint) -> (i64, i64) {
    let place = |size: u32, window: u32, at: f64| -> i64 {
        let room = i64::from(size) - i64::from(window);
        let start = (at * f64::from(size) - f64::from(window) / 2.0).round() as i64;
        start.clamp(0, room.max(0))
    };
    (
        place(input.0, output.0, point.x),
        place(input.1, output.1, point.y),
    )
}

/// Where the output window sits in the scaled image (sharp's `CalculateCrop`).
fn crop_position(input: (u32, u32), output: (u32, u32), gravity: Gravity) -> (i64, i64) {
    let dx = i64::from(input.0) - i64::from(output.0);
    let dy = i64::from(input.1) - i64::from(output.1);
    let (cx, cy) = ((dx + 1) / 2, (dy + 1) / 2);
    match gravity {
        // Smart's window is chosen from the pixels once they are scaled (finish.rs); a focal
        // gravity without a point is the centre.
        Gravity::Center | Gravity::Smart | Gravity::Focal => (cx, cy),
        Gravity::North => (cx, 0),
        Gravity::NorthEast => (dx, 0),
        Gravity::East => (dx, cy),
        Gravity::SouthEast => (dx, dy),
        Gravity::South => (cx, dy),
        Gravity::SouthWest => (0, dy),
        Gravity::West => (0, cy),
        Gravity::NorthWest => (0, 0),
    }
}

/// Where the scaled image sits on a larger canvas (sharp's `CalculateEmbedPosition`).
fn embed_position(input: (u32, u32), output: (u32, u32), gravity: Gravity) -> (i64, i64) {
    let dx = i64::from(output.0) - i64::from(input.0);
    let dy = i64::from(output.1) - i64::from(input.1);
    let (cx, cy) = (dx / 2, dy / 2);
    match gravity {
        // Smart's window is chosen from the pixels once they are scaled (finish.rs); a focal
        // gravity without a point is the centre.
        Gravity::Center | Gravity::Smart | Gravity::Focal => (cx, cy),
        Gravity::North => (cx, 0),
        Gravity::NorthEast => (dx, 0),
        Gravity::East => (dx, cy),
        Gravity::SouthEast => (dx, dy),
        Gravity::South => (cx, dy),
        Gravity::SouthWest => (0, dy),
        Gravity::West => (0, cy),
        Gravity::NorthWest => (0, 0),
    }
}

/// Scales the whole image to exactly `width` x `height` with Lanczos3 (alpha premultiplied).
pub fn resize_exact(img: &Image, width: u32, height: u32) -> Result<Image, Error> {
    use fast_image_resize as fr;
    if width == 0 || height == 0 {
        return Err(Error::InvalidOperation(format!(
            "cannot resize to {width}x{height}"
        )));
    }
    if (img.width(), img.height()) == (width, height) {
        return Ok(img.clone());
    }
    let (pixel, bytes) = match img {
        Image::ImageRgb8(buf) => (fr::PixelType::U8x3, buf.as_raw().as_slice()),
        Image::ImageRgba8(buf) => (fr::PixelType::U8x4, buf.as_raw().as_slice()),
        other => {
            return Err(Error::InvalidOperation(format!(
                "resize expects 8-bit RGB or RGBA, got {:?}",
                other.color()
            )));
        }
    };
    let resize_err = |e: &dyn std::fmt::Display| Error::InvalidOperation(format!("resize: {e}"));
    let src = fr::images::ImageRef::new(img.width(), img.height(), bytes, pixel)
        .map_err(|e| resize_err(&e))?;
    let mut dst = fr::images::Image::new(width, height, pixel);
    // Alpha is premultiplied by the resizer for U8x4, so transparent pixels do not bleed
    // their (meaningless) colour into their neighbours.
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| resize_err(&e))?;
    let raw = dst.into_vec();
    let out = match pixel {
        fr::PixelType::U8x4 => {
            image::RgbaImage::from_raw(width, height, raw).map(Image::ImageRgba8)
        }
        _ => image::RgbImage::from_raw(width, height, raw).map(Image::ImageRgb8),
    };
    out.ok_or_else(|| Error::InvalidOperation("resize produced a buffer of the wrong size".into()))
}

/// `plan` + `resize_exact` + crop/pad: the whole resize in one call.
pub fn resize(img: &Image, spec: &ResizeSpec) -> Result<Image, Error> {
    let p = plan((img.width(), img.height()), spec);
    let scaled = resize_exact(img, p.scaled.0, p.scaled.1)?;
    if p.output == p.scaled && p.offset == (0, 0) {
        return Ok(scaled);
    }
    crate::finish(&scaled, &p, spec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(w: Option<u32>, h: Option<u32>, fit: Fit) -> ResizeSpec {
        ResizeSpec {
            width: w,
            height: h,
            fit,
            gravity: Gravity::Center,
            without_enlargement: false,
            background: None,
            focal_point: None,
        }
    }

    #[test]
    fn focal_gravity_centres_the_window_on_the_point_within_the_edges() {
        // 2000x1000 to a 500x500 cover: scaled 1000x500, a 500 px wide window.
        let mut s = spec(Some(500), Some(500), Fit::Cover);
        s.gravity = Gravity::Focal;
        let at = |x, y| {
            let mut s = s;
            s.focal_point = FocalPoint::new(x, y);
            plan((2000, 1000), &s).offset
        };
        assert_eq!(at(0.5, 0.5), (250, 0));
        assert_eq!(at(0.6, 0.5), (350, 0));
        assert_eq!(at(0.1, 0.5), (0, 0), "held inside the left edge");
        assert_eq!(at(1.0, 0.0), (500, 0), "and the right one");
        // No point: the centre, as sharp's default gravity.
        assert_eq!(plan((2000, 1000), &s).offset, (250, 0));
        // A portrait source: the window moves vertically (scaled 500x1000, 500 px high).
        let mut t = s;
        t.focal_point = FocalPoint::new(0.5, 0.9);
        assert_eq!(plan((1000, 2000), &t).offset, (0, 500));
        assert!(FocalPoint::new(1.5, 0.0).is_none() && FocalPoint::new(f64::NAN, 0.0).is_none());
    }

    /// (source, width, height, fit, without enlargement) -> output size, as sharp gives it.
    type Case = ((u32, u32), Option<u32>, Option<u32>, Fit, bool, (u32, u32));

    #[test]
    fn fit_modes_give_sharps_dimensions() {
        let cases: &[Case] = &[
            (
                (5640, 3172),
                Some(256),
                Some(256),
                Fit::Cover,
                false,
                (256, 256),
            ),
            (
                (5640, 3172),
                Some(1024),
                Some(1024),
                Fit::Inside,
                false,
                (1024, 576),
            ),
            (
                (5640, 3172),
                Some(2048),
                Some(2048),
                Fit::Inside,
                true,
                (2048, 1152),
            ),
            (
                (5640, 3172),
                Some(1024),
                Some(1024),
                Fit::Outside,
                false,
                (1821, 1024),
            ),
            (
                (5640, 3172),
                Some(1024),
                Some(1024),
                Fit::Contain,
                false,
                (1024, 1024),
            ),
            (
                (5640, 3172),
                Some(300),
                Some(200),
                Fit::Fill,
                false,
                (300, 200),
            ),
            ((5640, 3172), Some(800), None, Fit::Cover, false, (800, 450)),
            ((5640, 3172), None, Some(300), Fit::Cover, false, (533, 300)),
            (
                (2600, 1400),
                Some(2048),
                Some(2048),
                Fit::Inside,
                true,
                (2048, 1103),
            ),
            (
                (2600, 1400),
                Some(1024),
                Some(1024),
                Fit::Inside,
                true,
                (1024, 551),
            ),
            // Never enlarging: a small source stays its size, cover crops to the box.
            (
                (200, 100),
                Some(1024),
                Some(1024),
                Fit::Inside,
                true,
                (200, 100),
            ),
            (
                (300, 100),
                Some(256),
                Some(256),
                Fit::Cover,
                true,
                (256, 100),
            ),
            (
                (200, 100),
                Some(256),
                Some(256),
                Fit::Contain,
                true,
                (256, 256),
            ),
            ((200, 100), Some(400), None, Fit::Inside, false, (400, 200)),
            ((200, 100), Some(400), None, Fit::Inside, true, (200, 100)),
            // An extreme aspect never loses an axis.
            ((10000, 1), Some(100), None, Fit::Inside, false, (100, 1)),
        ];
        for &(src, w, h, fit, we, want) in cases {
            let s = ResizeSpec {
                without_enlargement: we,
                ..spec(w, h, fit)
            };
            assert_eq!(
                plan(src, &s).output,
                want,
                "{src:?} {w:?}x{h:?} {fit:?} we={we}"
            );
        }
    }

    #[test]
    fn cover_crops_by_gravity_and_contain_centres() {
        let mut s = spec(Some(256), Some(256), Fit::Cover);
        let p = plan((5640, 3172), &s);
        assert_eq!(p.scaled, (455, 256));
        assert_eq!(p.offset, (100, 0));
        s.gravity = Gravity::West;
        assert_eq!(plan((5640, 3172), &s).offset, (0, 0));
        s.gravity = Gravity::East;
        assert_eq!(plan((5640, 3172), &s).offset, (199, 0));
        let c = plan((5640, 3172), &spec(Some(1024), Some(1024), Fit::Contain));
        assert_eq!((c.scaled, c.offset), ((1024, 576), (0, -224)));
    }

    #[test]
    fn resize_scales_and_keeps_flat_colour() {
        let img = Image::ImageRgb8(image::RgbImage::from_pixel(
            400,
            300,
            image::Rgb([10, 200, 30]),
        ));
        let out = resize(&img, &spec(Some(100), Some(100), Fit::Cover)).unwrap();
        assert_eq!((out.width(), out.height()), (100, 100));
        let px = out.as_rgb8().unwrap().get_pixel(50, 50).0;
        assert_eq!(px, [10, 200, 30]);
        let rgba = Image::ImageRgba8(image::RgbaImage::from_pixel(
            40,
            30,
            image::Rgba([1, 2, 3, 128]),
        ));
        let out = resize_exact(&rgba, 20, 15).unwrap();
        assert_eq!(out.as_rgba8().unwrap().get_pixel(10, 7).0[3], 128);
    }

    #[test]
    fn contain_pads_with_the_background() {
        let img = Image::ImageRgb8(image::RgbImage::from_pixel(
            200,
            100,
            image::Rgb([255, 255, 255]),
        ));
        let s = ResizeSpec {
            background: Some(Color([255, 0, 0, 255])),
            ..spec(Some(100), Some(100), Fit::Contain)
        };
        let out = resize(&img, &s).unwrap();
        let out = out.as_rgb8().unwrap();
        assert_eq!(out.dimensions(), (100, 100));
        assert_eq!(out.get_pixel(50, 5).0, [255, 0, 0], "top band is padding");
        assert_eq!(
            out.get_pixel(50, 50).0,
            [255, 255, 255],
            "middle is the image"
        );
    }
}
