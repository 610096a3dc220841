//! AVIF: the container read by `zenavif-parse` (grids, alpha, `colr`, `irot`/`imir`/`clap`,
//! with its own resource limits), each AV1 image decoded by `re_rav1d` (dav1d's Rust port,
//! through its safe API), YCbCr turned into RGB by [`super::ycbcr`]. Nothing is built from C.
//!
//! Sizes are checked three times before the buffers they govern exist: the primary item's
//! `ispe` and tile count by our own box walk, before any parser runs; the grid's output size or
//! the AV1 sequence header's frame size before a decoder runs; every decoded frame's size
//! before it is converted.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, RgbImage, RgbaImage};
use re_rav1d::dav1d::{
    self as av1, Decoder, Picture, PixelLayout, PlanarImageComponent as Plane, Settings,
    pixel::YUVRange,
};
use zenavif_parse::{AV1Metadata, AvifParser, ColorInformation, DecodeConfig};

use super::ycbcr::{self, Matrix, Shape};
use super::{Header, Limits, buffer_mismatch, check_dims, isobmff, unpremultiply};
use crate::profile::{self, SourceProfile};
use crate::{Error, Format, Image};

const FORMAT: Format = Format::Avif;

fn decode_error(message: impl Into<String>) -> Error {
    Error::Decode {
        format: FORMAT,
        message: message.into(),
    }
}

fn parse_error(e: zenavif_parse::Error) -> Error {
    use zenavif_parse::Error as E;
    match e {
        E::UnexpectedEOF => Error::Truncated { format: FORMAT },
        E::Unsupported(what) => Error::Unsupported(format!("AVIF variant: {what}")),
        E::ResourceLimitExceeded(what) => decode_error(format!("over a limit: {what}")),
        other => decode_error(other.to_string()),
    }
}

/// The container, parsed under limits derived from the service's own.
fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<AvifParser<'a>, Error> {
    let megapixels = u32::try_from(limits.max_pixels.div_ceil(1_000_000)).unwrap_or(u32::MAX);
    let config = DecodeConfig::default()
        .with_total_megapixels_limit(megapixels)
        .with_max_grid_tiles(isobmff::MAX_TILES as u32)
        .with_max_animation_frames(limits.max_frames)
        // What the parser itself may hold: the file's payloads, not pixels.
        .with_peak_memory_limit(limits.max_bytes.saturating_mul(2));
    AvifParser::from_bytes_with_config(bytes, &config, &zenavif_parse::Unstoppable)
        .map_err(parse_error)
}

/// A grid image's layout: its `ImageGrid` descriptor, which is the grid item's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grid {
    rows: u32,
    columns: u32,
    width: u32,
    height: u32,
}

/// Reads an `ImageGrid` (HEIF 6.6.2.3): version 0, flags (bit 0: 32-bit sizes), rows and
/// columns less one, then the output width and height.
fn image_grid(data: &[u8]) -> Option<Grid> {
    let (&version, &flags) = (data.first()?, data.get(1)?);
    if version != 0 {
        return None;
    }
    let (rows, columns) = (u32::from(*data.get(2)?) + 1, u32::from(*data.get(3)?) + 1);
    let field = |i: usize| -> Option<u32> {
        if flags & 1 == 1 {
            let b = data.get(4 + 4 * i..8 + 4 * i)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            let b = data.get(4 + 2 * i..6 + 2 * i)?;
            Some(u32::from(u16::from_be_bytes([b[0], b[1]])))
        }
    };
    Some(Grid {
        rows,
        columns,
        width: field(0)?,
        height: field(1)?,
    })
}

/// What the primary image is made of, and the size it comes out at.
struct Layout {
    grid: Option<Grid>,
    /// The first coded image's sequence header (a grid's first tile).
    coded: AV1Metadata,
    /// The primary image's size as coded (a grid's output size), before `clap` and `irot`.
    width: u32,
    height: u32,
}

