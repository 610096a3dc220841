//! What `imgpipe process` applies: the preset, recipe file or command-line rendition, with
//! the recipe options folded in.

use anyhow::{Context, Result, bail};
use imaging::{Fit, Gravity, OutputFormat, ResizeSpec};
use pipeline::{Recipe, Rendition};

use super::args::{ColorProfileArg, FitArg, FormatArg, GravityArg, JpegEncoderArg, ProcessArgs};
use super::ops::{parse_op, parse_resize};

pub fn describe_rendition(r: &Rendition) -> String {
    let mut parts = Vec::new();
    if let Some(spec) = &r.resize {
        let dim = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        parts.push(format!(
            "{}x{} {:?}{}",
            dim(spec.width),
            dim(spec.height),
            spec.fit,
            if spec.without_enlargement {
                " (never enlarge)"
            } else {
                ""
            }
        ));
    }
    for op in &r.operations {
        parts.push(serde_json::to_string(op).unwrap_or_default());
    }
    let format = match r.format {
        OutputFormat::Same => "source's format".to_string(),
        f => format!("{f:?}").to_lowercase(),
    };
    // Only lossy output has a quality: PNG and lossless WebP are said as what they are.
    match (r.format, r.lossless, r.auto_target()) {
        (OutputFormat::Png, _, _) => parts.push(format),
        (OutputFormat::Webp, true, _) => parts.push(format!("{format} lossless")),
        (_, _, Some(target)) => parts.push(format!("{format}, quality auto (score {target})")),
        (_, _, None) => parts.push(format!("{format} q{}", r.quality())),
    }
    if r.color_profile == imaging::ColorHandling::Keep {
        parts.push("source colour profile kept".into());
    }
    if let Some(bg) = r.background {
        parts.push(format!("background {bg}"));
    }
    parts.join(", ")
}

/// What `imgpipe process` applies: a preset by name, or an explicit recipe, and the
/// recipe-level options that changed a preset's or recipe's renditions (said in the summary).
pub(super) struct Plan {
    pub preset: Option<String>,
    pub recipe: Option<Recipe>,
    /// The preset or recipe file the renditions came from, and what the options set in them.
    pub changed: Option<(String, Vec<String>)>,
}

