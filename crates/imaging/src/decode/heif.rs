//! HEIC/HEIF: the `heic-decoder` crate (pure Rust HEVC: grids, 8 and 10 bit, `irot`/`imir`,
//! alpha, ICC and `nclx`). The declared size (`ispe`) is checked against the limits before
//! the decoder parses anything, and the coded size and tile count before any pixel is decoded.

use heic_decoder::HeifError;
use image::{DynamicImage, RgbImage, RgbaImage};

use super::{Header, Limits, buffer_mismatch, check_dims, dim};
use crate::profile::{self, SourceProfile};
use crate::{Error, Format, Image};

/// Most tiles a grid may have: an iPhone's 48 MP photo has 192 of 512x512; a hostile file can
/// declare thousands of tiny ones, each a separate decode.
pub const MAX_TILES: usize = 1024;

fn heif_error(e: HeifError) -> Error {
    let format = Format::Heic;
    match e {
        HeifError::Truncated { .. } => Error::Truncated { format },
        HeifError::Unsupported(what) => Error::Unsupported(format!("HEIC variant: {what}")),
        other => Error::Decode {
            format,
            message: other.to_string(),
        },
    }
}

pub(super) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    let declared = declared(bytes);
    if let Some((w, h)) = declared.size {
        check_dims(Format::Heic, w, h, limits)?;
    }
    if declared.tiles > MAX_TILES {
        return Err(Error::Decode {
            format: Format::Heic,
            message: format!(
                "a grid of {} tiles; the limit is {MAX_TILES}",
                declared.tiles
            ),
        });
    }
    let info = heic_decoder::probe(bytes).map_err(heif_error)?;
    let (width, height) = (
        dim(info.width, Format::Heic)?,
        dim(info.height, Format::Heic)?,
    );
    check_dims(Format::Heic, width, height, limits)?;
    let (cw, ch) = (
        dim(info.coded_width, Format::Heic)?,
        dim(info.coded_height, Format::Heic)?,
    );
    check_dims(Format::Heic, cw, ch, limits)?;
    let chroma = match info.chroma_format_idc {
        0 => "gray",
        1 => "ycbcr420",
        2 => "ycbcr422",
        _ => "ycbcr444",
    };
    Ok(Header {
        format: Format::Heic,
        width,
        height,
        frames: 1,
        // HEIF's own `irot`/`imir` turn the picture upright while decoding; its EXIF
        // orientation only restates them and is never applied a second time.
        orientation: 1,
        has_alpha: info.alpha_bit_depth.is_some(),
        color: format!("{chroma}-{}bit", info.bit_depth_luma),
        color_profile: None,
    })
}

/// The primary image's colour: its ICC profile (iPhones embed Display P3), else its `nclx`.
pub(super) fn profile(bytes: &[u8]) -> Option<SourceProfile> {
    let meta = heic_decoder::read_metadata(bytes).ok()?;
    if let Some(icc) = &meta.icc_profile {
        return Some(profile::from_icc(icc));
    }
    let c = meta.color_info?;
    Some(profile::from_cicp(
        "nclx",
        c.color_primaries,
        c.transfer_characteristics,
        c.matrix_coefficients,
    ))
}

/// Decodes the primary image (grid tiles assembled, transforms applied) to 8-bit RGB(A).
/// The caller has run [`header`] (through `probe`), which checked every size first.
pub(super) fn decode(bytes: &[u8]) -> Result<Image, Error> {
    let decoded = heic_decoder::decode(bytes).map_err(heif_error)?;
    if decoded.alpha.is_some() {
        let rgba = decoded.to_rgba8().map_err(heif_error)?;
        let (w, h) = (
            dim(rgba.width, Format::Heic)?,
            dim(rgba.height, Format::Heic)?,
        );
        let mut img = RgbaImage::from_raw(w, h, rgba.data).ok_or(buffer_mismatch(Format::Heic))?;
        if rgba.premultiplied {
            unpremultiply(&mut img);
        }
        Ok(DynamicImage::ImageRgba8(img))
    } else {
        let rgb = decoded.to_rgb8().map_err(heif_error)?;
        let (w, h) = (
            dim(rgb.width, Format::Heic)?,
            dim(rgb.height, Format::Heic)?,
        );
        RgbImage::from_raw(w, h, rgb.data)
            .map(DynamicImage::ImageRgb8)
            .ok_or(buffer_mismatch(Format::Heic))
    }
}

/// Later stages work on straight alpha.
fn unpremultiply(img: &mut RgbaImage) {
    for px in img.pixels_mut() {
        let a = u32::from(px.0[3]);
        if a > 0 && a < 255 {
            for c in &mut px.0[..3] {
                *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The declared size: the primary item's `ispe` property, read with a bounded box walk.

/// One ISO-BMFF box: (type, body) within `data`, and the offset after it.
fn next_box(data: &[u8], at: usize) -> Option<([u8; 4], &[u8], usize)> {
    let head = data.get(at..at.checked_add(8)?)?;
    let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let kind = [head[4], head[5], head[6], head[7]];
    let (header_len, size) = match size32 {
        0 => (8, data.len() - at),
        1 => {
            let b = data.get(at + 8..at + 16)?;
            let size = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            (16, usize::try_from(size).ok()?)
        }
        n => (8, n as usize),
    };
    let end = at.checked_add(size)?;
    let body = data.get(at.checked_add(header_len)?..end)?;
    Some((kind, body, end))
}

fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (kind, body, end) = next_box(data, at)?;
        at = end;
        Some((kind, body))
    })
}

fn find<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(data).find(|(k, _)| k == kind).map(|(_, b)| b)
}