fn layout(parser: &AvifParser<'_>, limits: &Limits) -> Result<Layout, Error> {
    // The parser finds a grid's tiles; its layout is read here from the grid item's own data
    // (the parser would guess it from the sizes, wrongly when the tiles overhang the image).
    let grid = match parser.grid_config() {
        None => None,
        Some(_) => {
            let data = parser.primary_data().map_err(parse_error)?;
            Some(image_grid(&data).ok_or_else(|| decode_error("an unreadable ImageGrid"))?)
        }
    };
    let first = match &grid {
        Some(_) => parser.tile_data(0),
        None => primary_data(parser),
    }
    .map_err(parse_error)?;
    let coded = AV1Metadata::parse_av1_bitstream(&first).map_err(parse_error)?;
    let (tile_w, tile_h) = (coded.max_frame_width.get(), coded.max_frame_height.get());
    check_dims(FORMAT, tile_w, tile_h, limits)?;
    let (width, height) = match &grid {
        None => (tile_w, tile_h),
        Some(g) => {
            let tiles = g.rows * g.columns;
            if tiles as usize != parser.grid_tile_count() {
                return Err(decode_error(format!(
                    "a {}x{} grid with {} tiles",
                    g.columns,
                    g.rows,
                    parser.grid_tile_count()
                )));
            }
            (g.width, g.height)
        }
    };
    check_dims(FORMAT, width, height, limits)?;
    Ok(Layout {
        grid,
        coded,
        width,
        height,
    })
}

/// The still image, or the first frame of an image sequence that has no still item.
fn primary_data<'a>(parser: &'a AvifParser<'_>) -> Result<Cow<'a, [u8]>, zenavif_parse::Error> {
    match parser.primary_data() {
        Ok(data) if !data.is_empty() => Ok(data),
        other if parser.animation_info().is_some() => parser.frame(0).map(|f| f.data).or(other),
        other => other,
    }
}

pub(super) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    isobmff::check_declared(FORMAT, bytes, limits)?;
    let parser = parse(bytes, limits)?;
    let layout = layout(&parser, limits)?;
    let (width, height) = transformed_size(&parser, layout.width, layout.height);
    let c = &layout.coded;
    let chroma = match (
        c.monochrome,
        c.chroma_subsampling.horizontal,
        c.chroma_subsampling.vertical,
    ) {
        (true, _, _) => "gray",
        (false, true, true) => "ycbcr420",
        (false, true, false) => "ycbcr422",
        _ => "ycbcr444",
    };
    let frames = parser
        .animation_info()
        .map_or(1, |a| u32::try_from(a.frame_count).unwrap_or(u32::MAX))
        .max(1);
    Ok(Header {
        format: FORMAT,
        width,
        height,
        frames,
        // `irot`/`imir` turn the picture upright while decoding; an EXIF orientation in the
        // file only restates them and is never applied a second time.
        orientation: 1,
        has_alpha: parser.alpha_data().is_some(),
        color: format!("{chroma}-{}bit", c.bit_depth),
        color_profile: None,
    })
}

/// The primary item's colour: its ICC profile, else its `nclx`. Without a `colr` box the
/// image is taken as sRGB, as browsers do.
pub(super) fn profile(bytes: &[u8]) -> Option<SourceProfile> {
    let parser = AvifParser::from_bytes(bytes).ok()?;
    match parser.color_info()? {
        ColorInformation::IccProfile(icc) => Some(profile::from_icc(icc)),
        ColorInformation::Nclx {
            color_primaries,
            transfer_characteristics,
            matrix_coefficients,
            ..
        } => Some(profile::from_cicp(
            "nclx",
            *color_primaries,
            *transfer_characteristics,
            *matrix_coefficients,
        )),
    }
}

