//! Renditions made on demand from URL parameters (`GET /v1/images/{id}/transform?w=800&fmt=auto`):
//! what each parameter means, the normal form that names the stored result, and the render.
//!
//! A request is parsed into [`Request`] (what the client wrote, checked value by value), then
//! normalised against the image, the client's `Accept` header and the server's [`Policy`] into
//! [`Normalised`]: `dpr` folded into the sizes, widths snapped to the allow-list, `fmt=auto`
//! resolved to one format. Two requests that normalise alike share one stored file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use imaging::{Color, Fit, FocalPoint, Format, Gravity, Image, OutputFormat, ResizeSpec};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::SourceInfo;
use crate::output::Encoded;
use crate::{Rendition, StepError};

/// The parameters a transform takes, in their normal order.
pub const PARAMS: [&str; 9] = [
    "w", "h", "fit", "gravity", "fmt", "q", "dpr", "bg", "overlay",
];
/// Largest device pixel ratio: phones reach 3, a few 4.
pub const MAX_DPR: f64 = 4.0;
/// Hex digits of the normalised parameters' SHA-256 in a derived rendition's key: 64 bits,
/// far more than the transforms one image ever gets.
const HASH_HEX: usize = 16;

/// A transform's parameters as the client gave them, each checked on its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub w: Option<u32>,
    pub h: Option<u32>,
    pub fit: Option<Fit>,
    pub gravity: Option<Gravity>,
    pub fmt: Option<FormatChoice>,
    pub q: Option<u8>,
    /// Hundredths, so the normal form is exact: 150 is `dpr=1.5`.
    pub dpr: Option<u16>,
    pub bg: Option<Color>,
    /// The id of another of the owner's images to put over it, as the `overlay` operation's
    /// defaults place it (bottom right, 16 px in, a fifth of the width).
    pub overlay: Option<String>,
}

/// `fmt`: a format, or `auto` (the best the client's `Accept` header allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    Auto,
    Fixed(Format),
}

/// What a server allows: `widths` (ascending; empty: any) is the allow-list sizes snap up to,
/// and with `strict` a size not on it is refused instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub widths: Vec<u32>,
    pub strict: bool,
}

