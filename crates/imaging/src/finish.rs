use image::{DynamicImage, Rgba, RgbaImage};

use crate::{Color, Error, Fit, Gravity, Image, Plan, ResizeSpec};

/// Turns an image already scaled to `plan.scaled` into the final `plan.output`: crops the
/// window for `cover`, pads with the background for `contain`. Split from [`crate::resize`]
/// so a caller can scale once and reuse the scaled image for several outputs.
pub fn finish(scaled: &Image, plan: &Plan, spec: &ResizeSpec) -> Result<Image, Error> {
    let (sw, sh) = (scaled.width(), scaled.height());
    if (sw, sh) != plan.scaled {
        return Err(Error::InvalidOperation(format!(
            "image is {sw}x{sh} but the plan expects {}x{}",
            plan.scaled.0, plan.scaled.1
        )));
    }
    let (ow, oh) = plan.output;
    let (mut ox, mut oy) = plan.offset;
    if spec.gravity == Gravity::Smart
        && spec.fit == Fit::Cover
        && ox >= 0
        && oy >= 0
        && let Some((x, y)) = crate::smart::crop_offset(scaled, (ow, oh))?
    {
        (ox, oy) = (i64::from(x), i64::from(y));
    }
    if ox >= 0 && oy >= 0 {
        let (x, y) = (ox as u32, oy as u32);
        if x.saturating_add(ow) > sw || y.saturating_add(oh) > sh {
            return Err(Error::InvalidOperation(format!(
                "crop {ow}x{oh}+{x}+{y} falls outside {sw}x{sh}"
            )));
        }
        if (x, y, ow, oh) == (0, 0, sw, sh) {
            return Ok(scaled.clone());
        }
        return Ok(scaled.crop_imm(x, y, ow, oh));
    }
    // Padding: the scaled image sits inside a larger canvas.
    let has_alpha = scaled.color().has_alpha();
    let bg = spec.background.unwrap_or(if has_alpha {
        Color::TRANSPARENT
    } else {
        Color::BLACK
    });
    let mut canvas = RgbaImage::from_pixel(ow, oh, Rgba(bg.0));
    image::imageops::overlay(&mut canvas, &scaled.to_rgba8(), -ox, -oy);
    let out = DynamicImage::ImageRgba8(canvas);
    Ok(if has_alpha || bg.0[3] < 255 {
        out
    } else {
        DynamicImage::ImageRgb8(out.to_rgb8())
    })
}