/// Decodes the primary image (a grid's tiles assembled, `clap`, `irot` and `imir` applied) to
/// 8-bit RGB, or RGBA when it has an alpha image. The caller has run [`header`].
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, Error> {
    let parser = parse(bytes, limits)?;
    let layout = layout(&parser, limits)?;
    // The container's nclx is authoritative for the matrix; else the sequence header's.
    let matrix = match parser.color_info() {
        Some(ColorInformation::Nclx {
            matrix_coefficients,
            ..
        }) => Some(*matrix_coefficients),
        _ => None,
    };
    let mut decoder = Av1::new(limits)?;
    let color = match &layout.grid {
        None => {
            let data = primary_data(&parser).map_err(parse_error)?;
            let pic = decoder.decode(&data)?;
            expect_size(&pic, layout.width, layout.height)?;
            to_rgb8(&pic, matrix)?
        }
        Some(grid) => assemble_grid(&parser, grid, &layout, matrix, &mut decoder)?,
    };
    let mut img = match parser.alpha_data() {
        None => DynamicImage::ImageRgb8(color),
        Some(_) if layout.grid.is_some() => {
            return Err(Error::Unsupported(
                "AVIF variant: a grid image with an alpha grid".into(),
            ));
        }
        Some(alpha) => {
            let alpha = alpha.map_err(parse_error)?;
            let pic = decoder.decode(&alpha)?;
            expect_size(&pic, layout.width, layout.height)?;
            let mut rgba = with_alpha(&color, &alpha_plane(&pic)?)?;
            if parser.premultiplied_alpha() {
                unpremultiply(&mut rgba);
            }
            DynamicImage::ImageRgba8(rgba)
        }
    };
    img = apply_transforms(&parser, img);
    Ok(img)
}

fn expect_size(pic: &Picture, width: u32, height: u32) -> Result<(), Error> {
    if (pic.width(), pic.height()) == (width, height) {
        Ok(())
    } else {
        Err(decode_error(format!(
            "the AV1 image is {}x{}, the container says {width}x{height}",
            pic.width(),
            pic.height()
        )))
    }
}

/// Decodes every tile (all the size of the first, as the format requires) into one canvas of
/// the grid's output size, cutting what overhangs its right and bottom edges.
fn assemble_grid(
    parser: &AvifParser<'_>,
    grid: &Grid,
    layout: &Layout,
    matrix: Option<u16>,
    decoder: &mut Av1,
) -> Result<RgbImage, Error> {
    let (tile_w, tile_h) = (
        layout.coded.max_frame_width.get(),
        layout.coded.max_frame_height.get(),
    );
    let columns = grid.columns;
    if u64::from(tile_w) * u64::from(columns) < u64::from(layout.width)
        || u64::from(tile_h) * u64::from(grid.rows) < u64::from(layout.height)
    {
        return Err(decode_error(format!(
            "{}x{} tiles of {tile_w}x{tile_h} do not cover {}x{}",
            grid.columns, grid.rows, layout.width, layout.height
        )));
    }
    let mut canvas = RgbImage::new(layout.width, layout.height);
    for index in 0..parser.grid_tile_count() {
        let data = parser.tile_data(index).map_err(parse_error)?;
        let pic = decoder.decode(&data)?;
        expect_size(&pic, tile_w, tile_h)?;
        let tile = to_rgb8(&pic, matrix)?;
        let i = u32::try_from(index).map_err(|_| decode_error("too many tiles"))?;
        let (x0, y0) = ((i % columns) * tile_w, (i / columns) * tile_h);
        for (x, y, px) in tile.enumerate_pixels() {
            if let Some(dst) = canvas.get_pixel_mut_checked(x0 + x, y0 + y) {
                *dst = *px;
            }
        }
    }
    Ok(canvas)
}

/// `clap` (a centred crop), then `irot` (anticlockwise), then `imir`, in the order HEIF
/// prescribes. A `clap` that does not describe whole pixels inside the image is ignored, as
/// browsers do, and the whole image shown.
fn apply_transforms(parser: &AvifParser<'_>, mut img: Image) -> Image {
    if let Some((x, y, w, h)) = parser
        .clean_aperture()
        .and_then(|c| crop_rect(c, img.width(), img.height()))
    {
        img = img.crop_imm(x, y, w, h);
    }
    img = match parser.rotation().map(|r| r.angle) {
        Some(90) => img.rotate270(),
        Some(180) => img.rotate180(),
        Some(270) => img.rotate90(),
        _ => img,
    };
    match parser.mirror().map(|m| m.axis) {
        // Axis 0 is the vertical axis: left and right swap.
        Some(0) => img.fliph(),
        Some(_) => img.flipv(),
        None => img,
    }
}

