//! Metadata written into encoded outputs: the source's EXIF (for recipes that keep it) and an
//! ICC profile (for renditions that keep the source's colour space). Each format has its own
//! place for them; a block too large for that place is left out rather than corrupting the
//! file.

/// APP1 `Exif` right after SOI, where readers look for it first.
pub(crate) fn jpeg_with_exif(jpeg: &[u8], exif: &[u8]) -> Vec<u8> {
    let len = exif.len() + 8;
    // A marker segment length is 16 bits: an EXIF block too big for one is dropped.
    let Ok(len16) = u16::try_from(len) else {
        return jpeg.to_vec();
    };
    let mut out = Vec::with_capacity(jpeg.len() + len + 2);
    out.extend_from_slice(&jpeg[..2.min(jpeg.len())]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len16.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(exif);
    out.extend_from_slice(jpeg.get(2..).unwrap_or_default());
    out
}

/// An `eXIf` chunk after IHDR (which is 8 + 25 bytes into the file).
pub(crate) fn png_with_exif(png: &[u8], exif: &[u8]) -> Vec<u8> {
    let at = 33;
    let Ok(len) = u32::try_from(exif.len()) else {
        return png.to_vec();
    };
    if png.len() < at {
        return png.to_vec();
    }
    let mut chunk = Vec::with_capacity(exif.len() + 12);
    chunk.extend_from_slice(&len.to_be_bytes());
    chunk.extend_from_slice(b"eXIf");
    chunk.extend_from_slice(exif);
    let crc = crc32fast::hash(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    let mut out = Vec::with_capacity(png.len() + chunk.len());
    out.extend_from_slice(&png[..at]);
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[at..]);
    out
}

/// An ICC profile in APP2 `ICC_PROFILE` segments right after SOI, split into as many as it
/// needs (each carries at most 65,519 bytes; at most 255 of them).
pub(crate) fn jpeg_with_icc(jpeg: &[u8], icc: &[u8]) -> Vec<u8> {
    const CHUNK: usize = 65_519;
    let chunks: Vec<&[u8]> = icc.chunks(CHUNK).collect();
    let Ok(count) = u8::try_from(chunks.len()) else {
        return jpeg.to_vec();
    };
    let mut out = Vec::with_capacity(jpeg.len() + icc.len() + chunks.len() * 18);
    out.extend_from_slice(&jpeg[..2.min(jpeg.len())]);
    for (i, chunk) in chunks.iter().enumerate() {
        // Length counts itself (2), the 12-byte name, the two counters and the data.
        let len = (chunk.len() + 16) as u16;
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(b"ICC_PROFILE\0");
        out.extend_from_slice(&[i as u8 + 1, count]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(jpeg.get(2..).unwrap_or_default());
    out
}

/// WebP keeps an ICC profile in an `ICCP` chunk right after `VP8X`, and EXIF in an `EXIF`
/// chunk at the end, both in the extended format: a simple file (one VP8/VP8L chunk) gets a
/// VP8X header first; an extended one gets its flags set.
pub(crate) fn webp_with_metadata(
    webp: &[u8],
    icc: Option<&[u8]>,
    exif: Option<&[u8]>,
    has_alpha: bool,
    (width, height): (u32, u32),
) -> Vec<u8> {
    if webp.len() < 20 || &webp[0..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return webp.to_vec();
    }
    let too_big = |b: Option<&[u8]>| b.is_some_and(|b| u32::try_from(b.len()).is_err());
    if too_big(icc) || too_big(exif) || (icc.is_none() && exif.is_none()) {
        return webp.to_vec();
    }
    let body = &webp[12..];
    let (mut vp8x, rest): (Vec<u8>, &[u8]) = if &body[0..4] == b"VP8X" && body.len() >= 18 {
        (body[..18].to_vec(), &body[18..])
    } else {
        let mut v = Vec::with_capacity(18);
        v.extend_from_slice(b"VP8X");
        v.extend_from_slice(&10u32.to_le_bytes());
        v.push(if has_alpha { 0x10 } else { 0 });
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(&(width.saturating_sub(1)).to_le_bytes()[..3]);
        v.extend_from_slice(&(height.saturating_sub(1)).to_le_bytes()[..3]);
        (v, body)
    };
    let chunk = |out: &mut Vec<u8>, name: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
    };
    let mut chunks = Vec::with_capacity(webp.len() + icc.map_or(0, <[u8]>::len) + 64);
    if icc.is_some() {
        vp8x[8] |= 0x20;
    }
    if exif.is_some() {
        vp8x[8] |= 0x08;
    }
    chunks.extend_from_slice(&vp8x);
    if let Some(icc) = icc {
        chunk(&mut chunks, b"ICCP", icc);
    }
    chunks.extend_from_slice(rest);
    if let Some(exif) = exif {
        chunk(&mut chunks, b"EXIF", exif);
    }
    let Ok(riff_len) = u32::try_from(chunks.len() + 4) else {
        return webp.to_vec();
    };
    let mut out = Vec::with_capacity(chunks.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&chunks);
    out
}
