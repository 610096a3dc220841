//! Colour management: what colour space a source's pixels are in (an embedded ICC profile, a
//! HEIF `nclx` or PNG `cICP` description, or PNG `gAMA`/`cHRM`), and turning them into sRGB
//! with moxcms, relative colorimetric. Pixels without any description are taken as sRGB, as
//! browsers do.

use std::sync::Arc;

use moxcms::{
    Chromaticity, CicpColorPrimaries, CicpProfile, ColorPrimaries, ColorProfile, DataColorSpace,
    Layout, MatrixCoefficients, ProfileText, RenderingIntent, ToneReprCurve,
    TransferCharacteristics, TransformExecutor, TransformOptions, XyY,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Image};

/// Largest ICC profile read. Real RGB profiles are a few kilobytes and print (CMYK) profiles a
/// few megabytes; a larger one is ignored with a warning rather than parsed.
pub const MAX_ICC_BYTES: usize = 8 << 20;

/// What a source says about its colours, as `imgpipe inspect` shows it and records keep it
/// (`source.colorProfile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileInfo {
    /// The profile's own description (e.g. "Display P3"), or a name made from the code points
    /// of an `nclx`/`cICP` description.
    pub description: String,
    /// "rgb", "gray" or "cmyk".
    pub color_space: String,
    /// Where it was read from: "icc", "nclx", "cicp" or "gama+chrm".
    pub source: String,
    /// The pixels are already sRGB: nothing is converted.
    pub srgb: bool,
    /// Why the description was not used (unreadable, unsupported): the pixels are then taken
    /// as sRGB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A source's colour description with what converting or embedding it needs.
#[derive(Clone)]
pub struct SourceProfile {
    pub info: ProfileInfo,
    /// The ICC profile to embed when a rendition keeps the source's colours: the embedded one,
    /// or one made from `nclx`/`cICP`/`gAMA` so any output format can carry it.
    icc: Option<Arc<Vec<u8>>>,
    parsed: Option<Arc<ColorProfile>>,
}

impl std::fmt::Debug for SourceProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceProfile")
            .field("info", &self.info)
            .field("icc_bytes", &self.icc.as_ref().map(|b| b.len()))
            .finish()
    }
}

impl SourceProfile {
    /// ICC bytes that describe the source's pixels, when they are not sRGB and the profile is
    /// usable for embedding (an RGB profile).
    pub fn icc_to_embed(&self) -> Option<&[u8]> {
        match self.needs_conversion() && self.info.color_space == "rgb" {
            true => self.icc.as_deref().map(Vec::as_slice),
            false => None,
        }
    }

    /// Whether pixels in this space differ from sRGB (and a usable profile says how).
    pub fn needs_conversion(&self) -> bool {
        !self.info.srgb && self.parsed.is_some()
    }

    pub(crate) fn parsed(&self) -> Option<&ColorProfile> {
        self.parsed.as_deref()
    }

    fn ignored(source: &str, color_space: &str, description: String, warning: String) -> Self {
        SourceProfile {
            info: ProfileInfo {
                description,
                color_space: color_space.into(),
                source: source.into(),
                srgb: true,
                warning: Some(warning),
            },
            icc: None,
            parsed: None,
        }
    }

    fn srgb(source: &str, description: String) -> Self {
        SourceProfile {
            info: ProfileInfo {
                description,
                color_space: "rgb".into(),
                source: source.into(),
                srgb: true,
                warning: None,
            },
            icc: None,
            parsed: None,
        }
    }

