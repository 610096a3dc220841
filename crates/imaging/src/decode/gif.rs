//! GIF headers: frames counted by walking the blocks (the `image` crate decodes the first).

use super::{Header, Limits, check_dims};
use crate::{Error, Format};

/// GIF: the logical screen gives the size; the frames are counted by walking the blocks,
/// which needs no decoding and no allocation. Each frame's own size is held to the limits
/// too: a small screen can carry a frame claiming gigapixels, which the decoder would need a
/// buffer for.
pub(super) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    let truncated = Error::Truncated {
        format: Format::Gif,
    };
    let screen = bytes.get(6..13).ok_or(Error::Truncated {
        format: Format::Gif,
    })?;
    let width = u32::from(u16::from_le_bytes([screen[0], screen[1]]));
    let height = u32::from(u16::from_le_bytes([screen[2], screen[3]]));
    let flags = screen[4];
    let mut i = 13;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 0x07) + 1);
    }
    let skip_sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let n = usize::from(*bytes.get(i)?);
            i += 1;
            if n == 0 {
                return Some(i);
            }
            i += n;
        }
    };
    let mut frames: u32 = 0;
    let mut has_alpha = false;
    loop {
        let Some(&block) = bytes.get(i) else {
            // A file cut after its first frame still shows that frame; only a file without
            // a single complete frame is truncated.
            if frames == 0 {
                return Err(truncated);
            }
            break;
        };
        match block {
            0x21 => {
                let label = *bytes.get(i + 1).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
                // Graphic Control Extension: bit 0 of its packed byte = transparency.
                if label == 0xF9 && bytes.get(i + 3).is_some_and(|p| p & 1 == 1) {
                    has_alpha = true;
                }
                i = skip_sub_blocks(i + 2).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
            }
            0x2C => {
                let desc = bytes.get(i + 1..i + 10).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
                let frame_w = u32::from(u16::from_le_bytes([desc[4], desc[5]]));
                let frame_h = u32::from(u16::from_le_bytes([desc[6], desc[7]]));
                // An empty frame is odd but harmless; only a large one costs memory.
                if frame_w > 0 && frame_h > 0 {
                    check_dims(Format::Gif, frame_w, frame_h, limits)?;
                }
                let packed = desc[8];
                i += 10;
                if packed & 0x80 != 0 {
                    i += 3 << ((packed & 0x07) + 1);
                }
                // LZW minimum code size, then the image data sub-blocks.
                i = skip_sub_blocks(i + 1).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
                frames = frames.saturating_add(1);
            }
            // A trailer before any frame: a screen with no image on it.
            0x3B if frames == 0 => {
                return Err(Error::Decode {
                    format: Format::Gif,
                    message: "no image before the trailer".into(),
                });
            }
            0x3B => break,
            other => {
                if frames == 0 {
                    return Err(Error::Decode {
                        format: Format::Gif,
                        message: format!("unexpected block 0x{other:02x}"),
                    });
                }
                break;
            }
        }
    }
    Ok(Header {
        format: Format::Gif,
        width,
        height,
        frames,
        orientation: 1,
        has_alpha,
        color: "indexed8".into(),
        color_profile: None,
    })
}
