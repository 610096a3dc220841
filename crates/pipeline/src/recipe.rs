use std::collections::BTreeMap;

use imaging::{Color, ColorHandling, JpegEncoder, Operation, OutputFormat, ResizeSpec};
use serde::{Deserialize, Serialize};

use crate::StepError;

/// Largest width or height a rendition may ask for.
pub const MAX_DIMENSION: u32 = 16_384;
/// Most renditions one recipe may ask for.
pub const MAX_RENDITIONS: usize = 16;
/// Most operations one rendition may chain.
pub const MAX_OPERATIONS: usize = 32;
pub const DEFAULT_QUALITY: u8 = 80;
/// The range `autoQualityTarget` may take: below 30 artefacts are plain to anyone, above 95
/// the search would land on quality 100 for most photos.
pub const AUTO_TARGET_RANGE: std::ops::RangeInclusive<f64> = 30.0..=95.0;

/// A rendition's quality: a number 1..=100, or `"auto"`, the lowest quality whose result
/// still scores `autoQualityTarget` (SSIMULACRA2) against the rendition's own pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Fixed(u8),
    Auto,
}

impl Serialize for Quality {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Quality::Fixed(q) => s.serialize_u8(*q),
            Quality::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Quality {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quality;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quality 1..=100 or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quality, E> {
                u8::try_from(v)
                    .map(Quality::Fixed)
                    .map_err(|_| E::custom(format!("quality {v}: must be 1..=100 or \"auto\"")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quality, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("quality {v}: must be 1..=100 or \"auto\"")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quality, E> {
                match v {
                    "auto" => Ok(Quality::Auto),
                    other => Err(E::custom(format!(
                        "quality `{other}`: must be 1..=100 or \"auto\""
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One output of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rendition {
    /// Names the rendition in keys and URLs: 1-64 of `a-z 0-9 - _`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<ResizeSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// The SSIMULACRA2 score `quality: "auto"` aims at; 70 ("high") when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_quality_target: Option<f64>,
    /// Progressive JPEG. Absent: progressive with the `small` JPEG encoder (its scan layout
    /// saves bytes), baseline with `fast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive: Option<bool>,
    /// `small` (default): mozjpeg's trellis quantisation; `fast`: libjpeg-turbo, about a
    /// tenth of the encode time for some 15-20 % more bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_encoder: Option<JpegEncoder>,
    /// 0..=9 (default 4): encoder time spent to save bytes, for AVIF, WebP and the small
    /// JPEG encoder's progressive scans (4: searched for renditions up to 1.6 MP under 0.75 bits
    /// a pixel, 5 and up: for every image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<u8>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lossless: bool,
    /// Keep the source's EXIF (GPS included). Off by default: outputs carry no metadata.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_metadata: bool,
    /// `srgb` (default): colours converted to sRGB and written without a profile. `keep`: the
    /// source's wide-gamut colours kept as they are, with its profile embedded.
    #[serde(default, skip_serializing_if = "is_default")]
    pub color_profile: ColorHandling,
    /// What transparent areas become when the format has no alpha (JPEG); white by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Color>,
}

impl Rendition {
    /// Quality, encoder and effort against the format they are for: a setting the output
    /// format cannot use is refused rather than ignored. With `format: "same"` the format is
    /// only known from the source, so each setting is allowed and applies when it can.
    fn validate_encoding(&self) -> Result<(), (&'static str, String)> {
        use OutputFormat as F;
        let f = self.format;
        if let Some(Quality::Fixed(q)) = self.quality
            && !(1..=100).contains(&q)
        {
            return Err(("quality", "must be 1..=100 or \"auto\"".into()));
        }
        if self.quality == Some(Quality::Auto) {
            if f == F::Png {
                return Err((
                    "quality",
                    "\"auto\" needs a lossy format (jpeg, webp or avif); PNG is lossless".into(),
                ));
            }
            if self.lossless {
                return Err((
                    "quality",
                    "\"auto\" chooses a lossy quality; it cannot go with `lossless`".into(),
                ));
            }
        }
        if let Some(t) = self.auto_quality_target {
            if self.quality != Some(Quality::Auto) {
                return Err((
                    "autoQualityTarget",
                    "applies only with `\"quality\": \"auto\"`".into(),
                ));
            }
            if !AUTO_TARGET_RANGE.contains(&t) {
                return Err((
                    "autoQualityTarget",
                    format!(
                        "must be a SSIMULACRA2 score {}..={} (70 is high quality, 90 visually lossless)",
                        AUTO_TARGET_RANGE.start(),
                        AUTO_TARGET_RANGE.end()
                    ),
                ));
            }
        }
        if self.jpeg_encoder.is_some() && !matches!(f, F::Jpeg | F::Same) {
            return Err((
                "jpegEncoder",
                format!(
                    "applies to JPEG output only; this rendition is {}",
                    name_of(f)
                ),
            ));
        }
        if self.progressive.is_some() && !matches!(f, F::Jpeg | F::Same) {
            return Err((
                "progressive",
                format!(
                    "applies to JPEG output only; this rendition is {}",
                    name_of(f)
                ),
            ));
        }
        if let Some(e) = self.effort {
            if e > imaging::MAX_EFFORT {
                return Err(("effort", format!("must be 0..={}", imaging::MAX_EFFORT)));
            }
            if f == F::Png {
                return Err((
                    "effort",
                    "applies to AVIF, WebP and JPEG output only; this rendition is png".into(),
                ));
            }
            if f == F::Jpeg && !self.searches_jpeg_scans() {
                return Err((
                    "effort",
                    "on JPEG it sets how hard the small encoder searches progressive scans; it \
                     does nothing with jpegEncoder \"fast\" or \"progressive\": false"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

fn name_of(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::Jpeg => "jpeg",
        OutputFormat::Png => "png",
        OutputFormat::Webp => "webp",
        OutputFormat::Avif => "avif",
        OutputFormat::Same => "same",
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Rendition {
    /// The fixed quality, or the default one: also where an automatic search starts from
    /// for outputs that have no quality to choose (PNG).
    pub fn quality(&self) -> u8 {
        match self.quality {
            Some(Quality::Fixed(q)) => q,
            _ => DEFAULT_QUALITY,
        }
    }

    /// The SSIMULACRA2 target when the quality is `"auto"`.
    pub fn auto_target(&self) -> Option<f64> {
        (self.quality == Some(Quality::Auto)).then(|| {
            self.auto_quality_target
                .unwrap_or(imaging::DEFAULT_QUALITY_TARGET)
        })
    }

    pub fn jpeg_encoder(&self) -> JpegEncoder {
        self.jpeg_encoder.unwrap_or_default()
    }

    /// Whether `effort` means something to this rendition's JPEG encoder: only the small
    /// encoder's progressive output has scans to search.
    pub fn searches_jpeg_scans(&self) -> bool {
        self.jpeg_encoder() == JpegEncoder::Small && self.progressive()
    }

    pub fn progressive(&self) -> bool {
        self.progressive
            .unwrap_or(self.jpeg_encoder() == JpegEncoder::Small)
    }

    /// How to encode this rendition as `format`, with the metadata given.
    pub fn encode_options(
        &self,
        format: imaging::Format,
        exif: Option<Vec<u8>>,
        icc: Option<Vec<u8>>,
    ) -> imaging::EncodeOptions {
        imaging::EncodeOptions {
            format,
            quality: self.quality(),
            progressive: self.progressive(),
            lossless: self.lossless,
            exif,
            icc,
            background: self.background(),
            jpeg_encoder: self.jpeg_encoder(),
            effort: self.effort.unwrap_or(imaging::DEFAULT_EFFORT),
        }
    }

    pub fn background(&self) -> Color {
        self.background.unwrap_or(Color::WHITE)
    }
}

/// What to make of one upload: a list of renditions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recipe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub renditions: Vec<Rendition>,
}

impl Recipe {
    /// Parses and validates JSON; every error names the field, e.g.
    /// `renditions[1].resize.width: must be 1..=16384`.
    pub fn from_json(text: &str) -> Result<Recipe, StepError> {
        let recipe: Recipe = crate::suggest::from_json(text)
            .map_err(|e| StepError::invalid_recipe(format!("recipe: {e}")))?;
        recipe.validate()?;
        Ok(recipe)
    }

    pub fn validate(&self) -> Result<(), StepError> {
        let bad =
            |field: String, msg: &str| Err(StepError::invalid_recipe(format!("{field}: {msg}")));
        if self.renditions.is_empty() {
            return bad("renditions".into(), "must list at least one rendition");
        }
        if self.renditions.len() > MAX_RENDITIONS {
            return bad(
                "renditions".into(),
                &format!("at most {MAX_RENDITIONS} renditions"),
            );
        }
        for (i, r) in self.renditions.iter().enumerate() {
            let at = format!("renditions[{i}]");
            if !valid_name(&r.name) {
                return bad(
                    format!("{at}.name"),
                    "must be 1-64 characters of a-z, 0-9, '-' or '_'",
                );
            }
            if self.renditions[..i].iter().any(|o| o.name == r.name) {
                return bad(format!("{at}.name"), &format!("`{}` is used twice", r.name));
            }
            if let Some(resize) = &r.resize {
                for (field, value) in [("width", resize.width), ("height", resize.height)] {
                    if let Some(v) = value
                        && !(1..=MAX_DIMENSION).contains(&v)
                    {
                        return bad(
                            format!("{at}.resize.{field}"),
                            &format!("must be 1..={MAX_DIMENSION}"),
                        );
                    }
                }
                if resize.width.is_none() && resize.height.is_none() {
                    return bad(format!("{at}.resize"), "needs a width, a height or both");
                }
            }
            if let Some(bg) = r.background
                && bg.0[3] != 255
            {
                return bad(
                    format!("{at}.background"),
                    "must be an opaque colour like #rrggbb (it fills what JPEG cannot keep transparent)",
                );
            }
            if let Err((field, msg)) = r.validate_encoding() {
                return bad(format!("{at}.{field}"), &msg);
            }
            if r.operations.len() > MAX_OPERATIONS {
                return bad(
                    format!("{at}.operations"),
                    &format!("at most {MAX_OPERATIONS} operations"),
                );
            }
            for (j, op) in r.operations.iter().enumerate() {
                if let Err((field, msg)) = op.validate() {
                    return bad(format!("{at}.operations[{j}].{field}"), &msg);
                }
            }
        }
        Ok(())
    }

    /// Refuses, as `RecipeTooLarge`, a recipe whose outputs for this source need more pixels
    /// than allowed: any one rendition over `max_pixels` (a 16384x16384 rendition of a small
    /// photo would need a gigabyte per step), or the source and every resized rendition
    /// together over `max_job_pixels`, since the Resize step holds them all at once (sixteen
    /// 7000x7000 renditions of one 74-byte PNG would otherwise need 3 GB).
    pub fn check_outputs(
        &self,
        src: (u32, u32),
        max_pixels: u64,
        max_job_pixels: u64,
    ) -> Result<(), StepError> {
        let source = u64::from(src.0) * u64::from(src.1);
        let mut total = source;
        for (i, r) in self.renditions.iter().enumerate() {
            let Some(spec) = &r.resize else {
                // As large as the source, which Resize holds already; but each rendition goes
                // through Filter and Store, sized for `max_pixels` (a large source may exceed it).
                if source > max_pixels {
                    return Err(too_large(format!(
                        "renditions[{i}] keeps this {}x{} image's size, {source} pixels; a \
                         rendition may have {max_pixels}: give it a resize",
                        src.0, src.1
                    )));
                }
                continue;
            };
            let plan = imaging::plan(src, spec);
            let (w, h) = (
                plan.scaled.0.max(plan.output.0),
                plan.scaled.1.max(plan.output.1),
            );
            let pixels = u64::from(w) * u64::from(h);
            if pixels > max_pixels {
                return Err(too_large(format!(
                    "renditions[{i}].resize: {w}x{h} for this {}x{} image is {pixels} pixels; \
                     the limit is {max_pixels}",
                    src.0, src.1
                )));
            }
            total = total.saturating_add(held_pixels(&plan));
        }
        if total > max_job_pixels {
            return Err(too_large(format!(
                "the {} renditions of this {}x{} image need {total} pixels together with the \
                 source; a job may hold {max_job_pixels}: ask for fewer or smaller renditions",
                self.renditions.len(),
                src.0,
                src.1
            )));
        }
        Ok(())
    }

    /// The largest output size any rendition can have, for a source of `src` upright dims.
    pub fn max_output(&self, src: (u32, u32)) -> (u32, u32) {
        self.renditions
            .iter()
            .map(|r| match &r.resize {
                Some(spec) => imaging::plan(src, spec).scaled,
                None => src,
            })
            .fold((0, 0), |(w, h), (a, b)| (w.max(a), h.max(b)))
    }
}

/// What one resized rendition holds in the Resize step: its whole scaled image, plus the
/// cropped or padded one when that differs (see render.rs).
fn held_pixels(plan: &imaging::Plan) -> u64 {
    let scaled = u64::from(plan.scaled.0) * u64::from(plan.scaled.1);
    if plan.output != plan.scaled || plan.offset != (0, 0) {
        scaled.saturating_add(u64::from(plan.output.0) * u64::from(plan.output.1))
    } else {
        scaled
    }
}

fn too_large(message: String) -> StepError {
    StepError::new(crate::ErrorKind::RecipeTooLarge, message)
}

/// Rendition and preset names end up in object keys, so they are kept to a safe alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Named recipes.
#[derive(Debug, Clone, PartialEq)]
pub struct Presets {
    recipes: BTreeMap<String, Recipe>,
}

/// The presets that ship with imgpipe (presets/presets.json in this crate).
pub const BUILTIN_PRESETS: &str = include_str!("../presets/presets.json");

impl Presets {
    pub fn builtin() -> Presets {
        // The built-in file is checked by a test, so a failure here is a build defect.
        Presets::from_json(BUILTIN_PRESETS).unwrap_or_else(|e| {
            tracing::error!("built-in presets are invalid: {e}");
            Presets {
                recipes: BTreeMap::new(),
            }
        })
    }

    pub fn from_json(text: &str) -> Result<Presets, StepError> {
        let recipes: BTreeMap<String, Recipe> = crate::suggest::from_json(text)
            .map_err(|e| StepError::invalid_recipe(format!("presets: {e}")))?;
        for (name, recipe) in &recipes {
            if !valid_name(name) {
                return Err(StepError::invalid_recipe(format!(
                    "presets.{name}: a preset name must be 1-64 characters of a-z, 0-9, '-' or '_'"
                )));
            }
            recipe
                .validate()
                .map_err(|e| StepError::invalid_recipe(format!("presets.{name}.{}", e.message)))?;
        }
        Ok(Presets { recipes })
    }

    pub fn get(&self, name: &str) -> Result<&Recipe, StepError> {
        self.recipes.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.recipes.keys().map(String::as_str).collect();
            let hint = crate::suggest::did_you_mean(name, known.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            StepError::invalid_recipe(format!(
                "preset: unknown preset `{name}` ({hint}known: {})",
                known.join(", ")
            ))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Recipe)> {
        self.recipes.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imaging::Fit;

    #[test]
    fn builtin_presets_parse_and_web_is_as_documented() {
        let presets = Presets::from_json(BUILTIN_PRESETS).unwrap();
        let web = presets.get("web").unwrap();
        let names: Vec<_> = web.renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["thumb", "medium", "large"]);
        let thumb = &web.renditions[0];
        let spec = thumb.resize.unwrap();
        assert_eq!(
            (spec.width, spec.height, spec.fit),
            (Some(256), Some(256), Fit::Cover)
        );
        assert_eq!(thumb.format, OutputFormat::Webp);
        for r in &web.renditions {
            assert!(
                r.resize.unwrap().without_enlargement,
                "{} must never enlarge",
                r.name
            );
        }
        assert_eq!(web.renditions[1].format, OutputFormat::Jpeg);
        assert_eq!(web.renditions[2].resize.unwrap().width, Some(2048));
    }

    fn refusal(rendition: &str) -> String {
        Recipe::from_json(&format!(r#"{{"renditions":[{rendition}]}}"#))
            .unwrap_err()
            .message
    }

    #[test]
    fn encoder_settings_are_refused_where_the_format_cannot_use_them() {
        assert_eq!(
            refusal(r#"{"name":"a","format":"png","effort":3}"#),
            "renditions[0].effort: applies to AVIF, WebP and JPEG output only; this rendition is png"
        );
        for fast in [
            r#"{"name":"a","format":"jpeg","jpegEncoder":"fast","effort":6}"#,
            r#"{"name":"a","format":"jpeg","progressive":false,"effort":6}"#,
        ] {
            assert!(
                refusal(fast).starts_with(
                    "renditions[0].effort: on JPEG it sets how hard the small encoder searches"
                ),
                "{fast}"
            );
        }
        Recipe::from_json(r#"{"renditions":[{"name":"a","format":"jpeg","effort":6}]}"#)
            .expect("effort on the small encoder's progressive JPEG");
        assert_eq!(
            refusal(r#"{"name":"a","format":"avif","effort":10}"#),
            "renditions[0].effort: must be 0..=9"
        );
        assert_eq!(
            refusal(r#"{"name":"a","format":"webp","jpegEncoder":"fast"}"#),
            "renditions[0].jpegEncoder: applies to JPEG output only; this rendition is webp"
        );
        assert_eq!(
            refusal(r#"{"name":"a","format":"avif","progressive":true}"#),
            "renditions[0].progressive: applies to JPEG output only; this rendition is avif"
        );
        let unknown = refusal(r#"{"name":"a","jpegEncoder":"turbo"}"#);
        assert!(
            unknown.contains("unknown variant `turbo`") && unknown.contains("small"),
            "{unknown}"
        );
        assert_eq!(
            refusal(r#"{"name":"a","format":"png","quality":"auto"}"#),
            "renditions[0].quality: \"auto\" needs a lossy format (jpeg, webp or avif); PNG is lossless"
        );
        assert_eq!(
            refusal(r#"{"name":"a","format":"webp","lossless":true,"quality":"auto"}"#),
            "renditions[0].quality: \"auto\" chooses a lossy quality; it cannot go with `lossless`"
        );
        assert_eq!(
            refusal(r#"{"name":"a","quality":80,"autoQualityTarget":75}"#),
            "renditions[0].autoQualityTarget: applies only with `\"quality\": \"auto\"`"
        );
        assert!(
            refusal(r#"{"name":"a","quality":"auto","autoQualityTarget":99}"#).starts_with(
                "renditions[0].autoQualityTarget: must be a SSIMULACRA2 score 30..=95"
            )
        );
        let word = refusal(r#"{"name":"a","quality":"best"}"#);
        assert!(word.contains("must be 1..=100 or \"auto\""), "{word}");
        let big = refusal(r#"{"name":"a","quality":300}"#);
        assert!(big.contains("must be 1..=100 or \"auto\""), "{big}");
    }

    #[test]
    fn encoder_settings_parse_and_default_as_documented() {
        let recipe = Recipe::from_json(
            r#"{"renditions":[
                {"name":"a","format":"avif","quality":"auto","autoQualityTarget":80,"effort":7},
                {"name":"b","format":"jpeg","jpegEncoder":"fast","quality":75},
                {"name":"c","format":"jpeg"},
                {"name":"d","format":"same","jpegEncoder":"fast","progressive":true,"effort":2}
            ]}"#,
        )
        .unwrap();
        let [a, b, c, d] = &recipe.renditions[..] else {
            panic!("four renditions")
        };
        assert_eq!(a.quality, Some(Quality::Auto));
        assert_eq!(a.auto_target(), Some(80.0));
        let o = a.encode_options(imaging::Format::Avif, None, None);
        assert_eq!((o.effort, o.quality), (7, DEFAULT_QUALITY));
        assert_eq!(b.auto_target(), None);
        let o = b.encode_options(imaging::Format::Jpeg, None, None);
        assert_eq!(
            (o.jpeg_encoder, o.progressive, o.quality),
            (JpegEncoder::Fast, false, 75)
        );
        // The small encoder writes progressive unless told otherwise; effort defaults to 4.
        let o = c.encode_options(imaging::Format::Jpeg, None, None);
        assert_eq!(
            (o.jpeg_encoder, o.progressive, o.effort),
            (JpegEncoder::Small, true, imaging::DEFAULT_EFFORT)
        );
        let o = d.encode_options(imaging::Format::Jpeg, None, None);
        assert_eq!(
            (o.jpeg_encoder, o.progressive, o.effort),
            (JpegEncoder::Fast, true, 2)
        );
        // Written back as given: numbers stay numbers, "auto" stays a string.
        let json = serde_json::to_value(&recipe).unwrap();
        assert_eq!(json["renditions"][0]["quality"], "auto");
        assert_eq!(json["renditions"][1]["quality"], 75);
        assert_eq!(json["renditions"][1]["jpegEncoder"], "fast");
        assert!(json["renditions"][2].get("progressive").is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let err = Recipe::from_json(
            r#"{"renditions":[{"name":"a","resize":{"width":10}},{"name":"b","resize":{"width":0}}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.name(), "InvalidRecipe");
        assert_eq!(err.message, "renditions[1].resize.width: must be 1..=16384");

        let err = Recipe::from_json(r#"{"renditions":[{"name":"Bad Name"}]}"#).unwrap_err();
        assert!(
            err.message.starts_with("renditions[0].name:"),
            "{}",
            err.message
        );

        let err = Recipe::from_json(r#"{"renditions":[{"name":"a","quality":0}]}"#).unwrap_err();
        assert_eq!(
            err.message,
            "renditions[0].quality: must be 1..=100 or \"auto\""
        );

        let err = Recipe::from_json(r#"{"renditions":[{"name":"a","colour":"red"}]}"#).unwrap_err();
        assert!(err.message.contains("colour"), "{}", err.message);

        let err =
            Recipe::from_json(r#"{"renditions":[{"name":"a","format":"heic"}]}"#).unwrap_err();
        assert!(err.message.contains("heic"), "{}", err.message);

        let err = Recipe::from_json(r#"{"renditions":[]}"#).unwrap_err();
        assert!(err.message.starts_with("renditions:"), "{}", err.message);

        let err = Recipe::from_json(r#"{"renditions":[{"name":"a"},{"name":"a"}]}"#).unwrap_err();
        assert!(
            err.message.starts_with("renditions[1].name:"),
            "{}",
            err.message
        );
    }

    #[test]
    fn outputs_are_held_to_the_pixel_budget() {
        let recipe = Recipe::from_json(
            r#"{"renditions":[{"name":"a","resize":{"width":256}},{"name":"huge","resize":{"width":16000,"height":16000,"fit":"fill"}}]}"#,
        )
        .unwrap();
        let err = recipe
            .check_outputs((800, 600), 50_000_000, u64::MAX)
            .unwrap_err();
        assert_eq!(err.name(), "RecipeTooLarge");
        assert!(
            err.message.starts_with("renditions[1].resize: 16000x16000"),
            "{}",
            err.message
        );
        assert!(
            recipe
                .check_outputs((800, 600), 300_000_000, u64::MAX)
                .is_ok()
        );
        let web = Presets::builtin().get("web").unwrap().clone();
        assert!(
            web.check_outputs((5640, 3172), 50_000_000, 200_000_000)
                .is_ok()
        );
    }

    #[test]
    fn all_renditions_together_are_held_to_the_job_budget() {
        // Sixteen 7000x7000 renditions of a tiny source: each within the 50 MP limit, 784 MP
        // together.
        let renditions: Vec<String> = (0..16)
            .map(|i| {
                format!(r#"{{"name":"r{i}","resize":{{"width":7000,"height":7000,"fit":"fill"}}}}"#)
            })
            .collect();
        let recipe =
            Recipe::from_json(&format!(r#"{{"renditions":[{}]}}"#, renditions.join(","))).unwrap();
        let err = recipe
            .check_outputs((10, 10), 50_000_000, 200_000_000)
            .unwrap_err();
        assert_eq!(err.name(), "RecipeTooLarge");
        assert!(
            err.message.contains("784000100 pixels") && err.message.contains("200000000"),
            "{}",
            err.message
        );
        // Four of them, with the source, fit.
        let four = Recipe {
            description: None,
            renditions: recipe.renditions[..4].to_vec(),
        };
        assert!(
            four.check_outputs((10, 10), 50_000_000, 200_000_000)
                .is_ok()
        );
        // A crop holds its scaled image and the cropped one: 2000x1000 covered by 2000x2000
        // then cut to 2000x1000 is 6 MP, over a budget of 5.5 MP with the 1 MP source.
        let crop = Recipe::from_json(
            r#"{"renditions":[{"name":"c","resize":{"width":2000,"height":1000,"fit":"cover"}}]}"#,
        )
        .unwrap();
        assert!(
            crop.check_outputs((1000, 1000), 50_000_000, 5_500_000)
                .is_err()
        );
        assert!(
            crop.check_outputs((1000, 1000), 50_000_000, 7_000_000)
                .is_ok()
        );
    }

    #[test]
    fn unknown_preset_lists_known_ones() {
        let err = Presets::builtin().get("nope").unwrap_err();
        assert!(err.message.contains("web"), "{}", err.message);
    }

    #[test]
    fn recipe_round_trips_through_json() {
        let web = Presets::builtin().get("web").unwrap().clone();
        let text = serde_json::to_string(&web).unwrap();
        assert_eq!(Recipe::from_json(&text).unwrap(), web);
    }
}