    /// A profile that was parsed: it is sRGB when converting through it changes nothing.
    fn from_parsed(
        source: &str,
        description: String,
        icc: Option<Vec<u8>>,
        p: ColorProfile,
    ) -> Self {
        let color_space = match p.color_space {
            DataColorSpace::Rgb => "rgb",
            DataColorSpace::Gray => "gray",
            DataColorSpace::Cmyk => "cmyk",
            other => {
                return Self::ignored(
                    source,
                    "other",
                    description,
                    format!("{other:?} profiles are not supported; the pixels are taken as sRGB"),
                );
            }
        };
        let srgb = color_space == "rgb" && is_identity_to_srgb(&p);
        if color_space != "cmyk"
            && let Err(e) = transform_to_srgb(&p, false)
        {
            return Self::ignored(
                source,
                color_space,
                description,
                format!("the profile cannot be applied ({e}); the pixels are taken as sRGB"),
            );
        }
        SourceProfile {
            info: ProfileInfo {
                description,
                color_space: color_space.into(),
                source: source.into(),
                srgb,
                warning: None,
            },
            icc: icc.map(Arc::new),
            parsed: Some(Arc::new(p)),
        }
    }
}

/// An embedded ICC profile. A profile that cannot be parsed is reported with a warning and
/// ignored (the pixels are then taken as sRGB), never an error: the picture is still usable.
pub fn from_icc(icc: &[u8]) -> SourceProfile {
    if icc.len() > MAX_ICC_BYTES {
        return SourceProfile::ignored(
            "icc",
            "unknown",
            "(too large)".into(),
            format!(
                "the embedded ICC profile is {} bytes, over the {MAX_ICC_BYTES}-byte limit; the pixels are taken as sRGB",
                icc.len()
            ),
        );
    }
    match ColorProfile::new_from_slice(icc) {
        Ok(p) => {
            let description = describe(&p).unwrap_or_else(|| "(no description)".into());
            SourceProfile::from_parsed("icc", description, Some(icc.to_vec()), p)
        }
        Err(e) => SourceProfile::ignored(
            "icc",
            "unknown",
            "(unreadable)".into(),
            format!("the embedded ICC profile cannot be read ({e}); the pixels are taken as sRGB"),
        ),
    }
}

/// A coding-independent description (HEIF/AVIF `nclx`, PNG `cICP`): H.273 code points.
pub fn from_cicp(source: &str, primaries: u16, transfer: u16, matrix: u16) -> SourceProfile {
    let description = cicp_name(primaries, transfer);
    // 2 = unspecified: players then assume sRGB/BT.709, and so do we.
    let srgb_primaries = matches!(primaries, 1 | 2);
    let srgb_transfer = matches!(transfer, 2 | 13);
    if srgb_primaries && srgb_transfer {
        return SourceProfile::srgb(source, description);
    }
    let p = (
        u8::try_from(primaries)
            .ok()
            .and_then(|v| CicpColorPrimaries::try_from(v).ok()),
        u8::try_from(transfer)
            .ok()
            .and_then(|v| TransferCharacteristics::try_from(v).ok()),
    );
    let (Some(color_primaries), Some(transfer_characteristics)) = p else {
        return SourceProfile::ignored(
            source,
            "rgb",
            description,
            format!(
                "colour primaries {primaries} / transfer {transfer} are not supported; the pixels are taken as sRGB"
            ),
        );
    };
    if matches!(transfer, 16 | 18) {
        return SourceProfile::ignored(
            source,
            "rgb",
            description,
            "HDR (PQ/HLG) pictures are not tone-mapped; the pixels are taken as sRGB".into(),
        );
    }
    let matrix_coefficients = u8::try_from(matrix)
        .ok()
        .and_then(|v| MatrixCoefficients::try_from(v).ok())
        .unwrap_or(MatrixCoefficients::Bt709);
    let cicp = CicpProfile {
        color_primaries,
        transfer_characteristics,
        matrix_coefficients,
        full_range: true,
    };
    // Transfer curves come from the code points too (moxcms only sets primaries from them).
    made(
        source,
        description,
        ColorProfile::new_from_cicp(cicp),
        trc_of_transfer(transfer),
    )
}

/// A profile made here from a colour description, with its transfer curve, encoded as ICC so
/// `keep` can embed the same colours in any output format.
fn made(
    source: &str,
    description: String,
    mut profile: ColorProfile,
    trc: Option<ToneReprCurve>,
) -> SourceProfile {
    if let Some(trc) = trc {
        profile.red_trc = Some(trc.clone());
        profile.green_trc = Some(trc.clone());
        profile.blue_trc = Some(trc);
    }
    profile.description = Some(ProfileText::PlainString(description.clone()));
    let icc = profile.encode().ok();
    SourceProfile::from_parsed(source, description, icc, profile)
}