impl Policy {
    /// `widths` as a comma-separated list (`320,640,960`), sorted and without repeats.
    pub fn parse_widths(text: &str) -> Result<Vec<u32>, String> {
        let mut widths = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<u32>() {
                Ok(w) if w > 0 => Ok(w),
                _ => Err(format!("`{s}` is not a width in pixels (1 or more)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        widths.sort_unstable();
        widths.dedup();
        Ok(widths)
    }

    fn allowed(&self) -> String {
        let list: Vec<String> = self.widths.iter().map(u32::to_string).collect();
        list.join(", ")
    }
}

/// A parameter the transform cannot take, with the parameter's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

fn bad(param: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        param: param.to_string(),
        message: message.into(),
    }
}

/// A value of a serde enum (`fit`, `gravity`), as recipes write it.
fn enum_value<T: serde::de::DeserializeOwned>(
    param: &str,
    v: &str,
    names: &str,
) -> Result<T, ParamError> {
    serde_json::from_value(Value::String(v.to_ascii_lowercase()))
        .map_err(|_| bad(param, format!("`{}` is not one of {names}", clip(v))))
}

/// A value quoted in an error, cut short: a hostile query may be long.
fn clip(v: &str) -> String {
    let cut: String = v.chars().take(40).collect();
    if cut.len() < v.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// The largest `w` or `h`: imaging's longest side.
pub const MAX_SIDE: u32 = 32_768;

fn size(param: &str, v: &str) -> Result<u32, ParamError> {
    match v.parse::<u32>() {
        Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
        _ => Err(bad(
            param,
            format!("`{}` is not a size in pixels (1-{MAX_SIDE})", clip(v)),
        )),
    }
}

impl Request {
    /// Parses query pairs; an unknown or repeated parameter is refused by name.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Request, ParamError> {
        let mut req = Request::default();
        let mut seen = BTreeMap::new();
        for (k, v) in pairs {
            if !PARAMS.contains(&k) {
                // The long names other services use point to the short ones.
                let long = [
                    ("width", "w"),
                    ("height", "h"),
                    ("format", "fmt"),
                    ("quality", "q"),
                    ("background", "bg"),
                    ("crop", "gravity"),
                ];
                let hint = long
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(k))
                    .map(|(_, short)| *short)
                    .or_else(|| crate::suggest::did_you_mean(k, PARAMS.iter().copied()))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(bad(
                    &clip(k),
                    format!(
                        "unknown parameter{hint}; a transform takes {}",
                        PARAMS.join(", ")
                    ),
                ));
            }
            if seen.insert(k, ()).is_some() {
                return Err(bad(k, "given twice"));
            }
            match k {
                "w" => req.w = Some(size(k, v)?),
                "h" => req.h = Some(size(k, v)?),
                "fit" => req.fit = Some(enum_value(k, v, "cover, contain, fill, inside, outside")?),
                "gravity" => {
                    req.gravity = Some(enum_value(
                        k,
                        v,
                        "center, north, northeast, east, southeast, south, southwest, west, \
                         northwest, smart, focal",
                    )?)
                }
                "fmt" => {
                    req.fmt = Some(match v.to_ascii_lowercase().as_str() {
                        "auto" => FormatChoice::Auto,
                        "jpeg" | "jpg" => FormatChoice::Fixed(Format::Jpeg),
                        "png" => FormatChoice::Fixed(Format::Png),
                        "webp" => FormatChoice::Fixed(Format::Webp),
                        "avif" => FormatChoice::Fixed(Format::Avif),
                        _ => {
                            return Err(bad(
                                k,
                                format!("`{}` is not one of auto, jpeg, png, webp, avif", clip(v)),
                            ));
                        }
                    })
                }
                "q" => {
                    req.q = Some(match v.parse::<u8>() {
                        Ok(q) if (1..=100).contains(&q) => q,
                        _ => return Err(bad(k, format!("`{}` is not a quality 1-100", clip(v)))),
                    })
                }
                "dpr" => {
                    let n = v
                        .parse::<f64>()
                        .ok()
                        .filter(|d| d.is_finite() && (1.0..=MAX_DPR).contains(d));
                    let Some(d) = n else {
                        return Err(bad(k, format!("`{}` is not a pixel ratio 1-4", clip(v))));
                    };
                    req.dpr = Some((d * 100.0).round() as u16);
                }
                "overlay" => {
                    let ok = !v.is_empty()
                        && v.len() <= 128
                        && !v.starts_with('.')
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                    if !ok {
                        return Err(bad(k, format!("`{}` is not an image id", clip(v))));
                    }
                    req.overlay = Some(v.to_string());
                }
                "bg" => {
                    let hex = v.strip_prefix('#').unwrap_or(v);
                    req.bg = Some(
                        serde_json::from_value(Value::String(format!("#{hex}"))).map_err(|_| {
                            bad(
                                k,
                                format!("`{}` is not a colour rrggbb or rrggbbaa", clip(v)),
                            )
                        })?,
                    )
                }
                _ => unreachable!("every name in PARAMS is handled"),
            }
        }
        if req == Request::default() {
            return Err(bad(
                "query",
                format!("a transform needs at least one of {}", PARAMS.join(", ")),
            ));
        }
        if req.w.is_none() && req.h.is_none() && req.dpr.is_some() {
            return Err(bad("dpr", "multiplies w or h; give one of them"));
        }
        Ok(req)
    }

    /// The parameters as a query string in the order of [`PARAMS`], as signed links carry them:
    /// `fmt=auto` stays `auto`, since each client's `Accept` decides later.
    pub fn canonical(&self) -> String {
        let mut parts = Vec::new();
        if let Some(w) = self.w {
            parts.push(format!("w={w}"));
        }
        if let Some(h) = self.h {
            parts.push(format!("h={h}"));
        }
        if let Some(fit) = self.fit {
            parts.push(format!("fit={}", name_of(&fit)));
        }
        if let Some(g) = self.gravity {
            parts.push(format!("gravity={}", name_of(&g)));
        }
        match self.fmt {
            Some(FormatChoice::Auto) => parts.push("fmt=auto".into()),
            Some(FormatChoice::Fixed(f)) => parts.push(format!("fmt={}", f.extension())),
            None => {}
        }
        if let Some(q) = self.q {
            parts.push(format!("q={q}"));
        }
        if let Some(d) = self.dpr {
            parts.push(format!("dpr={}", dpr_text(d)));
        }
        if let Some(bg) = self.bg {
            parts.push(format!("bg={}", color_hex(bg)));
        }
        if let Some(id) = &self.overlay {
            parts.push(format!("overlay={id}"));
        }
        parts.join("&")
    }

    /// Whether the answer depends on the client's `Accept` header.
    pub fn varies_with_accept(&self) -> bool {
        self.fmt == Some(FormatChoice::Auto)
    }

    /// The concrete transform for `source`, a client sending `accept`, under `policy`.
    pub fn normalise(
        &self,
        source: &SourceInfo,
        accept: Option<&str>,
        policy: &Policy,
    ) -> Result<Normalised, ParamError> {
        let scale = |v: u32| -> u32 {
            let d = u64::from(self.dpr.unwrap_or(100));
            u32::try_from((u64::from(v) * d).div_ceil(100)).unwrap_or(u32::MAX)
        };
        let (mut w, mut h) = (self.w.map(scale), self.h.map(scale));
        if !policy.widths.is_empty() {
            // The box's width picks the allowed size (its height when only that is given); the
            // other side follows, so the box keeps its shape.
            let (side, name) = match (w, h) {
                (Some(w), _) => (w, "w"),
                (None, Some(h)) => (h, "h"),
                (None, None) => (0, ""),
            };
            if side > 0 {
                let snapped = match policy.widths.iter().find(|&&a| a >= side) {
                    Some(&a) if a == side || !policy.strict => a,
                    _ if policy.strict => {
                        return Err(bad(
                            name,
                            format!(
                                "{side} pixels{} is not an allowed size; this server allows {}",
                                if self.dpr.is_some() {
                                    " (with dpr)"
                                } else {
                                    ""
                                },
                                policy.allowed()
                            ),
                        ));
                    }
                    // Over the largest allowed: the largest.
                    _ => *policy.widths.last().unwrap_or(&side),
                };
                let other = |v: u32| {
                    u32::try_from((u64::from(v) * u64::from(snapped)).div_ceil(u64::from(side)))
                        .unwrap_or(u32::MAX)
                };
                match name {
                    "w" => {
                        w = Some(snapped);
                        h = h.map(other);
                    }
                    _ => h = Some(snapped),
                }
            }
        }
        let fit = self.fit.unwrap_or_default();
        // Nothing is enlarged, so a side past the source's gives what the source's side
        // gives: one key for one output (but `contain` pads to the box, so its box stays).
        if fit != Fit::Contain {
            if let Some(sw) = source.width {
                w = w.map(|v| v.min(sw.max(1)));
            }
            if let Some(sh) = source.height {
                h = h.map(|v| v.min(sh.max(1)));
            }
        }
        // Gravity places a crop (cover) or the image in its padding (contain), and only when
        // both sides are given; otherwise it changes nothing and is left out of the key.
        let places = w.is_some() && h.is_some() && matches!(fit, Fit::Cover | Fit::Contain);
        let gravity = if places {
            self.gravity.unwrap_or_default()
        } else {
            Gravity::default()
        };
        let has_alpha = source.alpha.unwrap_or(false);
        let source_format = source.format.unwrap_or(Format::Jpeg);
        let format = match self.fmt {
            None => OutputFormat::Same.resolve(source_format, has_alpha),
            Some(FormatChoice::Fixed(f)) => f,
            Some(FormatChoice::Auto) => auto_format(accept, has_alpha),
        };
        Ok(Normalised {
            w,
            h,
            fit,
            gravity,
            format,
            q: self.q.filter(|_| format != Format::Png),
            bg: self.bg,
            focal: source.focal_point.filter(|_| gravity == Gravity::Focal),
            overlay: self.overlay.clone(),
        })
    }
}

/// `fmt=auto`: AVIF, then WebP, then JPEG, as the client's `Accept` lists them (PNG instead
/// of JPEG for a source with alpha). `*/*` alone takes neither AVIF nor WebP: browsers that
/// can show them name them.
pub fn auto_format(accept: Option<&str>, has_alpha: bool) -> Format {
    let takes = |mime: &str| {
        accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut fields = part.split(';');
                let ty = fields.next().unwrap_or("").trim();
                // `image/webp;q=0` is a refusal.
                let refused = fields.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                ty.eq_ignore_ascii_case(mime) && !refused
            })
        })
    };
    if takes("image/avif") && imaging::writes(Format::Avif) {
        Format::Avif
    } else if takes("image/webp") || takes("image/avif") {
        // AVIF asked for but not written by this build: WebP is the next best, and every
        // browser that takes AVIF takes WebP.
        Format::Webp
    } else if has_alpha {
        Format::Png
    } else {
        Format::Jpeg
    }
}

fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn dpr_text(hundredths: u16) -> String {
    let (i, f) = (hundredths / 100, hundredths % 100);
    match f {
        0 => i.to_string(),
        f if f % 10 == 0 => format!("{i}.{}", f / 10),
        f => format!("{i}.{f:02}"),
    }
}

fn color_hex(c: Color) -> String {
    let [r, g, b, a] = c.0;
    match a {
        255 => format!("{r:02x}{g:02x}{b:02x}"),
        a => format!("{r:02x}{g:02x}{b:02x}{a:02x}"),
    }
}

/// A transform resolved for one image and client: what is rendered and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalised {
    pub w: Option<u32>,
    pub h: Option<u32>,
    pub fit: Fit,
    pub gravity: Gravity,
    pub format: Format,
    pub q: Option<u8>,
    pub bg: Option<Color>,
    /// With `gravity=focal`, the image's focal point when it has one: part of the parameters,
    /// so moving the point makes new transforms rather than reusing crops of the old one.
    pub focal: Option<FocalPoint>,
    /// The image put over it (see [`Request::overlay`]).
    pub overlay: Option<String>,
}

impl Normalised {
    /// Every parameter, defaults written out, so equal transforms have equal text: what the
    /// record lists (`derived[].params`) and the key is hashed from.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        if let Some(w) = self.w {
            let _ = write!(s, "w={w}&");
        }
        if let Some(h) = self.h {
            let _ = write!(s, "h={h}&");
        }
        let _ = write!(
            s,
            "fit={}&gravity={}&fmt={}",
            name_of(&self.fit),
            name_of(&self.gravity),
            self.format.extension()
        );
        if let Some(q) = self.q {
            let _ = write!(s, "&q={q}");
        }
        if let Some(bg) = self.bg {
            let _ = write!(s, "&bg={}", color_hex(bg));
        }
        if let Some(p) = self.focal {
            let _ = write!(s, "&focal={:.4},{:.4}", p.x, p.y);
        }
        if let Some(id) = &self.overlay {
            let _ = write!(s, "&overlay={id}");
        }
        s
    }

    /// The first 16 hex digits of the canonical text's SHA-256.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.canonical().as_bytes());
        let mut hex = hex::encode(digest);
        hex.truncate(HASH_HEX);
        hex
    }

    /// `renditions/{owner}/{id}/t/{hash}.{ext}`: under the image's prefix, so deleting the
    /// image deletes it.
    pub fn key(&self, owner: &str, id: &str) -> String {
        format!(
            "{}t/{}.{}",
            crate::keys::renditions_prefix(owner, id),
            self.hash(),
            self.format.extension()
        )
    }

    /// The one-rendition recipe entry that renders it. Never larger than the source: a page
    /// asking for more pixels than there are gets the original's size, not an upscale.
    pub fn rendition(&self) -> Result<Rendition, StepError> {
        let format = match self.format {
            Format::Png => OutputFormat::Png,
            Format::Webp => OutputFormat::Webp,
            Format::Avif => OutputFormat::Avif,
            _ => OutputFormat::Jpeg,
        };
        let mut r = json!({
            "name": "transform",
            "format": format,
        });
        if self.w.is_some() || self.h.is_some() {
            let spec = ResizeSpec {
                width: self.w,
                height: self.h,
                fit: self.fit,
                gravity: self.gravity,
                without_enlargement: true,
                background: self.bg,
                focal_point: None,
            };
            r["resize"] =
                serde_json::to_value(spec).map_err(|e| StepError::internal(e.to_string()))?;
        }
        if let Some(q) = self.q {
            r["quality"] = json!(q);
        }
        if let Some(bg) = self.bg {
            r["background"] = json!(format!("#{}", color_hex(bg)));
        }
        if let Some(id) = &self.overlay {
            r["operations"] = json!([{"op": "overlay", "image": id}]);
        }
        let mut rendition: Rendition =
            serde_json::from_value(r).map_err(|e| StepError::internal(e.to_string()))?;
        // Not part of a recipe's JSON: set on the spec itself.
        if let Some(spec) = rendition.resize.as_mut() {
            spec.focal_point = self.focal;
        }
        Ok(rendition)
    }
}

