//! Compositing one image over another: a watermark or logo placed by gravity, scaled to a
//! share of the base's width, blended at an opacity through its own alpha.

use image::{DynamicImage, RgbaImage};

use crate::{Error, Gravity, Image};

/// Where and how a mark goes on a base image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Compass position (`smart` and `focal` mean the centre here).
    pub gravity: Gravity,
    /// Pixels kept clear between the mark and the edges it sits against.
    pub margin: u32,
    /// 0..=1, multiplied into the mark's own alpha.
    pub opacity: f32,
    /// The mark's width as a share of the base's width (0 < scale <= 1); its height follows.
    pub scale: f32,
}

/// Composites `mark` over `base` as `placement` says. The result keeps the base's layout
/// (RGB stays RGB, RGBA stays RGBA); the mark is resized with Lanczos3 first.
pub fn overlay(base: Image, mark: &Image, placement: &Placement) -> Result<Image, Error> {
    let (bw, bh) = (base.width(), base.height());
    if !(placement.scale > 0.0 && placement.scale <= 1.0) {
        return Err(Error::InvalidOperation(
            "overlay scale must be above 0 and at most 1".into(),
        ));
    }
    let width = ((bw as f32 * placement.scale).round() as u32).clamp(1, bw.max(1));
    let height = ((u64::from(mark.height()) * u64::from(width))
        .div_ceil(u64::from(mark.width().max(1))))
    .clamp(1, u64::from(bh.max(1))) as u32;
    let scaled = crate::resize_exact(mark, width, height)?.to_rgba8();
    let (x, y) = position((bw, bh), (width, height), placement);
    let has_alpha = base.color().has_alpha();
    let mut canvas: RgbaImage = base.to_rgba8();
    let opacity = placement.opacity.clamp(0.0, 1.0);
    for (mx, my, px) in scaled.enumerate_pixels() {
        let (cx, cy) = (x + i64::from(mx), y + i64::from(my));
        if cx < 0 || cy < 0 || cx >= i64::from(bw) || cy >= i64::from(bh) {
            continue;
        }
        let a = f32::from(px[3]) / 255.0 * opacity;
        if a <= 0.0 {
            continue;
        }
        // Porter-Duff "over" on straight alpha: the base counts by its own coverage, so a
        // mark over a transparent pixel keeps its colour instead of darkening towards it.
        let under = canvas.get_pixel_mut(cx as u32, cy as u32);
        let ua = f32::from(under[3]) / 255.0;
        let out_a = a + ua * (1.0 - a);
        for c in 0..3 {
            let v = (f32::from(px[c]) * a + f32::from(under[c]) * ua * (1.0 - a)) / out_a;
            under[c] = v.round().clamp(0.0, 255.0) as u8;
        }
        under[3] = (out_a * 255.0).round().clamp(0.0, 255.0) as u8;
    }
    let out = DynamicImage::ImageRgba8(canvas);
    Ok(if has_alpha {
        out
    } else {
        DynamicImage::ImageRgb8(out.to_rgb8())
    })
}

/// The mark's top left corner on the base.
fn position(base: (u32, u32), mark: (u32, u32), p: &Placement) -> (i64, i64) {
    let m = i64::from(p.margin);
    let (bw, bh) = (i64::from(base.0), i64::from(base.1));
    let (w, h) = (i64::from(mark.0), i64::from(mark.1));
    let left = m;
    let right = bw - w - m;
    let top = m;
    let bottom = bh - h - m;
    let cx = (bw - w) / 2;
    let cy = (bh - h) / 2;
    match p.gravity {
        Gravity::NorthWest => (left, top),
        Gravity::North => (cx, top),
        Gravity::NorthEast => (right, top),
        Gravity::West => (left, cy),
        Gravity::East => (right, cy),
        Gravity::SouthWest => (left, bottom),
        Gravity::South => (cx, bottom),
        Gravity::SouthEast => (right, bottom),
        Gravity::Center | Gravity::Smart | Gravity::Focal => (cx, cy),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use image::{Rgb, RgbImage, Rgba};

    use super::*;

    fn placement(gravity: Gravity, opacity: f32) -> Placement {
        Placement {
            gravity,
            margin: 10,
            opacity,
            scale: 0.25,
        }
    }

    #[test]
    fn the_mark_is_scaled_placed_and_blended() {
        let base = DynamicImage::ImageRgb8(RgbImage::from_pixel(400, 200, Rgb([0, 0, 200])));
        // A 40x20 mark: opaque white left half, transparent right half.
        let mark = DynamicImage::ImageRgba8(RgbaImage::from_fn(40, 20, |x, _| {
            Rgba([255, 255, 255, if x < 20 { 255 } else { 0 }])
        }));
        let out = overlay(base.clone(), &mark, &placement(Gravity::SouthEast, 0.5))
            .unwrap()
            .to_rgb8();
        assert_eq!(out.dimensions(), (400, 200), "the base's size");
        // Scaled to 100x50, placed 10 px from the bottom right: x 290..390, y 140..190.
        let blended = out.get_pixel(300, 160).0;
        assert!(
            (120..=135).contains(&blended[0]) && (220..=235).contains(&blended[2]),
            "half white over blue: {blended:?}"
        );
        assert_eq!(
            out.get_pixel(380, 160).0,
            [0, 0, 200],
            "the mark's transparent half"
        );
        assert_eq!(out.get_pixel(300, 195).0, [0, 0, 200], "the margin");
        assert_eq!(out.get_pixel(10, 10).0, [0, 0, 200], "elsewhere untouched");
        let full = overlay(base, &mark, &placement(Gravity::NorthWest, 1.0))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            full.get_pixel(15, 15).0,
            [255, 255, 255],
            "opaque at full opacity"
        );
    }

    #[test]
    fn a_transparent_base_stays_transparent_where_the_mark_is_not() {
        let base = DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 100, Rgba([0, 0, 0, 0])));
        let mark = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 10, Rgb([255, 0, 0])));
        let out = overlay(base, &mark, &placement(Gravity::Center, 1.0)).unwrap();
        let rgba = out.to_rgba8();
        assert_eq!(rgba.get_pixel(50, 50).0, [255, 0, 0, 255]);
        assert_eq!(rgba.get_pixel(5, 5).0[3], 0);
        // Half opacity over transparency: the mark's own colour, half covering.
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 100, Rgba([0, 0, 0, 0])));
        let half = overlay(clear, &mark, &placement(Gravity::Center, 0.5))
            .unwrap()
            .to_rgba8();
        assert_eq!(half.get_pixel(50, 50).0, [255, 0, 0, 128]);
        let bad = Placement {
            scale: 0.0,
            ..placement(Gravity::Center, 1.0)
        };
        assert!(overlay(out, &mark, &bad).is_err());
    }
}
