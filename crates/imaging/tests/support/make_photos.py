"""Writes the colour-managed test photos of crates/imaging/tests/photos.rs into a folder.

The sRGB truth is a synthetic photo (gradients, skin-like tones, saturated patches, noise),
all inside the sRGB gamut. Each test file holds the same picture in another colour space,
converted by LittleCMS (Pillow's ImageCms), with that space's ICC profile embedded, or as HEIC
through libheif (pillow-heif), or as AVIF through libavif (Pillow; a tiled AVIF is put
together here from AVIF-coded tiles, since no encoder in the venv writes grids). The Display P3 and Adobe RGB profiles are written here from
their published primaries and transfer curves, so nothing outside the test defines them.

Usage: python make_photos.py OUT_DIR
       python make_photos.py --seeds OUT_DIR   (small HEICs and AVIFs for the fuzzer's corpus)
"""

import io
import random
import struct
import sys
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw, ImageFilter
import pillow_heif

W, H = 480, 320


# ---------------------------------------------------------------------------------------------
# ICC v4 matrix/TRC profiles from primaries.

def xy_to_xyz(x, y):
    return [x / y, 1.0, (1.0 - x - y) / y]


def mat_mul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def mat_vec(a, v):
    return [sum(a[i][k] * v[k] for k in range(3)) for i in range(3)]


