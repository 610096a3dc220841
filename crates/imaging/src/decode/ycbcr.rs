//! YCbCr (and AV1's identity-matrix GBR) to 8-bit RGB, for decoders that hand back planes.
//!
//! Written here rather than taken from a conversion crate: the one that builds here
//! (yuvutils-rs 0.8) is off by one to two levels in 8-bit full range (mid-gray 128/128/128
//! comes out 129, and green runs 1.3 levels high on the test photos), which is the whole error
//! budget a faithful decode has. This is the textbook formula in floating point, and chroma
//! is upsampled with the bilinear (3:1) filter libavif and browsers use for 4:2:0 and 4:2:2.

/// How luma and chroma make RGB: H.273's matrix coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Matrix {
    /// Coefficients 0: the planes are G, B and R themselves.
    Identity,
    /// A luma/colour-difference matrix by its red and blue luma weights.
    Ycbcr { kr: f32, kb: f32 },
}

impl Matrix {
    pub(super) const BT601: Matrix = Matrix::Ycbcr {
        kr: 0.299,
        kb: 0.114,
    };

    /// H.273 Table 4; `None` for what is not a plain YCbCr matrix (YCgCo, ICtCp, the
    /// chromaticity-derived ones), which the caller names as unsupported.
    pub(super) fn from_h273(code: u16) -> Option<Matrix> {
        let (kr, kb) = match code {
            0 => return Some(Matrix::Identity),
            1 => (0.2126, 0.0722),
            // Unspecified and reserved are read as BT.601, as libavif and browsers do.
            2 | 3 | 5 | 6 => return Some(Matrix::BT601),
            4 => (0.30, 0.11),
            7 => (0.212, 0.087),
            9 | 10 => (0.2627, 0.0593),
            _ => return None,
        };
        Some(Matrix::Ycbcr { kr, kb })
    }
}

/// How decoded planes are laid out and what their numbers mean. Chroma planes are
/// `(w + sub_x) >> sub_x` by `(h + sub_y) >> sub_y` samples; strides count samples.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub y_stride: usize,
    pub uv_stride: usize,
    pub width: usize,
    pub height: usize,
    /// Chroma halved horizontally, vertically.
    pub sub: (bool, bool),
    pub bits: u32,
    pub full_range: bool,
    pub matrix: Matrix,
}