/// The size [`apply_transforms`] turns a `width` x `height` image into.
fn transformed_size(parser: &AvifParser<'_>, width: u32, height: u32) -> (u32, u32) {
    let (w, h) = parser
        .clean_aperture()
        .and_then(|c| crop_rect(c, width, height))
        .map_or((width, height), |(_, _, w, h)| (w, h));
    match parser.rotation().map(|r| r.angle) {
        Some(90 | 270) => (h, w),
        _ => (w, h),
    }
}

/// The clean aperture as (x, y, width, height) in whole pixels, if it is one inside the image.
fn crop_rect(
    c: &zenavif_parse::CleanAperture,
    width: u32,
    height: u32,
) -> Option<(u32, u32, u32, u32)> {
    let whole = |n: i64, d: u32| (d != 0 && n % i64::from(d) == 0).then(|| n / i64::from(d));
    let w = whole(i64::from(c.width_n), c.width_d)?;
    let h = whole(i64::from(c.height_n), c.height_d)?;
    // The offsets are of the crop's centre from the image's centre; doubled, so that an odd
    // difference of sizes stays exact.
    let off_x2 = whole(2 * i64::from(c.horiz_off_n), c.horiz_off_d)?;
    let off_y2 = whole(2 * i64::from(c.vert_off_n), c.vert_off_d)?;
    let x2 = off_x2 + i64::from(width) - w;
    let y2 = off_y2 + i64::from(height) - h;
    if x2 % 2 != 0 || y2 % 2 != 0 {
        return None;
    }
    let (x, y) = (x2 / 2, y2 / 2);
    let inside = w > 0
        && h > 0
        && x >= 0
        && y >= 0
        && x + w <= i64::from(width)
        && y + h <= i64::from(height);
    inside
        .then(|| {
            (
                u32::try_from(x).ok(),
                u32::try_from(y).ok(),
                u32::try_from(w).ok(),
                u32::try_from(h).ok(),
            )
        })
        .and_then(|(x, y, w, h)| Some((x?, y?, w?, h?)))
}

// ---------------------------------------------------------------------------------------------
// AV1 images.

/// One decoder for every image of a file (tiles, then alpha), each a key frame of its own.
struct Av1(Decoder);

/// "Not yet" answers one image may get from the decoder, counting both `get_picture` and
/// `send_pending_data`: with one thread and a frame delay of 1 a valid image comes out on the
/// first or second call. The bound keeps hostile data from looping, and keeps small the
/// decoder API's 48-byte leak for every "not yet" (README, "Formats and colour").
const DRAIN_ATTEMPTS: usize = 4;

fn av1_error(e: av1::Error) -> Error {
    decode_error(format!("AV1: {e}"))
}

impl Av1 {
    fn new(limits: &Limits) -> Result<Self, Error> {
        let mut settings = Settings::new();
        // One thread: a still image gains little from frame threads, memory stays per image,
        // and a failure in the decoder stays on the calling thread, where it is caught.
        settings.set_n_threads(1);
        settings.set_max_frame_delay(1);
        // The decoder refuses larger frames itself, whatever the headers said.
        settings.set_frame_size_limit(u32::try_from(limits.max_pixels).unwrap_or(u32::MAX));
        settings.set_all_layers(false);
        Decoder::with_settings(&settings)
            .map(Av1)
            .map_err(av1_error)
    }

