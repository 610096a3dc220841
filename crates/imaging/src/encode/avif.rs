//! AVIF output through libavif and libaom, the AV1 encoder sharp uses too (through libheif).
//! Measured against rav1e (the pure-Rust encoder this replaced) on six photos, libaom needed
//! about a quarter fewer bytes for the same SSIMULACRA2, at about 1.6 times rav1e's CPU and
//! still under sharp's (docs/performance.md).
//!
//! libavif is C, so this module is the one place imaging calls foreign code by hand: the
//! libavif crate's safe wrapper drops the alpha plane, which transparent renditions need.
//! Every libavif object is owned by a guard that frees it on every path.
#![allow(unsafe_code)]

use crate::{Error, Image};

#[cfg(feature = "avif")]
fn error(message: impl Into<String>) -> Error {
    Error::Encode {
        format: crate::Format::Avif,
        message: message.into(),
    }
}

/// Encodes 8-bit RGB or RGBA as 8-bit 4:4:4 AV1 (sharp's default layout too), full range,
/// tagged sRGB (BT.709 primaries, sRGB transfer, BT.601 matrix), on one thread because imgpipe
/// runs images in parallel rather than splitting one across cores.
///
/// `effort` 0..=9 is libaom's speed `9 - effort`, the mapping sharp uses, except at the default
/// effort ([`DEFAULT_EFFORT_TUNING`]). 8-bit because 10-bit costs more encode time for no fewer
/// bytes at the same score, and some decoders (sharp's prebuilt one among them) cannot read it.
/// The default effort (4) is libaom's speed 4 without its 1:4 and 4:1 partitions rather than
/// speed 5 (sharp's default, the same libaom): on bench/bytes_case.py's six photos speed 5
/// wrote 1.001 times sharp's bytes at equal SSIMULACRA2 for 0.79 times its CPU, speed 4
/// 0.988 times for 1.06 times, and speed 4 without those partition shapes (the costliest
/// search speed 4 adds, rarely chosen on photos) 0.995 times for 0.90 times. Tried and left:
/// `deltaq-mode` 1 and 3, `enable-qm`, `enable-chroma-deltaq`, `sharpness`, `tune=psnr`
/// (all as large or larger), and 4:2:0 (1.016 times: smaller on dark and smooth photos, larger
/// on textured ones).
#[cfg(feature = "avif")]
pub const DEFAULT_EFFORT_TUNING: (i32, &[(&str, &str)]) = (4, &[("enable-1to4-partitions", "0")]);

