//! Camera RAW files, told by their magic bytes (and, for the TIFF-based ones, by tags of their
//! first IFD), so they are refused by name instead of being decoded as the small preview TIFF
//! most of them start with, or passed over as unknown.

use crate::tiff_bytes::TiffBytes;

/// The RAW format's name, e.g. "Canon CR2 RAW", or `None` when the bytes are not a camera RAW.
pub fn camera_raw(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" && &bytes[8..12] == b"crx " {
        return Some("Canon CR3 RAW");
    }
    if starts(b"FUJIFILMCCD-RAW") {
        return Some("Fujifilm RAF RAW");
    }
    if starts(b"IIRO") || starts(b"IIRS") || starts(b"MMOR") {
        return Some("Olympus ORF RAW");
    }
    if starts(b"IIU\0") {
        return Some("Panasonic RW2 RAW");
    }
    if starts(b"\0MRM") {
        return Some("Minolta MRW RAW");
    }
    if starts(b"FOVb") {
        return Some("Sigma X3F RAW");
    }
    if !(starts(b"II*\0") || starts(b"MM\0*")) {
        return None;
    }
    if bytes.get(8..10) == Some(b"CR") {
        return Some("Canon CR2 RAW");
    }
    tiff_raw(TiffBytes::new(bytes)?)
}

/// Tags of IFD0 that mark a TIFF-structured RAW: DNGVersion, or a camera maker's Make together
/// with SubIFDs (where the raw data lives) or a colour filter array.
fn tiff_raw(t: TiffBytes<'_>) -> Option<&'static str> {
    let (u16_at, u32_at) = (|i| t.u16_at(i), |i| t.u32_at(i));
    // The entry count is bounded by u16 and each read by the input: no allocation.
    let (ifd, count) = t.first_ifd()?;
    let mut make: Option<&[u8]> = None;
    let mut sub_ifds = false;
    let mut cfa = false;
    for n in 0..count {
        let entry = ifd.checked_add(2 + n * 12)?;
        let tag = u16_at(entry)?;
        match tag {
            // DNGVersion.
            50706 => return Some("Adobe DNG RAW"),
            // Make (ASCII): inline when 4 bytes or fewer, else at an offset.
            271 => {
                let len = usize::try_from(u32_at(entry + 4)?).ok()?;
                let at = if len <= 4 {
                    entry + 8
                } else {
                    usize::try_from(u32_at(entry + 8)?).ok()?
                };
                make = t.bytes.get(at..at.checked_add(len.min(64))?);
            }
            330 => sub_ifds = true,
            // PhotometricInterpretation = CFA (32803) or LinearRaw (34892).
            262 => cfa = matches!(u16_at(entry + 8), Some(32803 | 34892)),
            _ => {}
        }
    }
    if !(sub_ifds || cfa) {
        return None;
    }
    let make = String::from_utf8_lossy(make?).to_ascii_uppercase();
    let name = [
        ("NIKON", "Nikon NEF RAW"),
        ("SONY", "Sony ARW RAW"),
        ("CANON", "Canon RAW"),
        ("PENTAX", "Pentax PEF RAW"),
        ("RICOH", "Pentax PEF RAW"),
        ("SAMSUNG", "Samsung SRW RAW"),
        ("OLYMPUS", "Olympus ORF RAW"),
        ("FUJIFILM", "Fujifilm RAF RAW"),
        ("LEICA", "Leica RAW"),
        ("HASSELBLAD", "Hasselblad 3FR RAW"),
        ("PHASE ONE", "Phase One IIQ RAW"),
        ("KODAK", "Kodak DCR RAW"),
        ("EPSON", "Epson ERF RAW"),
        ("MAMIYA", "Mamiya MEF RAW"),
    ]
    .into_iter()
    .find(|(maker, _)| make.starts_with(maker))
    .map(|(_, name)| name);
    // A camera's colour filter array with an unknown maker is still a RAW.
    name.or(cfa.then_some("camera RAW"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian TIFF header with IFD0 holding the given (tag, type, count, value)
    /// entries, and `extra` appended after the IFD.
    fn tiff(entries: &[(u16, u16, u32, u32)], extra: &[u8]) -> Vec<u8> {
        let mut out = vec![b'I', b'I', 42, 0, 8, 0, 0, 0];
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for &(tag, ty, count, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(extra);
        out
    }

    #[test]
    fn raws_are_named_by_their_bytes() {
        let mut cr2 = tiff(&[(256, 3, 1, 16)], &[]);
        cr2[8] = b'C';
        cr2[9] = b'R';
        assert_eq!(camera_raw(&cr2), Some("Canon CR2 RAW"));
        assert_eq!(
            camera_raw(&tiff(&[(50706, 1, 4, 0x0001_0401)], &[])),
            Some("Adobe DNG RAW")
        );
        // Make "NIKON CORPORATION\0" (18 bytes) stored after the IFD, plus SubIFDs.
        let make_at = 8 + 2 + 2 * 12 + 4;
        let nef = tiff(
            &[(271, 2, 18, make_at as u32), (330, 4, 1, 0)],
            b"NIKON CORPORATION\0",
        );
        assert_eq!(camera_raw(&nef), Some("Nikon NEF RAW"));
        let arw = tiff(&[(271, 2, 5, make_at as u32), (330, 4, 1, 0)], b"SONY\0");
        // "SONY\0" is 5 bytes: stored at the offset.
        assert_eq!(camera_raw(&arw), Some("Sony ARW RAW"));
        assert_eq!(
            camera_raw(b"\0\0\0\x18ftypcrx \0\0\0\x01"),
            Some("Canon CR3 RAW")
        );
        assert_eq!(
            camera_raw(b"FUJIFILMCCD-RAW 0201"),
            Some("Fujifilm RAF RAW")
        );
    }

    #[test]
    fn ordinary_tiffs_are_not_raw() {
        // A scanner's TIFF with a maker but no SubIFDs or CFA.
        let make_at = 8 + 2 + 2 * 12 + 4;
        let scan = tiff(&[(271, 2, 6, make_at as u32), (256, 3, 1, 8)], b"NIKON\0");
        assert_eq!(camera_raw(&scan), None);
        assert_eq!(camera_raw(b"II*\0"), None);
        assert_eq!(camera_raw(b"\xFF\xD8\xFF"), None);
        // An IFD offset past the end reads nothing.
        assert_eq!(camera_raw(b"II*\0\xff\xff\xff\x7f"), None);
    }
}