/// What the container declares of the primary image before any decoder looks at it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Declared {
    /// The primary item's `ispe`.
    size: Option<(u32, u32)>,
    /// How many images the primary item is derived from (`iref`/`dimg`): a grid's tiles.
    tiles: usize,
}

fn declared(bytes: &[u8]) -> Declared {
    let meta = find(bytes, b"meta").and_then(|m| m.get(4..));
    let primary = meta.and_then(primary_item);
    match (meta, primary) {
        (Some(meta), Some(primary)) => Declared {
            size: declared_size(meta, primary),
            tiles: derived_from(meta, primary),
        },
        _ => Declared::default(),
    }
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// `meta`'s `pitm` (a full box: version and flags first).
fn primary_item(meta: &[u8]) -> Option<u32> {
    let pitm = find(meta, b"pitm")?;
    match pitm.first()? {
        0 => u16_at(pitm, 4).map(u32::from),
        _ => u32_at(pitm, 4),
    }
}

/// The number of `dimg` references from the primary item: 0 for a plain coded image.
fn derived_from(meta: &[u8], primary: u32) -> usize {
    let Some(iref) = find(meta, b"iref") else {
        return 0;
    };
    let Some(&version) = iref.first() else {
        return 0;
    };
    let refs = iref.get(4..).unwrap_or_default();
    children(refs)
        .filter(|(kind, _)| kind == b"dimg")
        .filter_map(|(_, body)| {
            let (from, count) = match version {
                0 => (u32::from(u16_at(body, 0)?), u16_at(body, 2)?),
                _ => (u32_at(body, 0)?, u16_at(body, 4)?),
            };
            (from == primary).then_some(usize::from(count))
        })
        .sum()
}

/// The width and height the primary item's `ispe` declares, or `None` when the structure
/// cannot be followed (the decoder then says what is wrong).
fn declared_size(meta: &[u8], primary: u32) -> Option<(u32, u32)> {
    let iprp = find(meta, b"iprp")?;
    let ipco = find(iprp, b"ipco")?;
    let ipma = find(iprp, b"ipma")?;
    let (version, flags) = (*ipma.first()?, *ipma.get(3)?);
    let entries = u32_at(ipma, 4)?;
    let mut at = 8;
    for _ in 0..entries {
        let item = if version < 1 {
            let v = u32::from(u16_at(ipma, at)?);
            at += 2;
            v
        } else {
            let v = u32_at(ipma, at)?;
            at += 4;
            v
        };
        let count = usize::from(*ipma.get(at)?);
        at += 1;
        let wide = flags & 1 == 1;
        for _ in 0..count {
            let index = if wide {
                let v = u16_at(ipma, at)? & 0x7FFF;
                at += 2;
                usize::from(v)
            } else {
                let v = ipma.get(at)? & 0x7F;
                at += 1;
                usize::from(v)
            };
            if item != primary || index == 0 {
                continue;
            }
            let (kind, body) = children(ipco).nth(index - 1)?;
            if &kind == b"ispe" {
                return Some((u32_at(body, 4)?, u32_at(body, 8)?));
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn heif_with_ispe(width: u32, height: u32) -> Vec<u8> {
        let mut ispe = vec![0, 0, 0, 0];
        ispe.extend_from_slice(&width.to_be_bytes());
        ispe.extend_from_slice(&height.to_be_bytes());
        // Property 1 is some other box, property 2 the ispe; item 1 uses both.
        let ipco = bx(
            b"ipco",
            &[bx(b"hvcC", &[1, 2, 3]), bx(b"ispe", &ispe)].concat(),
        );
        let ipma = bx(b"ipma", &[0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 0x81, 0x02]);
        let iprp = bx(b"iprp", &[ipco, ipma].concat());
        let pitm = bx(b"pitm", &[0, 0, 0, 0, 0, 1]);
        let meta = bx(b"meta", &[&[0, 0, 0, 0][..], &pitm, &iprp].concat());
        [bx(b"ftyp", b"heic\0\0\0\0mif1heic"), meta].concat()
    }

    #[test]
    fn declared_size_is_read_and_checked_before_decoding() {
        assert_eq!(
            declared(&heif_with_ispe(4032, 3024)),
            Declared {
                size: Some((4032, 3024)),
                tiles: 0
            }
        );
        let huge = heif_with_ispe(70_000, 70_000);
        assert!(matches!(
            header(&huge, &Limits::default()),
            Err(Error::TooManyPixels {
                width: 70_000,
                height: 70_000,
                ..
            })
        ));
        // Cut anywhere, the walk just finds nothing.
        for n in 0..huge.len() {
            let _ = declared(&huge[..n]);
        }
        assert_eq!(declared(b"\0\0\0\x01meta"), Declared::default());
    }
}