def mat_inv(m):
    a, b, c = m[0]
    d, e, f = m[1]
    g, h, i = m[2]
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return [
        [(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
        [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
        [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det],
    ]


BRADFORD = [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
D50 = [0.9642, 1.0, 0.8249]


def rgb_to_xyz_d50(primaries, white):
    """Columns are the colorants (rXYZ, gXYZ, bXYZ) adapted to D50, and the adaptation."""
    r, g, b = (xy_to_xyz(*p) for p in primaries)
    w = xy_to_xyz(*white)
    m = [[r[i], g[i], b[i]] for i in range(3)]
    s = mat_vec(mat_inv(m), w)
    m = [[m[i][j] * s[j] for j in range(3)] for i in range(3)]
    src = mat_vec(BRADFORD, w)
    dst = mat_vec(BRADFORD, D50)
    scale = [[dst[i] / src[i] if i == j else 0.0 for j in range(3)] for i in range(3)]
    adapt = mat_mul(mat_inv(BRADFORD), mat_mul(scale, BRADFORD))
    return mat_mul(adapt, m), adapt


def s15(v):
    return struct.pack(">i", int(round(v * 65536)))


def tag_xyz(v):
    return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)


def tag_para(params):
    kind = {1: 0, 5: 3}[len(params)]
    return b"para\0\0\0\0" + struct.pack(">HH", kind, 0) + b"".join(s15(p) for p in params)


def tag_mluc(text):
    data = text.encode("utf-16-be")
    return b"mluc\0\0\0\0" + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(data), 28) + data


def tag_sf32(m):
    return b"sf32\0\0\0\0" + b"".join(s15(m[i][j]) for i in range(3) for j in range(3))


def icc_profile(description, primaries, white, trc):
    colorants, adapt = rgb_to_xyz_d50(primaries, white)
    curve = tag_para(trc)
    tags = [
        (b"desc", tag_mluc(description)),
        (b"cprt", tag_mluc("No copyright, use freely")),
        (b"wtpt", tag_xyz(D50)),
        (b"chad", tag_sf32(adapt)),
        (b"rXYZ", tag_xyz([colorants[i][0] for i in range(3)])),
        (b"gXYZ", tag_xyz([colorants[i][1] for i in range(3)])),
        (b"bXYZ", tag_xyz([colorants[i][2] for i in range(3)])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    return assemble_icc(tags, 0x04300000, b"mntr", b"RGB ", b"XYZ ")


def assemble_icc(tags, version, device_class, color_space, pcs):
    """A profile of `tags` ((signature, body) pairs) behind a header with these fields."""
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"none", version, device_class, color_space, pcs)
    header += b"\0" * 12 + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
    header += b"".join(s15(c) for c in D50) + b"none"
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


# ---------------------------------------------------------------------------------------------
# A CMYK printer profile: ICC v2, one A2B0 lookup table (CMYK to Lab) on a 9-point grid, from
# a made-up ink model, so the test has a CMYK profile without depending on a licensed one.

def srgb_to_lab_d50(rgb):
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    # sRGB's colorants adapted to D50 (Bradford), as in the ICC sRGB profile.
    m = [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
    xyz = mat_vec(m, lin)
    f = [(v / w) ** (1 / 3) if v / w > 216 / 24389 else (24389 / 27 * v / w + 16) / 116 for v, w in zip(xyz, D50)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def ink_to_rgb(c, m, y, k):
    """Inks that are not the naive complements: they darken along a curve, black is not full
    black on paper, and magenta takes some blue too, so the profile's colours differ visibly
    from the naive conversion's."""
    ce, me, ye = (0.9 * v ** 1.25 for v in (c, m, y))
    ke = 0.92 * k
    return [(1 - ce) * (1 - ke), (1 - me) * (1 - ke), max(0.0, 1 - ye - 0.1 * me) * (1 - ke)]


def tag_desc_v2(text):
    ascii_ = text.encode("ascii") + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * 8 + b"\0" * 3 + b"\0" * 67


def tag_mft2_cmyk_to_lab(grid):
    body = b"mft2\0\0\0\0" + bytes([4, 3, grid, 0])
    body += b"".join(s15(1.0 if i == j else 0.0) for i in range(3) for j in range(3))
    body += struct.pack(">HH", 2, 2)
    body += struct.pack(">HH", 0, 65535) * 4
    steps = [i / (grid - 1) for i in range(grid)]
    for c in steps:
        for m in steps:
            for y in steps:
                for k in steps:
                    lab = srgb_to_lab_d50(ink_to_rgb(c, m, y, k))
                    # ICC v2 16-bit Lab: L 0..100 on 0..0xFF00, a and b +128 on 0..0xFFFF.
                    enc = [lab[0] / 100 * 0xFF00, (lab[1] + 128) * 256, (lab[2] + 128) * 256]
                    body += b"".join(struct.pack(">H", max(0, min(65535, round(v)))) for v in enc)
    body += struct.pack(">HH", 0, 65535) * 3
    return body


def cmyk_profile():
    tags = [
        (b"desc", tag_desc_v2("Test CMYK")),
        (b"cprt", b"text\0\0\0\0No copyright, use freely\0"),
        (b"wtpt", tag_xyz(D50)),
        (b"A2B0", tag_mft2_cmyk_to_lab(9)),
    ]
    return assemble_icc(tags, 0x02100000, b"prtr", b"CMYK", b"Lab ")


def to_cmyk(img):
    """The picture as ink amounts, naively (black first, then each ink the complement)."""
    out = Image.new("CMYK", img.size)
    px, dst = img.load(), out.load()
    for y in range(img.height):
        for x in range(img.width):
            r, g, b = (v / 255 for v in px[x, y])
            k = 1 - max(r, g, b)
            ink = [0.0, 0.0, 0.0] if k >= 1 else [(1 - v - k) / (1 - k) for v in (r, g, b)]
            dst[x, y] = tuple(round(v * 255) for v in ink + [k])
    return out


SRGB_TRC = [2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045]
D65 = (0.3127, 0.3290)
DISPLAY_P3 = icc_profile("Display P3", [(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)], D65, SRGB_TRC)
ADOBE_RGB = icc_profile("Adobe RGB (1998)", [(0.64, 0.33), (0.21, 0.71), (0.15, 0.06)], D65, [563 / 256])


# ---------------------------------------------------------------------------------------------
# The picture.

def truth():
    rnd = random.Random(7)
    img = Image.new("RGB", (W, H))
    px = img.load()
    for y in range(H):
        for x in range(W):
            # Sky to foliage to skin-like tones, as a photo's smooth areas would be.
            r = int(60 + 170 * x / W)
            g = int(90 + 120 * (1 - y / H) * (0.5 + 0.5 * x / W))
            b = int(200 * (1 - x / W) + 30)
            n = rnd.randint(-2, 2)
            px[x, y] = tuple(max(0, min(255, c + n)) for c in (r, g, b))
    d = ImageDraw.Draw(img)
    # Saturated patches: what a duller conversion changes most.
    for i, c in enumerate([(230, 30, 40), (30, 200, 60), (40, 60, 220), (250, 200, 20), (200, 40, 200), (20, 200, 210)]):
        d.rectangle([20 + i * 75, 230, 80 + i * 75, 300], fill=c)
    d.ellipse([300, 40, 420, 160], fill=(224, 172, 138))
    return img.filter(ImageFilter.GaussianBlur(1.2))


def convert(img, icc):
    src = ImageCms.createProfile("sRGB")
    dst = ImageCms.getOpenProfile(io.BytesIO(icc))
    return ImageCms.profileToProfile(img, src, dst, renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")


def heic(img, path, **kw):
    pillow_heif.from_pillow(img).save(path, quality=92, **kw)


# ---------------------------------------------------------------------------------------------
# AVIF grids.

def boxes(data):
    """(type, body) of each ISO-BMFF box in `data` (32-bit sizes, as libavif writes them)."""
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        yield kind, data[at + 8:at + size]
        at += size


def child(data, kind):
    return next(body for k, body in boxes(data) if k == kind)


def box(kind, body):
    return struct.pack(">I", len(body) + 8) + kind + body


def full(kind, body, version=0, flags=0):
    return box(kind, struct.pack(">I", version << 24 | flags) + body)


def avif_payload(img):
    """The av1C property and the AV1 data of a one-item AVIF that Pillow writes of `img`."""
    buf = io.BytesIO()
    img.save(buf, "AVIF", quality=97, subsampling="4:4:4")
    data = buf.getvalue()
    meta = child(data, b"meta")[4:]
    av1c = child(child(child(meta, b"iprp"), b"ipco"), b"av1C")
    iloc = child(meta, b"iloc")
    version = iloc[0]
    # 4-byte offsets and lengths, no base offset, one item of one extent.
    assert version in (0, 1) and iloc[4:8] == bytes([0x44, 0, 0, 1]), iloc[:8]
    at = 8 + 2 + (2 if version == 1 else 0) + 2 + 2
    offset, length = struct.unpack(">II", iloc[at:at + 8])
    return av1c, data[offset:offset + length]


def grid_avif(img, tile, icc, path):
    """`img` as a grid of `tile` x `tile` AV1 images (the edge ones padded), the way large
    AVIFs are stored: item 1 is the grid, items 2.. its tiles, in rows."""
    cols, rows = -(-img.width // tile), -(-img.height // tile)
    padded = Image.new("RGB", (cols * tile, rows * tile))
    padded.paste(img, (0, 0))
    payloads = [avif_payload(padded.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
                for r in range(rows) for c in range(cols)]
    av1c = payloads[0][0]
    grid = struct.pack(">BBBBHH", 0, 0, rows - 1, cols - 1, img.width, img.height)
    items = [(1, b"grid", grid)] + [(2 + i, b"av01", p[1]) for i, p in enumerate(payloads)]
    ipco = box(b"ipco", b"".join([
        full(b"ispe", struct.pack(">II", img.width, img.height)),  # 1
        box(b"colr", b"prof" + icc),  # 2
        full(b"ispe", struct.pack(">II", tile, tile)),  # 3
        box(b"av1C", av1c),  # 4
        full(b"pixi", bytes([3, 8, 8, 8])),  # 5
    ]))
    assoc = struct.pack(">HB", 1, 3) + bytes([1, 0x82, 5])
    for i in range(len(payloads)):
        assoc += struct.pack(">HB", 2 + i, 3) + bytes([3, 0x84, 5])
    ipma = full(b"ipma", struct.pack(">I", len(items)) + assoc)
    iinf = full(b"iinf", struct.pack(">H", len(items)) + b"".join(
        full(b"infe", struct.pack(">HH", n, 0) + kind + b"\0", version=2, flags=1 if n > 1 else 0)
        for n, kind, _ in items))
    dimg = struct.pack(">HH", 1, len(payloads)) + b"".join(struct.pack(">H", 2 + i) for i in range(len(payloads)))
    iref = full(b"iref", box(b"dimg", dimg))
    hdlr = full(b"hdlr", b"\0" * 4 + b"pict" + b"\0" * 12 + b"\0")
    pitm = full(b"pitm", struct.pack(">H", 1))
    ftyp = box(b"ftyp", b"avif\0\0\0\0avifmif1miaf")

    def meta_with(base):
        at, entries = base, b""
        for n, _, data in items:
            entries += struct.pack(">HHHII", n, 0, 1, at, len(data))
            at += len(data)
        iloc = full(b"iloc", bytes([0x44, 0x00]) + struct.pack(">H", len(items)) + entries)
        return full(b"meta", hdlr + pitm + iloc + iinf + iref + box(b"iprp", ipco + ipma))

    # The offsets depend on the meta box's size, which does not depend on them.
    base = len(ftyp) + len(meta_with(0)) + 8
    mdat = box(b"mdat", b"".join(data for _, _, data in items))
    Path(path).write_bytes(ftyp + meta_with(base) + mdat)


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t = truth()
    t.save(out / "truth.png")
    p3 = convert(t, DISPLAY_P3)
    adobe = convert(t, ADOBE_RGB)
    (out / "display-p3.icc").write_bytes(DISPLAY_P3)
    p3.save(out / "p3.jpg", quality=95, icc_profile=DISPLAY_P3)
    adobe.save(out / "adobe.jpg", quality=95, icc_profile=ADOBE_RGB)
    p3.save(out / "p3.png", icc_profile=DISPLAY_P3)
    p3.save(out / "p3.webp", quality=95, icc_profile=DISPLAY_P3)
    p3.save(out / "p3.tif", icc_profile=DISPLAY_P3)
    p3.save(out / "p3-untagged.jpg", quality=95)
    t.save(out / "srgb.jpg", quality=95)
    heic(p3, out / "p3.heic", icc_profile=DISPLAY_P3)
    heic(t, out / "srgb.heic")
    # Stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view), as phones
    # write a portrait photo.
    sideways = p3.transpose(Image.Transpose.ROTATE_90)
    heic(sideways, out / "p3-rot6.heic", icc_profile=DISPLAY_P3, exif=rotate_exif())
    # A grid of 128x128 tiles, as iPhones store a photo in 512x512 ones.
    heic(p3, out / "p3-grid.heic", icc_profile=DISPLAY_P3, tile_size=128)
    # 10 bits a sample, as recent phones write.
    # (16-bit samples in, which libheif stores as 10-bit HEVC.)
    arr16 = b"".join(struct.pack("<H", v << 8 | v) for v in p3.tobytes())
    h16 = pillow_heif.from_bytes(mode="RGB;16", size=p3.size, data=arr16)
    h16.info["icc_profile"] = DISPLAY_P3
    h16.save(out / "p3-10bit.heic", quality=92)
    # AVIF as libavif writes it: a P3 one with its ICC profile, an sRGB one (nclx), a
    # rotated one (Pillow turns EXIF orientation 6 into `irot`), and a grid.
    # The P3 ones 4:4:4, as avifenc writes by default: libavif's 8-bit 4:2:0 coding alone costs
    # about a level, which the conversion to sRGB then stretches past the tolerance. The sRGB
    # one 4:2:0, as browsers' encoders write.
    p3.save(out / "p3.avif", quality=97, subsampling="4:4:4", icc_profile=DISPLAY_P3)
    t.save(out / "srgb.avif", quality=97)
    sideways.save(out / "p3-rot6.avif", quality=97, subsampling="4:4:4", icc_profile=DISPLAY_P3,
                  exif=rotate_exif())
    grid_avif(p3, 128, DISPLAY_P3, out / "p3-grid.avif")
    # The other chroma layouts AV1 has: 4:2:2, and monochrome (4:0:0).
    t.save(out / "srgb-422.avif", quality=97, subsampling="4:2:2")
    t.convert("L").save(out / "gray.png")
    t.convert("L").convert("RGB").save(out / "gray.avif", quality=97, subsampling="4:0:0")
    # A CMYK JPEG with its CMYK profile, and the sRGB LittleCMS makes of the same inks
    # through that profile (what a colour-managed viewer shows).
    icc = cmyk_profile()
    (out / "test-cmyk.icc").write_bytes(icc)
    inks = to_cmyk(t)
    inks.save(out / "cmyk.jpg", quality=95, icc_profile=icc)
    shown = Image.open(out / "cmyk.jpg")
    ImageCms.profileToProfile(shown, ImageCms.getOpenProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                              renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB"
                              ).save(out / "cmyk-truth.png")
    # A transparent PNG: a disc on nothing.
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse([8, 4, 56, 44], fill=(200, 30, 30, 255))
    rgba.save(out / "transparent.png")
    # The same over a gradient of coverage, as AVIF (alpha is a second AV1 image).
    soft = t.convert("RGBA")
    soft.putalpha(Image.linear_gradient("L").rotate(90).resize(soft.size))
    soft.save(out / "soft.png")
    soft.save(out / "soft.avif", quality=97)


def seeds(out):
    """Small HEICs and AVIFs of every kind the decoders handle, for scripts/fuzz to mutate."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    small = truth().resize((64, 48))
    heic(small, out / "seed.heic")
    heic(convert(small, DISPLAY_P3), out / "seed-p3.heic", icc_profile=DISPLAY_P3)
    heic(small, out / "seed-grid.heic", tile_size=32)
    heic(small.transpose(Image.Transpose.ROTATE_90), out / "seed-irot.heic", exif=rotate_exif())
    rgba = small.convert("RGBA")
    rgba.putalpha(128)
    heic(rgba, out / "seed-alpha.heic")
    arr16 = b"".join(struct.pack("<H", v << 8 | v) for v in small.tobytes())
    pillow_heif.from_bytes(mode="RGB;16", size=small.size, data=arr16).save(out / "seed-10bit.heic", quality=80)
    small.save(out / "seed.avif", quality=60)
    convert(small, DISPLAY_P3).save(out / "seed-p3.avif", quality=60, icc_profile=DISPLAY_P3)
    small.transpose(Image.Transpose.ROTATE_90).save(out / "seed-irot.avif", quality=60, exif=rotate_exif())
    rgba.save(out / "seed-alpha.avif", quality=60)
    grid_avif(small, 32, DISPLAY_P3, out / "seed-grid.avif")
    (out / "seed-p3.icc").write_bytes(DISPLAY_P3)
    (out / "seed-adobe.icc").write_bytes(ADOBE_RGB)


def rotate_exif():
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


if __name__ == "__main__":
    if sys.argv[1] == "--seeds":
        seeds(sys.argv[2])
    else:
        main(sys.argv[1])
