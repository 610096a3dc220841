//! The HEIF container (ISO-BMFF `meta` items) as far as limits need it: what the primary item
//! declares (its `ispe` size and how many grid tiles it is made of), read with a bounded box
//! walk before any decoder parses the file. HEIC and AVIF share this container.

use super::{Limits, check_dims};
use crate::{Error, Format};

/// Most tiles a grid may have: an iPhone's 48 MP photo has 192 of 512x512; a hostile file can
/// declare thousands of tiny ones, each a separate decode.
pub const MAX_TILES: usize = 1024;

/// Checks the declared size and tile count against the limits. Structures it cannot follow
/// are left to the decoder, which names what is wrong.
pub(super) fn check_declared(format: Format, bytes: &[u8], limits: &Limits) -> Result<(), Error> {
    let declared = declared(bytes);
    if let Some((w, h)) = declared.size {
        check_dims(format, w, h, limits)?;
    }
    if declared.tiles > MAX_TILES {
        return Err(Error::Decode {
            format,
            message: format!(
                "a grid of {} tiles; the limit is {MAX_TILES}",
                declared.tiles
            ),
        });
    }
    Ok(())
}

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
pub(super) struct Declared {
    /// The primary item's `ispe`.
    pub size: Option<(u32, u32)>,
    /// How many images the primary item is derived from (`iref`/`dimg`): a grid's tiles.
    pub tiles: usize,
}

pub(super) fn declared(bytes: &[u8]) -> Declared {
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
pub(super) mod tests {
    use super::*;

    pub(in crate::decode) fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    /// A HEIF file whose primary item declares `width` x `height` and `tiles` grid tiles,
    /// under the major brand `brand` (`heic`, `avif`).
    pub(in crate::decode) fn heif_declaring(
        brand: &[u8; 4],
        width: u32,
        height: u32,
        tiles: u16,
    ) -> Vec<u8> {
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
        // Item 1 is derived from items 2, 3, ... (a grid's tiles).
        let mut dimg = vec![0, 1];
        dimg.extend_from_slice(&tiles.to_be_bytes());
        for t in 0..tiles {
            dimg.extend_from_slice(&(t.wrapping_add(2)).to_be_bytes());
        }
        let iref = bx(b"iref", &[&[0, 0, 0, 0][..], &bx(b"dimg", &dimg)].concat());
        let meta = bx(b"meta", &[&[0, 0, 0, 0][..], &pitm, &iprp, &iref].concat());
        let mut ftyp = brand.to_vec();
        ftyp.extend_from_slice(b"\0\0\0\0mif1");
        ftyp.extend_from_slice(brand);
        [bx(b"ftyp", &ftyp), meta].concat()
    }

    #[test]
    fn declared_size_and_tiles_are_read() {
        assert_eq!(
            declared(&heif_declaring(b"heic", 4032, 3024, 48)),
            Declared {
                size: Some((4032, 3024)),
                tiles: 48
            }
        );
        let huge = heif_declaring(b"avif", 70_000, 70_000, 0);
        assert!(matches!(
            check_declared(Format::Avif, &huge, &Limits::default()),
            Err(Error::TooManyPixels {
                width: 70_000,
                height: 70_000,
                ..
            })
        ));
        let flood = heif_declaring(b"avif", 4096, 4096, 4000);
        assert!(matches!(
            check_declared(Format::Avif, &flood, &Limits::default()),
            Err(Error::Decode { message, .. }) if message.contains("4000 tiles")
        ));
        // Cut anywhere, the walk just finds nothing.
        for n in 0..huge.len() {
            let _ = declared(&huge[..n]);
        }
        assert_eq!(declared(b"\0\0\0\x01meta"), Declared::default());
    }
}