/// PNG's older description: a gamma and, optionally, chromaticities. The common case (gamma
/// 1/2.2 with sRGB's or no chromaticities) is sRGB.
pub fn from_gamma(gamma: f32, chromaticities: Option<[(f32, f32); 4]>) -> SourceProfile {
    let source = "gama+chrm";
    let srgb_like = |c: &[(f32, f32); 4]| {
        let srgb = [(0.3127, 0.3290), (0.64, 0.33), (0.30, 0.60), (0.15, 0.06)];
        c.iter()
            .zip(srgb)
            .all(|(a, b)| (a.0 - b.0).abs() < 0.002 && (a.1 - b.1).abs() < 0.002)
    };
    let description = format!("gamma {gamma:.5}");
    if !(0.01..=10.0).contains(&gamma) {
        return SourceProfile::ignored(
            source,
            "rgb",
            description,
            "the gAMA value is out of range; the pixels are taken as sRGB".into(),
        );
    }
    if (gamma - 0.45455).abs() < 0.0005 && chromaticities.as_ref().is_none_or(srgb_like) {
        return SourceProfile::srgb(source, description);
    }
    let mut profile = ColorProfile::new_srgb();
    if let Some([w, r, g, b]) = chromaticities {
        let white = XyY::new(f64::from(w.0), f64::from(w.1), 1.0);
        let c = |(x, y): (f32, f32)| Chromaticity::new(x, y);
        let primaries = ColorPrimaries {
            red: c(r),
            green: c(g),
            blue: c(b),
        };
        profile.update_rgb_colorimetry(white, primaries);
    }
    // gAMA stores the encoding exponent; the decoding curve is its inverse. The sRGB
    // template's CICP tag would override the curve in transforms: it goes.
    profile.cicp = None;
    let trc = ToneReprCurve::Parametric(vec![1.0 / gamma]);
    made(source, description, profile, Some(trc))
}

/// A transfer curve in ICC parametric form for the H.273 transfer characteristics moxcms'
/// CICP constructor leaves at their defaults.
fn trc_of_transfer(transfer: u16) -> Option<ToneReprCurve> {
    // Parametric type 3: Y = (aX + b)^g for X >= d, else cX.
    let srgb = vec![2.4, 1.0 / 1.055, 0.055 / 1.055, 1.0 / 12.92, 0.04045];
    let bt709 = vec![1.0 / 0.45, 1.0 / 1.099, 0.099 / 1.099, 1.0 / 4.5, 0.081];
    Some(ToneReprCurve::Parametric(match transfer {
        13 => srgb,
        1 | 6 | 14 | 15 => bt709,
        4 => vec![2.2],
        5 => vec![2.8],
        8 => vec![1.0],
        _ => return None,
    }))
}

fn cicp_name(primaries: u16, transfer: u16) -> String {
    let p = match primaries {
        1 => "BT.709",
        2 => "unspecified primaries",
        9 => "BT.2020",
        11 => "DCI-P3",
        12 => "Display P3",
        _ => "",
    };
    let t = match transfer {
        1 | 6 | 14 | 15 => "BT.709 transfer",
        2 => "unspecified transfer",
        8 => "linear",
        13 => "sRGB transfer",
        16 => "PQ",
        18 => "HLG",
        _ => "",
    };
    match (p, t) {
        ("Display P3", "sRGB transfer") => "Display P3".into(),
        ("BT.709", "sRGB transfer") => "sRGB".into(),
        ("", _) | (_, "") => format!("primaries {primaries}, transfer {transfer}"),
        (p, t) => format!("{p}, {t}"),
    }
}