/// The recipe the flags describe. `--quality`, `--keep-metadata` and `--without-enlargement`
/// shape the one ad-hoc rendition of `--resize`/`--op`/`--format`, or else apply to every
/// rendition of the preset or recipe they fit; `--color-profile`, `--background`,
/// `--jpeg-encoder`, `--effort` and `--quality-target` apply to every rendition they fit
/// either way. An option that fits no rendition is refused by name, never dropped.
pub(super) fn recipe_of(args: &ProcessArgs, config: &pipeline::Config) -> Result<Plan> {
    let (preset, recipe) = base_recipe_of(args, config)?;
    let ad_hoc = is_ad_hoc(args);
    let overrides_shape =
        !ad_hoc && (args.quality.is_some() || args.keep_metadata || args.without_enlargement);
    if !overrides_shape
        && args.color_profile.is_none()
        && args.background.is_none()
        && args.jpeg_encoder.is_none()
        && args.effort.is_none()
        && args.quality_target.is_none()
    {
        return Ok(Plan {
            preset,
            recipe,
            changed: None,
        });
    }
    let source = match (&preset, &args.recipe) {
        (Some(name), _) => format!("preset {name}"),
        (None, Some(path)) => format!("recipe {}", path.display()),
        (None, None) => "this command line".to_string(),
    };
    let mut recipe = match (preset, recipe) {
        (_, Some(recipe)) => recipe,
        (Some(name), None) => config.presets.get(&name)?.clone(),
        (None, None) => bail!("no recipe to apply these options to"),
    };
    use imaging::OutputFormat as F;
    #[derive(Default)]
    struct Used {
        quality: bool,
        enlargement: bool,
        jpeg_encoder: bool,
        effort: bool,
        target: bool,
    }
    let mut used = Used::default();
    for r in &mut recipe.renditions {
        if !ad_hoc {
            if let Some(q) = args.quality
                && (matches!(r.format, F::Jpeg | F::Avif | F::Same)
                    || (r.format == F::Webp && !r.lossless))
            {
                r.quality = Some(q);
                used.quality = true;
            }
            if args.keep_metadata {
                r.keep_metadata = true;
            }
            if args.without_enlargement
                && let Some(resize) = &mut r.resize
            {
                resize.without_enlargement = true;
                used.enlargement = true;
            }
        }
        if let Some(c) = args.color_profile {
            r.color_profile = c.into();
        }
        if let Some(bg) = args.background {
            r.background = Some(bg);
        }
        if let Some(e) = args.jpeg_encoder
            && matches!(r.format, F::Jpeg | F::Same)
        {
            r.jpeg_encoder = Some(e.into());
            used.jpeg_encoder = true;
        }
        if let Some(e) = args.effort
            && (matches!(r.format, F::Avif | F::Webp | F::Same)
                || (r.format == F::Jpeg && r.searches_jpeg_scans()))
        {
            r.effort = Some(e);
            used.effort = true;
        }
        if let Some(t) = args.quality_target
            && r.quality == Some(pipeline::Quality::Auto)
        {
            r.auto_quality_target = Some(t);
            used.target = true;
        }
    }
    // An option no rendition can use is a mistake to report, not to drop.
    let mut changed = Vec::new();
    if !ad_hoc {
        if let Some(q) = args.quality {
            if !used.quality {
                bail!(
                    "--quality: no rendition of {source} has a quality to set (PNG and lossless WebP have none)"
                );
            }
            changed.push(format!("quality {}", quality_text(q)));
        }
        if args.keep_metadata {
            changed.push("EXIF kept".to_string());
        }
        if args.without_enlargement {
            if !used.enlargement {
                bail!("--without-enlargement: no rendition of {source} resizes");
            }
            changed.push("never enlarged".to_string());
        }
    }
    if let Some(c) = args.color_profile {
        changed.push(match c {
            ColorProfileArg::Srgb => "colours converted to sRGB".to_string(),
            ColorProfileArg::Keep => "colour profile kept".to_string(),
        });
    }
    if let Some(bg) = args.background {
        changed.push(format!("background {bg}"));
    }
    if let Some(e) = args.jpeg_encoder {
        if !used.jpeg_encoder {
            bail!("--jpeg-encoder: no rendition of {source} is JPEG");
        }
        changed.push(format!(
            "JPEG encoder {}",
            match e {
                JpegEncoderArg::Small => "small",
                JpegEncoderArg::Fast => "fast",
            }
        ));
    }
    if let Some(e) = args.effort {
        if !used.effort {
            bail!(
                "--effort: no rendition of {source} is AVIF, WebP or a small-encoder progressive JPEG"
            );
        }
        changed.push(format!("effort {e}"));
    }
    if let Some(t) = args.quality_target {
        if !used.target {
            bail!(
                "--quality-target: no rendition of {source} has quality auto (give --quality auto)"
            );
        }
        changed.push(format!("quality target {t}"));
    }
    recipe.validate()?;
    Ok(Plan {
        preset: None,
        recipe: Some(recipe),
        changed: (!ad_hoc).then_some((source, changed)),
    })
}

fn quality_text(q: pipeline::Quality) -> String {
    match q {
        pipeline::Quality::Auto => "auto".to_string(),
        pipeline::Quality::Fixed(n) => n.to_string(),
    }
}

/// Whether the command line describes its own single rendition rather than naming a preset
/// or recipe.
fn is_ad_hoc(args: &ProcessArgs) -> bool {
    args.recipe.is_none()
        && args.preset.is_none()
        && (args.resize.is_some()
            || args.width.is_some()
            || args.height.is_some()
            || !args.ops.is_empty()
            || args.format.is_some()
            || args.rendition_name.is_some())
}