    /// Decodes one AV1 image. A panic inside the decoder (a bug it meets on hostile data)
    /// becomes a named error instead of taking the process down.
    fn decode(&mut self, data: &[u8]) -> Result<Picture, Error> {
        let decoder = &mut self.0;
        let owned = data.to_vec();
        catch_unwind(AssertUnwindSafe(move || {
            let mut pending = match decoder.send_data(owned, None, None, None) {
                Ok(()) => false,
                Err(e) if e.is_again() => true,
                Err(e) => return Err(av1_error(e)),
            };
            for _ in 0..DRAIN_ATTEMPTS {
                match decoder.get_picture() {
                    Ok(pic) => return Ok(pic),
                    Err(e) if !e.is_again() => return Err(av1_error(e)),
                    Err(_) if pending => match decoder.send_pending_data() {
                        Ok(()) => pending = false,
                        Err(e) if e.is_again() => {}
                        Err(e) => return Err(av1_error(e)),
                    },
                    Err(_) => {}
                }
            }
            Err(decode_error("the AV1 data holds no image"))
        }))
        .unwrap_or_else(|_| Err(decode_error("the AV1 decoder failed on this data")))
    }
}

/// H.273 matrix coefficients as a [`Matrix`], or the one AVIF uses that is not supported,
/// named.
fn yuv_matrix(code: u16) -> Result<Matrix, Error> {
    Matrix::from_h273(code).ok_or_else(|| {
        Error::Unsupported(match code {
            8 => "AVIF with YCgCo colour (matrix coefficients 8)".into(),
            other => format!("AVIF with matrix coefficients {other}"),
        })
    })
}

