//! Edits to the AVIF container libavif writes (ftyp, meta, mdat; `iloc` version 0 with 4-byte
//! offsets and lengths, no base offset; `ipma` version 0 with 1-byte indices): the bytes it
//! spends on names and a duplicated colour box are taken out, and an ICC profile is added.
//! Any other layout is left alone (`None`): the caller keeps the encoder's file or names the
//! failure. The AV1 data itself is never touched; only `meta` is rebuilt and every `iloc`
//! offset moved by what `meta` grew or shrank.

type Boxes = Vec<([u8; 4], Vec<u8>)>;

/// libavif's file without what a decoder does not need, about 32 bytes (3 % of a small
/// thumbnail): the handler name ("libavif") and the item names ("Color", "Alpha") become
/// empty, and the `nclx` colour box goes, since the AV1 sequence header carries the same
/// code points and full-range flag (libavif sets them in both; sharp's files have no `colr`
/// either).
#[cfg(feature = "avif")]
pub(super) fn compact(avif: &[u8]) -> Option<Vec<u8>> {
    rebuild_meta(avif, |children| {
        let mut out = Boxes::new();
        for (kind, whole) in children {
            let whole = match &kind {
                b"hdlr" => unnamed_hdlr(&whole)?,
                b"iinf" => unnamed_iinf(&whole)?,
                b"iprp" => without_nclx(&whole)?,
                _ => whole,
            };
            out.push((kind, whole));
        }
        Some(out)
    })
}

/// Adds the profile as a `colr` (`prof`) property of the primary item.
pub(crate) fn with_icc(avif: &[u8], icc: &[u8]) -> Option<Vec<u8>> {
    let mut colr = b"prof".to_vec();
    colr.extend_from_slice(icc);
    let colr = with_size(b"colr", &colr)?;
    rebuild_meta(avif, |children| {
        let primary = children
            .iter()
            .find(|(k, _)| k == b"pitm")
            .and_then(|(_, b)| b.get(12..14))
            .map(|b| u16::from_be_bytes([b[0], b[1]]))?;
        let mut out = Boxes::new();
        for (kind, whole) in children {
            if &kind != b"iprp" {
                out.push((kind, whole));
                continue;
            }
            let props = boxes(whole.get(8..)?)?;
            let (_, ipco) = props.iter().find(|(k, _)| k == b"ipco")?;
            let index = boxes(ipco.get(8..)?)?.len() + 1;
            let index = u8::try_from(index).ok().filter(|i| (1..0x80).contains(i))?;
            let mut iprp = Vec::new();
            for (k, w) in &props {
                match k {
                    b"ipco" => {
                        let mut body = w.get(8..)?.to_vec();
                        body.extend_from_slice(&colr);
                        iprp.extend_from_slice(&with_size(b"ipco", &body)?);
                    }
                    b"ipma" => iprp.extend_from_slice(&remap_ipma(w, |item, assoc| {
                        let mut assoc = assoc.to_vec();
                        if item == primary {
                            assoc.push(index);
                        }
                        Some(assoc)
                    })?),
                    _ => iprp.extend_from_slice(w),
                }
            }
            out.push((kind, with_size(b"iprp", &iprp)?));
        }
        Some(out)
    })
}

/// `hdlr` with an empty name: full box header, pre_defined, handler_type, three reserved
/// words, then the NUL-terminated name.
#[cfg(feature = "avif")]
fn unnamed_hdlr(whole: &[u8]) -> Option<Vec<u8>> {
    let mut body = whole.get(8..32)?.to_vec();
    body.push(0);
    with_size(b"hdlr", &body)
}

/// `iinf` whose `infe` entries (version 2: 16-bit ids) have empty names. The name is the
/// entry's last field for the image items libavif writes (no MIME or URI type).
#[cfg(feature = "avif")]
fn unnamed_iinf(whole: &[u8]) -> Option<Vec<u8>> {
    // Version 0: 16-bit entry count.
    if whole.get(8)? != &0 {
        return None;
    }
    let mut body = whole.get(8..14)?.to_vec();
    for (kind, infe) in boxes(whole.get(14..)?)? {
        if &kind != b"infe" || infe.get(8)? != &2 {
            return None;
        }
        let item_type = infe.get(16..20)?;
        if item_type == b"mime" || item_type == b"uri " {
            return None;
        }
        let mut e = infe.get(8..20)?.to_vec();
        e.push(0);
        body.extend_from_slice(&with_size(b"infe", &e)?);
    }
    with_size(b"iinf", &body)
}