fn base_recipe_of(
    args: &ProcessArgs,
    config: &pipeline::Config,
) -> Result<(Option<String>, Option<Recipe>)> {
    if let Some(path) = &args.recipe {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading recipe {}", path.display()))?;
        let recipe = Recipe::from_json(&text).with_context(|| format!("in {}", path.display()))?;
        return Ok((None, Some(recipe)));
    }
    if !is_ad_hoc(args) {
        let name = args
            .preset
            .clone()
            .unwrap_or_else(|| config.default_preset.clone());
        config.presets.get(&name)?;
        return Ok((Some(name), None));
    }
    let size = match (&args.resize, args.width, args.height) {
        (Some(text), _, _) => Some(parse_resize(text)?),
        (None, None, None) => None,
        (None, w, h) => Some((w, h)),
    };
    let resize = size.map(|(width, height)| ResizeSpec {
        width,
        height,
        fit: match args.fit {
            FitArg::Cover => Fit::Cover,
            FitArg::Contain => Fit::Contain,
            FitArg::Fill => Fit::Fill,
            FitArg::Inside => Fit::Inside,
            FitArg::Outside => Fit::Outside,
        },
        gravity: match args.gravity {
            GravityArg::Center => Gravity::Center,
            GravityArg::North => Gravity::North,
            GravityArg::Northeast => Gravity::NorthEast,
            GravityArg::East => Gravity::East,
            GravityArg::Southeast => Gravity::SouthEast,
            GravityArg::South => Gravity::South,
            GravityArg::Southwest => Gravity::SouthWest,
            GravityArg::West => Gravity::West,
            GravityArg::Northwest => Gravity::NorthWest,
            GravityArg::Smart => Gravity::Smart,
        },
        without_enlargement: args.without_enlargement,
        background: None,
        focal_point: None,
    });
    let recipe = Recipe {
        description: None,
        renditions: vec![Rendition {
            name: args
                .rendition_name
                .clone()
                .unwrap_or_else(|| "out".to_string()),
            resize,
            operations: args
                .ops
                .iter()
                .map(|o| parse_op(o))
                .collect::<Result<_>>()?,
            format: match args.format {
                None | Some(FormatArg::Same) => OutputFormat::Same,
                Some(FormatArg::Jpeg) => OutputFormat::Jpeg,
                Some(FormatArg::Png) => OutputFormat::Png,
                Some(FormatArg::Webp) => OutputFormat::Webp,
                Some(FormatArg::Avif) => OutputFormat::Avif,
            },
            quality: args.quality,
            auto_quality_target: None,
            progressive: None,
            jpeg_encoder: None,
            effort: None,
            lossless: false,
            keep_metadata: args.keep_metadata,
            color_profile: imaging::ColorHandling::Srgb,
            background: None,
        }],
    };
    recipe.validate()?;
    Ok((None, Some(recipe)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan `imgpipe process ARGS` makes, with the built-in presets.
    fn plan(argv: &[&str]) -> Result<Plan> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ProcessArgs,
        }
        use clap::Parser;
        let argv = ["process", "in.jpg", "--out", "out"].iter().chain(argv);
        let cli = Cli::try_parse_from(argv)?;
        recipe_of(&cli.args, &pipeline::Config::default())
    }

    fn renditions(plan: &Plan) -> &[Rendition] {
        &plan.recipe.as_ref().expect("an explicit recipe").renditions
    }

    #[test]
    fn recipe_options_change_every_rendition_of_a_preset_and_say_so() {
        use pipeline::Quality;
        // A named preset keeps its renditions; --quality goes into each.
        let p = plan(&["--preset", "web", "--quality", "50"]).unwrap();
        let names: Vec<_> = renditions(&p).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["thumb", "medium", "large"]);
        assert!(
            renditions(&p)
                .iter()
                .all(|r| r.quality == Some(Quality::Fixed(50)))
        );
        let (source, changed) = p.changed.as_ref().unwrap();
        assert_eq!(source, "preset web");
        assert_eq!(changed, &["quality 50"]);

        // The default preset too, when no rendition is described on the command line.
        let p = plan(&["--quality", "auto", "--quality-target", "75"]).unwrap();
        assert_eq!(renditions(&p).len(), 3);
        assert!(
            renditions(&p)
                .iter()
                .all(|r| r.quality == Some(Quality::Auto) && r.auto_quality_target == Some(75.0))
        );

        let p = plan(&[
            "--preset",
            "thumbnail",
            "--keep-metadata",
            "--without-enlargement",
        ])
        .unwrap();
        let thumb = &renditions(&p)[0];
        assert_eq!(thumb.name, "thumb");
        assert!(thumb.keep_metadata);
        assert!(thumb.resize.as_ref().unwrap().without_enlargement);
        assert_eq!(
            p.changed.as_ref().unwrap().1,
            ["EXIF kept", "never enlarged"]
        );

        // Without options the preset is used by name, unchanged.
        let p = plan(&["--preset", "social"]).unwrap();
        assert_eq!(p.preset.as_deref(), Some("social"));
        assert!(p.recipe.is_none() && p.changed.is_none());
    }

    #[test]
    fn recipe_options_change_a_recipe_files_renditions_they_fit() {
        let dir = std::env::temp_dir().join(format!("imgpipe-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mixed = dir.join("mixed.json");
        std::fs::write(
            &mixed,
            r#"{"renditions": [
                {"name": "photo", "format": "jpeg", "quality": 90},
                {"name": "icon", "resize": {"width": 64}, "format": "png"}]}"#,
        )
        .unwrap();
        let p = plan(&["--recipe", mixed.to_str().unwrap(), "--quality", "50"]).unwrap();
        let r = renditions(&p);
        assert_eq!(r[0].quality, Some(pipeline::Quality::Fixed(50)));
        assert_eq!(r[1].quality, None, "PNG has no quality");

        // An option that fits no rendition is refused by name.
        let png = dir.join("png.json");
        std::fs::write(&png, r#"{"renditions": [{"name": "a", "format": "png"}]}"#).unwrap();
        let png = png.to_str().unwrap();
        for (extra, words) in [
            ("--quality", "--quality: no rendition of recipe"),
            (
                "--without-enlargement",
                "--without-enlargement: no rendition of recipe",
            ),
            ("--jpeg-encoder", "--jpeg-encoder: no rendition of recipe"),
        ] {
            let mut argv = vec!["--recipe", png, extra];
            match extra {
                "--quality" => argv.push("50"),
                "--jpeg-encoder" => argv.push("fast"),
                _ => {}
            }
            let e = plan(&argv).err().unwrap().to_string();
            assert!(e.starts_with(words), "{extra}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_ad_hoc_rendition_takes_its_options_and_conflicts_are_refused() {
        let p = plan(&["--resize", "100x", "--quality", "50", "--keep-metadata"]).unwrap();
        let r = renditions(&p);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "out");
        assert_eq!(r[0].quality, Some(pipeline::Quality::Fixed(50)));
        assert!(r[0].keep_metadata);
        assert!(p.changed.is_none());
        // `jpg` and any case name JPEG.
        for name in ["jpg", "JPG", "Jpeg"] {
            let p = plan(&["--resize", "100x", "--format", name]).unwrap();
            assert_eq!(renditions(&p)[0].format, OutputFormat::Jpeg, "{name}");
        }
        assert!(plan(&["--format", "jpx"]).is_err());
        // A format with a preset is a contradiction clap names.
        let e = plan(&["--preset", "web", "--format", "png"]).err().unwrap();
        assert!(e.to_string().contains("--format"), "{e}");
    }
}