/// The profile's description tag, English where it has several.
fn describe(p: &ColorProfile) -> Option<String> {
    let text = match p.description.as_ref()? {
        ProfileText::PlainString(s) => s.clone(),
        ProfileText::Localizable(list) => list
            .iter()
            .find(|l| l.language.eq_ignore_ascii_case("en"))
            .or(list.first())
            .map(|l| l.value.clone())?,
        ProfileText::Description(d) => d.ascii_string.clone(),
    };
    let text: String = text
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    (!text.is_empty()).then_some(text)
}

/// The transform from `p` to sRGB for 8-bit RGB (or RGBA) pixels, or gray (with alpha) ones.
fn transform_to_srgb(
    p: &ColorProfile,
    alpha: bool,
) -> Result<Arc<dyn TransformExecutor<u8> + Send + Sync>, moxcms::CmsError> {
    let (src, dst) = match (p.color_space, alpha) {
        (DataColorSpace::Gray, false) => (Layout::Gray, Layout::Rgb),
        (DataColorSpace::Gray, true) => (Layout::GrayAlpha, Layout::Rgba),
        // CMYK 8-bit uses the four-channel layout.
        (DataColorSpace::Cmyk, _) => (Layout::Rgba, Layout::Rgb),
        (_, false) => (Layout::Rgb, Layout::Rgb),
        (_, true) => (Layout::Rgba, Layout::Rgba),
    };
    let with = |rendering_intent| {
        let options = TransformOptions {
            rendering_intent,
            ..TransformOptions::default()
        };
        p.create_transform_8bit(src, &ColorProfile::new_srgb(), dst, options)
    };
    // A table-based profile (most CMYK ones) may carry only its perceptual table (A2B0),
    // which the ICC specification makes the one to use when the colorimetric one is absent.
    with(RenderingIntent::RelativeColorimetric).or_else(|e| match e {
        moxcms::CmsError::UnsupportedLutRenderingIntent(_) => with(RenderingIntent::Perceptual),
        other => Err(other),
    })
}

/// Whether converting through `p` leaves 8-bit RGB values (within one level) as they are: an
/// sRGB profile under whatever name, which then costs no conversion.
fn is_identity_to_srgb(p: &ColorProfile) -> bool {
    let Ok(t) = transform_to_srgb(p, false) else {
        return false;
    };
    let steps = [0u8, 16, 48, 96, 128, 160, 200, 240, 255];
    let mut src = Vec::with_capacity(steps.len().pow(3) * 3);
    for r in steps {
        for g in steps {
            for b in steps {
                src.extend_from_slice(&[r, g, b]);
            }
        }
    }
    let mut dst = vec![0u8; src.len()];
    if t.transform(&src, &mut dst).is_err() {
        return false;
    }
    src.iter().zip(&dst).all(|(a, b)| a.abs_diff(*b) <= 1)
}

/// Rows converted per call: bounds the scratch buffer whatever the image size.
const ROWS_PER_CHUNK: usize = 64;

/// Converts pixels described by `profile` to sRGB, in place, in chunks of rows. Pixels that are
/// already sRGB (or whose description was ignored) are returned untouched.
pub fn to_srgb(mut img: Image, profile: &SourceProfile) -> Result<Image, Error> {
    let Some(p) = profile.parsed().filter(|_| profile.needs_conversion()) else {
        return Ok(img);
    };
    if p.color_space == DataColorSpace::Cmyk {
        // CMYK sources are converted while decoding, from their four channels.
        return Ok(img);
    }
    let alpha = img.color().has_alpha();
    let channels = if alpha { 4 } else { 3 };
    let gray = p.color_space == DataColorSpace::Gray;
    let t = transform_to_srgb(p, alpha).map_err(|e| Error::ColorProfile(e.to_string()))?;
    let width = img.width() as usize;
    let buf: &mut [u8] = match &mut img {
        Image::ImageRgb8(b) => b,
        Image::ImageRgba8(b) => b,
        _ => return Ok(img),
    };
    let chunk_len = width * channels * ROWS_PER_CHUNK;
    let src_channels = match (gray, alpha) {
        (true, false) => 1,
        (true, true) => 2,
        (false, _) => channels,
    };
    let mut scratch = vec![0u8; (width * src_channels * ROWS_PER_CHUNK).min(buf.len())];
    for chunk in buf.chunks_mut(chunk_len.max(1)) {
        let pixels = chunk.len() / channels;
        let src = &mut scratch[..pixels * src_channels];
        match (gray, alpha) {
            (false, _) => src.copy_from_slice(chunk),
            (true, false) => {
                for (s, px) in src.iter_mut().zip(chunk.chunks_exact(3)) {
                    *s = px[0];
                }
            }
            (true, true) => {
                for (s, px) in src.chunks_exact_mut(2).zip(chunk.chunks_exact(4)) {
                    s[0] = px[0];
                    s[1] = px[3];
                }
            }
        }
        t.transform(src, chunk)
            .map_err(|e| Error::ColorProfile(e.to_string()))?;
    }
    Ok(img)
}