/// Renders `rendition` from the original's bytes: one decode (shrunk on load where the size
/// allows), one resize, one encode, within `limits`. Runs on the caller's thread: put it on a
/// compute slot.
pub fn render(
    bytes: &[u8],
    source: (u32, u32),
    rendition: &Rendition,
    limits: &imaging::Limits,
    overlays: &BTreeMap<String, Vec<u8>>,
) -> Result<(Encoded, Format, (u32, u32)), StepError> {
    let recipe = crate::Recipe {
        description: None,
        renditions: vec![rendition.clone()],
    };
    let decoded = imaging::decode_with(
        bytes,
        limits,
        Some(recipe.max_output(source)),
        imaging::ColorHandling::Srgb,
    )?;
    let resized = crate::render::render_colours(decoded, source, &recipe)?;
    let image: Image = resized
        .into_iter()
        .next()
        .map(|r| std::sync::Arc::unwrap_or_clone(r.image))
        .ok_or_else(|| StepError::internal("nothing rendered"))?;
    let image = crate::operations::apply(image, &rendition.operations, overlays, limits)?;
    let image = &image;
    let format = rendition
        .format
        .resolve(Format::Jpeg, image.color().has_alpha());
    let opts = rendition.encode_options(format, None, None);
    let encoded = crate::output::encode(image, rendition, &opts)?;
    Ok((encoded, format, (image.width(), image.height())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Request, ParamError> {
        let pairs: Vec<(&str, &str)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        Request::parse(pairs)
    }

    fn source(format: Format, alpha: bool) -> SourceInfo {
        SourceInfo {
            alpha: Some(alpha),
            format: Some(format),
            ..crate::io::Upload::default().unread_source()
        }
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let e = parse("width=3").unwrap_err();
        assert_eq!(e.param, "width");
        assert!(e.message.contains("did you mean `w`"), "{e}");
        assert_eq!(parse("").unwrap_err().param, "query");
        assert_eq!(parse("w=0").unwrap_err().param, "w");
        assert_eq!(parse("h=32769").unwrap_err().param, "h");
        assert_eq!(parse("w=1&w=2").unwrap_err().message, "given twice");
        assert_eq!(parse("q=101").unwrap_err().param, "q");
        assert_eq!(parse("dpr=5&w=10").unwrap_err().param, "dpr");
        assert_eq!(parse("dpr=2").unwrap_err().param, "dpr");
        assert_eq!(parse("fit=squash").unwrap_err().param, "fit");
        assert_eq!(parse("fmt=gif").unwrap_err().param, "fmt");
        assert_eq!(parse("bg=red").unwrap_err().param, "bg");
        let long = format!("gravity={}", "x".repeat(10_000));
        assert!(parse(&long).unwrap_err().message.len() < 200);
    }

    #[test]
    fn canonical_forms_are_stable() {
        let r = parse(
            "fmt=JPG&dpr=1.50&gravity=Smart&w=400&h=200&bg=%23ffffff"
                .replace("%23", "")
                .as_str(),
        )
        .unwrap();
        assert_eq!(
            r.canonical(),
            "w=400&h=200&gravity=smart&fmt=jpg&dpr=1.5&bg=ffffff"
        );
        assert_eq!(parse(&r.canonical()).unwrap(), r);
        let n = r
            .normalise(&source(Format::Png, true), None, &Policy::default())
            .unwrap();
        assert_eq!(n.w, Some(600));
        assert_eq!(
            n.canonical(),
            "w=600&h=300&fit=cover&gravity=smart&fmt=jpg&bg=ffffff"
        );
        // The same transform asked another way has the same key.
        let same = parse("w=600&h=300&fit=cover&fmt=jpeg&gravity=smart&bg=FFFFFF").unwrap();
        let m = same
            .normalise(&source(Format::Png, true), None, &Policy::default())
            .unwrap();
        assert_eq!(m.key("u", "i"), n.key("u", "i"));
        assert!(n.key("u", "i").starts_with("renditions/u/i/t/"));
        assert!(n.key("u", "i").ends_with(".jpg"));
    }

    #[test]
    fn sizes_past_the_source_and_idle_gravities_share_a_key() {
        let src = SourceInfo {
            width: Some(1000),
            height: Some(500),
            ..source(Format::Jpeg, false)
        };
        let key = |q: &str| {
            parse(q)
                .unwrap()
                .normalise(&src, None, &Policy::default())
                .unwrap()
                .canonical()
        };
        assert_eq!(key("w=5000&fit=inside"), key("w=1000&fit=inside"));
        assert_eq!(key("w=600&dpr=4"), key("w=1000"));
        assert_eq!(
            key("w=2000&h=100"),
            "w=1000&h=100&fit=cover&gravity=center&fmt=jpg"
        );
        // Only a placed crop or padding keeps its gravity.
        assert_eq!(key("w=300&gravity=north"), key("w=300"));
        assert_eq!(
            key("w=300&h=300&fit=inside&gravity=north"),
            key("w=300&h=300&fit=inside")
        );
        assert_ne!(key("w=300&h=300&gravity=north"), key("w=300&h=300"));
        // contain pads to its box, past the source too.
        assert_eq!(
            key("w=2000&h=2000&fit=contain"),
            "w=2000&h=2000&fit=contain&gravity=center&fmt=jpg"
        );
    }

    #[test]
    fn auto_follows_accept() {
        let chrome = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8";
        let expect_avif = if imaging::writes(Format::Avif) {
            Format::Avif
        } else {
            Format::Webp
        };
        assert_eq!(auto_format(Some(chrome), false), expect_avif);
        assert_eq!(auto_format(Some("image/webp,*/*"), false), Format::Webp);
        assert_eq!(auto_format(Some("image/webp;q=0,*/*"), false), Format::Jpeg);
        assert_eq!(auto_format(Some("*/*"), false), Format::Jpeg);
        assert_eq!(auto_format(None, true), Format::Png);
        assert_eq!(auto_format(Some("image/webp"), true), Format::Webp);
    }

    #[test]
    fn allow_list_snaps_up_or_refuses() {
        let policy = Policy {
            widths: Policy::parse_widths("1280, 320,640,960,640").unwrap(),
            strict: false,
        };
        assert_eq!(policy.widths, vec![320, 640, 960, 1280]);
        let src = source(Format::Jpeg, false);
        let n = parse("w=500&h=250")
            .unwrap()
            .normalise(&src, None, &policy)
            .unwrap();
        assert_eq!((n.w, n.h), (Some(640), Some(320)));
        let n = parse("w=400&dpr=2")
            .unwrap()
            .normalise(&src, None, &policy)
            .unwrap();
        assert_eq!(n.w, Some(960));
        let n = parse("w=5000")
            .unwrap()
            .normalise(&src, None, &policy)
            .unwrap();
        assert_eq!(n.w, Some(1280));
        let strict = Policy {
            strict: true,
            ..policy
        };
        let e = parse("w=500")
            .unwrap()
            .normalise(&src, None, &strict)
            .unwrap_err();
        assert_eq!(e.param, "w");
        assert!(e.message.contains("320, 640, 960, 1280"), "{e}");
        assert!(
            parse("w=640")
                .unwrap()
                .normalise(&src, None, &strict)
                .is_ok()
        );
        assert!(Policy::parse_widths("320,abc").is_err());
    }
}