#[cfg(feature = "avif")]
pub(super) fn encode(img: &Image, quality: u8, effort: u8) -> Result<Vec<u8>, Error> {
    use libavif_sys as sys;

    let (pixels, format, channels) = match img {
        Image::ImageRgb8(buf) => (buf.as_raw(), sys::AVIF_RGB_FORMAT_RGB, 3u32),
        Image::ImageRgba8(buf) => (buf.as_raw(), sys::AVIF_RGB_FORMAT_RGBA, 4u32),
        _ => return Err(error("unexpected layout")),
    };
    let (w, h) = (img.width(), img.height());
    let row_bytes = w
        .checked_mul(channels)
        .filter(|&r| u64::from(r) * u64::from(h) == pixels.len() as u64)
        .ok_or_else(|| error("pixel buffer does not match the image size"))?;
    let effort = effort.min(super::MAX_EFFORT);
    let (speed, options) = if effort == super::DEFAULT_EFFORT {
        DEFAULT_EFFORT_TUNING
    } else {
        (9 - i32::from(effort), &[][..])
    };

    // SAFETY: avifImageCreate returns an owned image or null; the guard destroys it.
    let image = Owned::new(
        unsafe { sys::avifImageCreate(w, h, 8, sys::AVIF_PIXEL_FORMAT_YUV444) },
        |p| unsafe { sys::avifImageDestroy(p) },
    )
    .ok_or_else(|| error("out of memory for the image"))?;
    // SAFETY: `image` is a live avifImage we own; these are plain fields.
    unsafe {
        let i = &mut *image.0;
        i.yuvRange = sys::AVIF_RANGE_FULL;
        i.colorPrimaries = sys::AVIF_COLOR_PRIMARIES_BT709 as u16;
        i.transferCharacteristics = sys::AVIF_TRANSFER_CHARACTERISTICS_SRGB as u16;
        i.matrixCoefficients = sys::AVIF_MATRIX_COEFFICIENTS_BT601 as u16;
    }

    let mut rgb = sys::avifRGBImage::default();
    // SAFETY: fills `rgb`'s defaults from a live image; the pixel pointer set next outlives
    // the conversion (it borrows `img`), and libavif only reads it (RGB to YUV).
    let converted = unsafe {
        sys::avifRGBImageSetDefaults(&mut rgb, image.0);
        rgb.depth = 8;
        rgb.format = format;
        rgb.maxThreads = 1;
        rgb.pixels = pixels.as_ptr().cast_mut();
        rgb.rowBytes = row_bytes;
        sys::avifImageRGBToYUV(image.0, &rgb)
    };
    check(converted, "RGB to YUV")?;

    // SAFETY: as for the image: owned or null, destroyed by the guard.
    let encoder = Owned::new(unsafe { sys::avifEncoderCreate() }, |p| unsafe {
        sys::avifEncoderDestroy(p)
    })
    .ok_or_else(|| error("out of memory for the encoder"))?;
    // SAFETY: `encoder` is a live avifEncoder we own; these are plain fields.
    unsafe {
        let e = &mut *encoder.0;
        e.codecChoice = sys::AVIF_CODEC_CHOICE_AOM;
        e.maxThreads = 1;
        e.speed = speed;
        e.quality = i32::from(quality);
        e.qualityAlpha = i32::from(quality);
    }
    for (key, value) in options {
        let (key, value) = (
            std::ffi::CString::new(*key).map_err(|_| error("option name"))?,
            std::ffi::CString::new(*value).map_err(|_| error("option value"))?,
        );
        // SAFETY: a live encoder we own and two NUL-terminated strings that outlive the call
        // (libavif copies them); the option applies to colour and alpha alike.
        let set = unsafe {
            sys::avifEncoderSetCodecSpecificOption(encoder.0, key.as_ptr(), value.as_ptr())
        };
        check(set, "setting an encoder option")?;
    }

    let mut out = Output(sys::avifRWData::default());
    // SAFETY: both objects are live; libavif allocates `out`'s buffer, freed by its guard.
    let written = unsafe { sys::avifEncoderWrite(encoder.0, image.0, &mut out.0) };
    check(written, "encoding")?;
    if out.0.data.is_null() {
        return Err(error("the encoder wrote nothing"));
    }
    // SAFETY: on success libavif's buffer holds `size` initialised bytes until freed.
    let file = unsafe { std::slice::from_raw_parts(out.0.data, out.0.size) };
    // A layout the trimming does not know is kept as libavif wrote it.
    Ok(super::avif_container::compact(file).unwrap_or_else(|| file.to_vec()))
}

/// A libavif object and the function that frees it.
#[cfg(feature = "avif")]
struct Owned<T>(*mut T, fn(*mut T));

#[cfg(feature = "avif")]
impl<T> Owned<T> {
    fn new(ptr: *mut T, free: fn(*mut T)) -> Option<Self> {
        (!ptr.is_null()).then_some(Owned(ptr, free))
    }
}

#[cfg(feature = "avif")]
impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        (self.1)(self.0);
    }
}

#[cfg(feature = "avif")]
struct Output(libavif_sys::avifRWData);

#[cfg(feature = "avif")]
impl Drop for Output {
    fn drop(&mut self) {
        // SAFETY: frees what libavif allocated (a no-op on the empty default).
        unsafe { libavif_sys::avifRWDataFree(&mut self.0) }
    }
}

/// libavif's result as an error naming the stage and libavif's own words.
#[cfg(feature = "avif")]
fn check(result: libavif_sys::avifResult, stage: &str) -> Result<(), Error> {
    if result == libavif_sys::AVIF_RESULT_OK {
        return Ok(());
    }
    // SAFETY: avifResultToString returns a static, NUL-terminated string for any value.
    let words = unsafe { std::ffi::CStr::from_ptr(libavif_sys::avifResultToString(result)) };
    Err(error(format!("{stage}: {}", words.to_string_lossy())))
}

#[cfg(not(feature = "avif"))]
pub(super) fn encode(_img: &Image, _quality: u8, _effort: u8) -> Result<Vec<u8>, Error> {
    Err(Error::Unsupported(
        "AVIF output (imaging was built without its avif feature)".into(),
    ))
}