/// A plane's samples, 16-bit ones read from their native-endian bytes.
fn samples16(pic: &Picture, plane: Plane) -> Vec<u16> {
    pic.plane(plane)
        .chunks_exact(2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .collect()
}

/// The decoded picture as 8-bit RGB, converted with `matrix` (the container's) or else the
/// one its sequence header names, at the range the sequence header gives.
fn to_rgb8(pic: &Picture, matrix: Option<u16>) -> Result<RgbImage, Error> {
    let (w, h) = (pic.width(), pic.height());
    let layout = pic.pixel_layout();
    let sub = match layout {
        PixelLayout::I420 => (true, true),
        PixelLayout::I422 => (true, false),
        PixelLayout::I400 | PixelLayout::I444 => (false, false),
    };
    let matrix = yuv_matrix(matrix.unwrap_or(pic.matrix_coefficients() as u16))?;
    if matrix == Matrix::Identity && sub != (false, false) {
        return Err(decode_error("identity (GBR) colour with subsampled chroma"));
    }
    let gray = layout == PixelLayout::I400;
    let full_range = pic.color_range() == YUVRange::Full;
    let bits = pic.bits_per_component().map_or(8, |b| b.0 as u32);
    // Strides are in bytes; the conversion counts samples.
    let shape = |bytes: usize| Shape {
        y_stride: pic.stride(Plane::Y) as usize / bytes,
        uv_stride: pic.stride(Plane::U) as usize / bytes,
        width: w as usize,
        height: h as usize,
        sub,
        bits,
        full_range,
        matrix,
    };
    let rgb = if pic.bit_depth() == 8 {
        let y = pic.plane(Plane::Y);
        // A monochrome picture has no chroma planes to ask for.
        let uv = (!gray).then(|| (pic.plane(Plane::U), pic.plane(Plane::V)));
        let uv = uv.as_ref().map(|(u, v)| (&u[..], &v[..]));
        ycbcr::to_rgb8(&y, uv, &shape(1))
    } else {
        let y = samples16(pic, Plane::Y);
        let uv = (!gray).then(|| (samples16(pic, Plane::U), samples16(pic, Plane::V)));
        let uv = uv.as_ref().map(|(u, v)| (&u[..], &v[..]));
        ycbcr::to_rgb8(&y, uv, &shape(2))
    };
    rgb.and_then(|rgb| RgbImage::from_raw(w, h, rgb))
        .ok_or(buffer_mismatch(FORMAT))
}

/// The alpha image's luma as 8-bit straight coverage, limited range expanded to full.
fn alpha_plane(pic: &Picture) -> Result<Vec<u8>, Error> {
    let (w, h) = (pic.width() as usize, pic.height() as usize);
    let bits = pic.bits_per_component().map_or(8, |b| b.0);
    let max = (1u32 << bits) - 1;
    let limited = pic.color_range() == YUVRange::Limited;
    let (lo, span) = (16u32 << (bits - 8), 219u32 << (bits - 8));
    let scale = |v: u32| -> u8 {
        let full = if limited {
            (v.saturating_sub(lo) * max + span / 2) / span
        } else {
            v
        };
        ((full.min(max) * 255 + max / 2) / max) as u8
    };
    let stride = pic.stride(Plane::Y) as usize;
    let plane = pic.plane(Plane::Y);
    let mut out = Vec::with_capacity(w * h);
    for row in 0..h {
        let line = plane.get(row * stride..).ok_or(buffer_mismatch(FORMAT))?;
        if pic.bit_depth() == 8 {
            out.extend(line.iter().take(w).map(|&v| scale(u32::from(v))));
        } else {
            out.extend(
                line.chunks_exact(2)
                    .take(w)
                    .map(|b| scale(u32::from(u16::from_ne_bytes([b[0], b[1]])))),
            );
        }
    }
    if out.len() == w * h {
        Ok(out)
    } else {
        Err(buffer_mismatch(FORMAT))
    }
}

fn with_alpha(color: &RgbImage, alpha: &[u8]) -> Result<RgbaImage, Error> {
    let data = color
        .pixels()
        .zip(alpha)
        .flat_map(|(p, &a)| [p.0[0], p.0[1], p.0[2], a])
        .collect();
    RgbaImage::from_raw(color.width(), color.height(), data).ok_or(buffer_mismatch(FORMAT))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::isobmff::tests::heif_declaring;

    #[test]
    fn declared_size_is_checked_before_any_parser_runs() {
        let huge = heif_declaring(b"avif", 70_000, 70_000, 0);
        assert!(matches!(
            header(&huge, &Limits::default()),
            Err(Error::TooManyPixels {
                width: 70_000,
                height: 70_000,
                ..
            })
        ));
    }

    #[test]
    fn clean_aperture_in_whole_pixels_only() {
        let clap = |w: u32, h: u32, x: i32, y: i32| zenavif_parse::CleanAperture {
            width_n: w,
            width_d: 1,
            height_n: h,
            height_d: 1,
            horiz_off_n: x,
            horiz_off_d: 2,
            vert_off_n: y,
            vert_off_d: 2,
        };
        // Centred: (100 - 60) / 2 = 20.
        assert_eq!(
            crop_rect(&clap(60, 40, 0, 0), 100, 80),
            Some((20, 20, 60, 40))
        );
        // Half-pixel offsets that make the difference of sizes even.
        assert_eq!(
            crop_rect(&clap(61, 40, -1, 2), 100, 80),
            Some((19, 21, 61, 40))
        );
        // Outside the image, or not on a pixel.
        assert_eq!(crop_rect(&clap(60, 40, 100, 0), 100, 80), None);
        assert_eq!(crop_rect(&clap(61, 40, 0, 0), 100, 80), None);
        assert_eq!(crop_rect(&clap(0, 40, 0, 0), 100, 80), None);
    }

    #[test]
    fn grid_descriptors() {
        assert_eq!(
            image_grid(&[0, 0, 2, 3, 0x01, 0xE0, 0x01, 0x40]),
            Some(Grid {
                rows: 3,
                columns: 4,
                width: 480,
                height: 320
            })
        );
        assert_eq!(
            image_grid(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 9]).map(|g| (g.width, g.height)),
            Some((65_536, 9))
        );
        assert_eq!(image_grid(&[0, 1, 0, 0, 0, 1]), None);
        assert_eq!(image_grid(&[1, 0, 0, 0, 0, 1, 0, 1]), None);
    }

    #[test]
    fn matrices() {
        assert_eq!(yuv_matrix(0).unwrap(), Matrix::Identity);
        assert_eq!(yuv_matrix(2).unwrap(), Matrix::BT601);
        assert!(matches!(yuv_matrix(8), Err(Error::Unsupported(m)) if m.contains("YCgCo")));
        assert!(matches!(yuv_matrix(14), Err(Error::Unsupported(_))));
    }
}