/// The planes (`uv` is `None` for monochrome) as interleaved 8-bit RGB; `None` when a plane
/// does not hold what the shape claims (checked before anything is read).
pub(super) fn to_rgb8<T: Copy + Into<u32>>(
    y: &[T],
    uv: Option<(&[T], &[T])>,
    p: &Shape,
) -> Option<Vec<u8>> {
    let (w, h) = (p.width, p.height);
    let covers = |plane: &[T], stride: usize, pw: usize, ph: usize| {
        pw == 0 || ph == 0 || (stride >= pw && plane.len() >= (ph - 1) * stride + pw)
    };
    if !(1..=16).contains(&p.bits) || !covers(y, p.y_stride, w, h) {
        return None;
    }
    let cw = if p.sub.0 { w.div_ceil(2) } else { w };
    let ch = if p.sub.1 { h.div_ceil(2) } else { h };
    if let Some((u, v)) = uv
        && !(covers(u, p.uv_stride, cw, ch) && covers(v, p.uv_stride, cw, ch))
    {
        return None;
    }
    let mut out = Vec::with_capacity(w.checked_mul(h)?.checked_mul(3)?);

    let max = ((1u32 << p.bits) - 1) as f32;
    let scale = (1u32 << p.bits.saturating_sub(8)) as f32;
    let (y_off, y_span, c_span) = if p.full_range {
        (0.0, max, max)
    } else {
        (16.0 * scale, 219.0 * scale, 224.0 * scale)
    };
    // Chroma sums below carry weights that add up to 16; everything is worked in output
    // levels (0..255), so each channel is a few multiply-adds a pixel.
    let c_mid16 = 16.0 * (1u32 << (p.bits - 1)) as f32;
    let luma_levels = 255.0 / y_span;
    let chroma_levels = 255.0 / c_span / 16.0;
    let to8 = |v: f32| (v.clamp(0.0, 255.0) + 0.5) as u8;
    // R = Y + 2(1-kr) Pr, B = Y + 2(1-kb) Pb, G = Y - 2kb(1-kb)/kg Pb - 2kr(1-kr)/kg Pr.
    let (r_cr, b_cb, g_cb, g_cr) = match p.matrix {
        Matrix::Ycbcr { kr, kb } => {
            let kg = 1.0 - kr - kb;
            (
                2.0 * (1.0 - kr),
                2.0 * (1.0 - kb),
                2.0 * kb * (1.0 - kb) / kg,
                2.0 * kr * (1.0 - kr) / kg,
            )
        }
        Matrix::Identity => (0.0, 0.0, 0.0, 0.0),
    };
    // The nearer and the farther chroma sample of a full-resolution position, weighted 3:1
    // (the same sample twice when that axis is not subsampled).
    let taps = |i: usize, n: usize, sub: bool| {
        if !sub {
            return (i, i);
        }
        let near = i / 2;
        let far = if i % 2 == 1 {
            (near + 1).min(n - 1)
        } else {
            near.saturating_sub(1)
        };
        (near, far)
    };
    fn row<T>(plane: &[T], stride: usize, y: usize, n: usize) -> Option<&[T]> {
        plane.get(y * stride..)?.get(..n)
    }
    // One chroma row, interpolated vertically (weights 3 and 1), per output row.
    let (mut u_row, mut v_row) = (vec![0f32; cw], vec![0f32; cw]);
    let luma_plane = y;
    for y in 0..h {
        let luma = row(luma_plane, p.y_stride, y, w)?;
        let Some((u, v)) = uv else {
            for &l in luma {
                let g = to8((l.into() as f32 - y_off) * luma_levels);
                out.extend_from_slice(&[g, g, g]);
            }
            continue;
        };
        let (ny, fy) = taps(y, ch, p.sub.1);
        for (plane, dst) in [(u, &mut u_row), (v, &mut v_row)] {
            let (near, far) = (
                row(plane, p.uv_stride, ny, cw)?,
                row(plane, p.uv_stride, fy, cw)?,
            );
            for ((d, &n), &f) in dst.iter_mut().zip(near).zip(far) {
                *d = 3.0 * n.into() as f32 + f.into() as f32;
            }
        }
        for (x, &l) in luma.iter().enumerate() {
            let (nx, fx) = taps(x, cw, p.sub.0);
            let cb = 3.0 * u_row.get(nx)? + u_row.get(fx)?;
            let cr = 3.0 * v_row.get(nx)? + v_row.get(fx)?;
            let yl = (l.into() as f32 - y_off) * luma_levels;
            let rgb = match p.matrix {
                // G, B and R in the Y, U and V planes, each ranged like luma.
                Matrix::Identity => [
                    (cr / 16.0 - y_off) * luma_levels,
                    yl,
                    (cb / 16.0 - y_off) * luma_levels,
                ],
                Matrix::Ycbcr { .. } => {
                    let (pb, pr) = (
                        (cb - c_mid16) * chroma_levels,
                        (cr - c_mid16) * chroma_levels,
                    );
                    [yl + r_cr * pr, yl - g_cb * pb - g_cr * pr, yl + b_cb * pb]
                }
            };
            out.extend(rgb.map(to8));
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn one(y: u16, u: u16, v: u16, bits: u32, full_range: bool, matrix: Matrix) -> [u8; 3] {
        let shape = Shape {
            y_stride: 1,
            uv_stride: 1,
            width: 1,
            height: 1,
            sub: (false, false),
            bits,
            full_range,
            matrix,
        };
        let out = to_rgb8(&[y], Some((&[u][..], &[v][..])), &shape).unwrap();
        [out[0], out[1], out[2]]
    }

    #[test]
    fn textbook_values() {
        // Mid-gray stays mid-gray, at every depth and range.
        assert_eq!(one(128, 128, 128, 8, true, Matrix::BT601), [128, 128, 128]);
        assert_eq!(one(512, 512, 512, 10, true, Matrix::BT601), [128, 128, 128]);
        assert_eq!(one(126, 128, 128, 8, false, Matrix::BT601), [128, 128, 128]);
        // Limited range: 16 is black and 235 white.
        assert_eq!(one(16, 128, 128, 8, false, Matrix::BT601), [0, 0, 0]);
        assert_eq!(
            one(940, 512, 512, 10, false, Matrix::BT601),
            [255, 255, 255]
        );
        // BT.601 full range, by the formula: R = Y + 1.402 Cr, G = Y - 0.344 Cb - 0.714 Cr,
        // B = Y + 1.772 Cb.
        assert_eq!(one(100, 90, 160, 8, true, Matrix::BT601), [145, 90, 33]);
        assert_eq!(one(200, 60, 100, 8, true, Matrix::BT601), [161, 243, 80]);
        // GBR.
        assert_eq!(one(10, 20, 30, 8, true, Matrix::Identity), [30, 10, 20]);
        // 12-bit white.
        assert_eq!(
            one(4095, 2048, 2048, 12, true, Matrix::BT601),
            [255, 255, 255]
        );
    }

    #[test]
    fn chroma_is_upsampled_bilinearly_and_short_planes_are_refused() {
        // 4x1 luma at mid-gray, 2x1 chroma: a blue-difference step.
        let y = [128u8; 4];
        let (u, v) = ([100u8, 156], [128u8, 128]);
        let shape = Shape {
            y_stride: 4,
            uv_stride: 2,
            width: 4,
            height: 1,
            sub: (true, true),
            bits: 8,
            full_range: true,
            matrix: Matrix::BT601,
        };
        let out = to_rgb8(&y, Some((&u[..], &v[..])), &shape).unwrap();
        let blue: Vec<u8> = out.chunks(3).map(|p| p[2]).collect();
        // Cb at the four positions: 100, 114, 142, 156 (3:1 between the two samples).
        let want: Vec<u8> = [100.0f32, 114.0, 142.0, 156.0]
            .iter()
            .map(|cb| (128.0 + 1.772 * (cb - 128.0)).round() as u8)
            .collect();
        assert_eq!(blue, want);
        assert!(to_rgb8(&y[..3], Some((&u[..], &v[..])), &shape).is_none());
    }
}