/// `iprp` without its `nclx` colour properties, every association renumbered to match.
#[cfg(feature = "avif")]
fn without_nclx(whole: &[u8]) -> Option<Vec<u8>> {
    let props = boxes(whole.get(8..)?)?;
    let (_, ipco) = props.iter().find(|(k, _)| k == b"ipco")?;
    let list = boxes(ipco.get(8..)?)?;
    // 1-based property index -> new index, 0 for a removed one.
    let mut new_index = Vec::with_capacity(list.len() + 1);
    new_index.push(0u8);
    let mut kept = Vec::new();
    for (kind, prop) in &list {
        if kind == b"colr" && prop.get(8..12)? == b"nclx" {
            new_index.push(0);
        } else {
            kept.extend_from_slice(prop);
            new_index.push(u8::try_from(new_index.len() - removed(&new_index)).ok()?);
        }
    }
    let mut iprp = Vec::new();
    for (k, w) in &props {
        match k {
            b"ipco" => iprp.extend_from_slice(&with_size(b"ipco", &kept)?),
            b"ipma" => iprp.extend_from_slice(&remap_ipma(w, |_, assoc| {
                let mut out = Vec::with_capacity(assoc.len());
                for &a in assoc {
                    let to = *new_index.get(usize::from(a & 0x7f))?;
                    if to != 0 {
                        out.push((a & 0x80) | to);
                    }
                }
                Some(out)
            })?),
            _ => iprp.extend_from_slice(w),
        }
    }
    with_size(b"iprp", &iprp)
}

/// How many properties have been removed so far (zeros after the leading placeholder).
#[cfg(feature = "avif")]
fn removed(new_index: &[u8]) -> usize {
    new_index.iter().skip(1).filter(|&&i| i == 0).count()
}

/// `ipma` (version 0, flags 0: 16-bit item ids, 1-byte associations) with each item's
/// associations replaced by `f(item, associations)`.
fn remap_ipma(whole: &[u8], mut f: impl FnMut(u16, &[u8]) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    if whole.get(8..12)? != [0, 0, 0, 0] {
        return None;
    }
    let count = be32(whole, 12)?;
    let mut body = whole.get(8..16)?.to_vec();
    let mut at = 16;
    for _ in 0..count {
        let item = u16::from_be_bytes([*whole.get(at)?, *whole.get(at + 1)?]);
        let n = usize::from(*whole.get(at + 2)?);
        let assoc = f(item, whole.get(at + 3..at + 3 + n)?)?;
        body.extend_from_slice(&item.to_be_bytes());
        body.push(u8::try_from(assoc.len()).ok()?);
        body.extend_from_slice(&assoc);
        at += 3 + n;
    }
    with_size(b"ipma", &body)
}

/// The file with `meta`'s children replaced by `edit`'s, and `iloc` offsets moved by the
/// change in `meta`'s size. Offsets are absolute, so only data after `meta` may be pointed at;
/// libavif puts `mdat` last.
fn rebuild_meta(avif: &[u8], edit: impl FnOnce(Boxes) -> Option<Boxes>) -> Option<Vec<u8>> {
    let top = boxes(avif)?;
    let meta_at = top.iter().position(|(k, _)| k == b"meta")?;
    let meta = top[meta_at].1;
    // meta: 8-byte header, 4 bytes of version and flags, then child boxes.
    let children = boxes(meta.get(12..)?)?
        .into_iter()
        .map(|(k, w)| (k, w.to_vec()))
        .collect();
    let mut rebuilt = edit(children)?;
    let new_len = rebuilt.iter().map(|(_, b)| b.len()).sum::<usize>() + 12;
    let delta = i64::try_from(new_len).ok()? - i64::try_from(meta.len()).ok()?;
    for (kind, whole) in &mut rebuilt {
        if kind == b"iloc" {
            shift_iloc(whole, delta)?;
        }
    }
    let mut body = meta.get(8..12)?.to_vec();
    for (_, b) in &rebuilt {
        body.extend_from_slice(b);
    }
    let mut out = Vec::with_capacity(avif.len() + new_len);
    for (i, (_, whole)) in top.iter().enumerate() {
        if i == meta_at {
            out.extend_from_slice(&with_size(b"meta", &body)?);
        } else {
            out.extend_from_slice(whole);
        }
    }
    Some(out)
}

/// Moves every extent offset of an `iloc` (version 0, offset_size 4, length_size 4, no base
/// offset) by `delta`.
fn shift_iloc(whole: &mut [u8], delta: i64) -> Option<()> {
    if whole.get(8..14)? != [0, 0, 0, 0, 0x44, 0] {
        return None;
    }
    let items = u16::from_be_bytes([*whole.get(14)?, *whole.get(15)?]);
    let mut at = 16;
    for _ in 0..items {
        let extents = u16::from_be_bytes([*whole.get(at + 4)?, *whole.get(at + 5)?]);
        at += 6;
        for _ in 0..extents {
            let offset = u32::try_from(i64::from(be32(whole, at)?) + delta).ok()?;
            whole
                .get_mut(at..at + 4)?
                .copy_from_slice(&offset.to_be_bytes());
            at += 8;
        }
    }
    Some(())
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Top-level boxes of `data` as (type, whole box) slices; `None` if any is malformed.
fn boxes(data: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let size = usize::try_from(be32(data, at)?).ok()?;
        if size < 8 {
            return None;
        }
        let whole = data.get(at..at.checked_add(size)?)?;
        out.push(([whole[4], whole[5], whole[6], whole[7]], whole));
        at += size;
    }
    Some(out)
}

fn with_size(kind: &[u8; 4], body: &[u8]) -> Option<Vec<u8>> {
    let size = u32::try_from(body.len() + 8).ok()?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    Some(out)
}
