//! Reading TIFF-structured data (TIFF files, camera RAWs, EXIF blocks) in its own byte order,
//! bounds-checked: every read past the end is `None`.

#[derive(Clone, Copy)]
pub(crate) struct TiffBytes<'a> {
    pub bytes: &'a [u8],
    pub little: bool,
}

impl<'a> TiffBytes<'a> {
    /// The byte order from the `II`/`MM` mark at the start; `None` without one.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let little = match bytes.get(0..2)? {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        Some(TiffBytes { bytes, little })
    }

    pub fn u16_at(&self, i: usize) -> Option<u16> {
        let b = self.bytes.get(i..i.checked_add(2)?)?;
        Some(match self.little {
            true => u16::from_le_bytes([b[0], b[1]]),
            false => u16::from_be_bytes([b[0], b[1]]),
        })
    }

    pub fn u32_at(&self, i: usize) -> Option<u32> {
        let b = self.bytes.get(i..i.checked_add(4)?)?;
        Some(match self.little {
            true => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            false => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        })
    }

    /// The offset of the first IFD and its entry count.
    pub fn first_ifd(&self) -> Option<(usize, usize)> {
        let ifd = usize::try_from(self.u32_at(4)?).ok()?;
        Some((ifd, usize::from(self.u16_at(ifd)?)))
    }
}