/// 8-bit CMYK (ink amounts, 0 = no ink) to sRGB through a CMYK profile; `None` when the
/// profile cannot do it (the caller then uses the naive conversion).
pub(crate) fn cmyk_to_srgb(cmyk: &[u8], profile: &SourceProfile) -> Option<Vec<u8>> {
    let p = profile
        .parsed()
        .filter(|p| p.color_space == DataColorSpace::Cmyk)?;
    let t = transform_to_srgb(p, false).ok()?;
    let mut out = vec![0u8; cmyk.len() / 4 * 3];
    let rows = 4 * 4096;
    for (src, dst) in cmyk.chunks(rows * 4).zip(out.chunks_mut(rows * 3)) {
        t.transform(src, dst).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn srgb_under_any_name_costs_nothing() {
        let icc = ColorProfile::new_srgb().encode().unwrap();
        let p = from_icc(&icc);
        assert!(p.info.srgb, "{:?}", p.info);
        assert!(!p.needs_conversion());
        let p3 = from_icc(&ColorProfile::new_display_p3().encode().unwrap());
        assert!(!p3.info.srgb);
        assert_eq!(p3.info.color_space, "rgb");
        assert!(p3.icc_to_embed().is_some());
    }

    #[test]
    fn garbage_profiles_are_ignored_with_a_warning() {
        for bad in [&b""[..], b"not a profile at all", &[0xFFu8; 200][..]] {
            let p = from_icc(bad);
            assert!(p.info.warning.is_some(), "{:?}", p.info);
            assert!(!p.needs_conversion());
        }
        // A valid header with a tag table pointing past the end.
        let mut icc = ColorProfile::new_display_p3().encode().unwrap();
        icc.truncate(140);
        assert!(from_icc(&icc).info.warning.is_some());
    }

    fn convert(profile: &SourceProfile, rgb: [u8; 3]) -> [u8; 3] {
        let img = Image::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb(rgb)));
        to_srgb(img, profile).unwrap().to_rgb8().get_pixel(0, 0).0
    }

    #[test]
    fn p3_red_is_more_saturated_than_srgb_can_show() {
        let p3 = from_cicp("nclx", 12, 13, 1);
        assert_eq!(p3.info.description, "Display P3");
        assert!(p3.needs_conversion());
        // P3's red lies outside sRGB: clipped to full red.
        assert_eq!(convert(&p3, [255, 0, 0])[0], 255);
        // A P3 orange is redder and less green in sRGB numbers.
        let [r, g, _] = convert(&p3, [200, 100, 50]);
        assert!(r > 200 && g < 100, "{r} {g}");
        assert!(from_cicp("nclx", 1, 13, 1).info.srgb);
        assert!(from_gamma(0.45455, None).info.srgb);
        // Linear light (gAMA 1.0): a middle value is much brighter in sRGB numbers.
        let linear = from_gamma(1.0, None);
        assert!(linear.needs_conversion(), "{:?}", linear.info);
        let v = convert(&linear, [128, 128, 128])[1];
        assert!((186..=190).contains(&v), "{v}");
        assert!(from_cicp("nclx", 2, 2, 2).info.srgb);
        assert!(from_cicp("nclx", 9, 16, 9).info.warning.is_some());
    }
}
