//! `--op` and `--resize` as typed on the command line.

use anyhow::{Context, Result, bail};
use imaging::Operation;

pub(super) fn parse_resize(text: &str) -> Result<(Option<u32>, Option<u32>)> {
    let (w, h) = text
        .to_ascii_lowercase()
        .split_once('x')
        .map(|(w, h)| (w.to_string(), h.to_string()))
        .with_context(|| format!("--resize `{text}`: expected WIDTHxHEIGHT, WIDTHx or xHEIGHT"))?;
    let num = |s: &str| -> Result<Option<u32>> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<u32>()
            .map(Some)
            .with_context(|| format!("--resize `{text}`: `{s}` is not a whole number"))
    };
    let (w, h) = (num(&w)?, num(&h)?);
    if w.is_none() && h.is_none() {
        bail!("--resize `{text}`: give a width, a height or both");
    }
    Ok((w, h))
}

/// Every operation `--op` knows: its names, and what it takes as typed (`""` for nothing).
const OPERATIONS: &[(&[&str], &str)] = &[
    (&["rotate"], "DEGREES"),
    (&["flip"], ""),
    (&["flop"], ""),
    (&["crop", "extract"], "LEFT,TOP,WIDTH,HEIGHT"),
    (&["grayscale", "greyscale"], ""),
    (&["sepia"], ""),
    (&["blur"], "SIGMA"),
    (&["sharpen"], "SIGMA[,AMOUNT]"),
    (&["brightness"], "FACTOR"),
    (&["contrast"], "FACTOR"),
    (&["saturation"], "FACTOR"),
    (&["hue"], "DEGREES"),
    (&["gamma"], "GAMMA"),
    (&["invert", "negate"], ""),
    (&["tint"], "#RRGGBB"),
];

/// What `name` takes, in words: "one number: SIGMA", "four whole numbers: LEFT,TOP,...".
fn takes(name: &str, usage: &str) -> String {
    let example = match name {
        "crop" | "extract" => "crop=0,0,800,600",
        "sharpen" => "sharpen=1 or sharpen=1,0.5",
        "tint" => "tint=#ff8800",
        "rotate" | "hue" => "=90",
        "gamma" => "=2.2",
        "blur" => "=2",
        _ => "=1.2",
    };
    let example = if example.starts_with('=') {
        format!("{name}{example}")
    } else {
        example.to_string()
    };
    match usage {
        "" => format!("{name} takes nothing after it (write `{name}`)"),
        "LEFT,TOP,WIDTH,HEIGHT" => {
            format!("{name} takes four whole numbers: {usage} (e.g. {example})")
        }
        "SIGMA[,AMOUNT]" => format!("{name} takes one or two numbers: {usage} (e.g. {example})"),
        "#RRGGBB" => format!("{name} takes a colour: {usage} (e.g. {example})"),
        _ => format!("{name} takes one number: {usage} (e.g. {example})"),
    }
}

/// `blur=2`, `sharpen=1,0.5`, `crop=0,0,100,100`, `tint=#ff8800`, `grayscale`.
pub fn parse_op(text: &str) -> Result<Operation> {
    let (name, args) = match text.split_once('=') {
        Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim())),
        None => (text.trim().to_ascii_lowercase(), None),
    };
    if name == "overlay" {
        bail!(
            "--op {text}: an overlay names another image and where it goes; write it in a \
             recipe: {{\"op\": \"overlay\", \"image\": \"IMAGE_ID\", \"gravity\": \"southeast\", \
             \"margin\": 16, \"opacity\": 0.8, \"scale\": 0.2}} (--recipe FILE)"
        );
    }
    let Some((_, usage)) = OPERATIONS
        .iter()
        .find(|(names, _)| names.contains(&name.as_str()))
    else {
        let all: Vec<&str> = OPERATIONS.iter().map(|(names, _)| names[0]).collect();
        let every = OPERATIONS
            .iter()
            .flat_map(|(names, _)| names.iter().copied());
        let hint = pipeline::suggest::did_you_mean(&name, every)
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        bail!(
            "--op {text}: unknown operation `{name}` ({hint}known: {})",
            all.join(", ")
        );
    };
    let usage_error = || anyhow::anyhow!("--op {text}: {}", takes(&name, usage));
    if usage.is_empty() && args.is_some() {
        return Err(usage_error());
    }
    let nums = |want: std::ops::RangeInclusive<usize>| -> Result<Vec<f32>> {
        let list: Vec<f32> = match args {
            None | Some("") => Vec::new(),
            Some(a) => a
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .with_context(|| {
                            format!(
                                "--op {text}: `{}` is not a number; {}",
                                p.trim(),
                                takes(&name, usage)
                            )
                        })
                })
                .collect::<Result<_>>()?,
        };
        if !want.contains(&list.len()) {
            return Err(usage_error());
        }
        Ok(list)
    };
    let one = || -> Result<f32> { Ok(nums(1..=1)?[0]) };
    let as_u32 = |v: f32| -> Result<u32> {
        if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f32 {
            return Err(usage_error());
        }
        Ok(v as u32)
    };
    let op = match name.as_str() {
        "rotate" => Operation::Rotate {
            angle: one()?,
            background: None,
        },
        "flip" => Operation::Flip,
        "flop" => Operation::Flop,
        "crop" | "extract" => {
            let v = nums(4..=4)?;
            Operation::Crop {
                left: as_u32(v[0])?,
                top: as_u32(v[1])?,
                width: as_u32(v[2])?,
                height: as_u32(v[3])?,
            }
        }
        "grayscale" | "greyscale" => Operation::Grayscale,
        "sepia" => Operation::Sepia,
        "blur" => Operation::Blur { sigma: one()? },
        "sharpen" => {
            let v = nums(1..=2)?;
            Operation::Sharpen {
                sigma: v[0],
                amount: v.get(1).copied().unwrap_or(1.0),
            }
        }
        "brightness" => Operation::Brightness { factor: one()? },
        "contrast" => Operation::Contrast { factor: one()? },
        "saturation" => Operation::Saturation { factor: one()? },
        "hue" => Operation::Hue { degrees: one()? },
        "gamma" => Operation::Gamma { gamma: one()? },
        "invert" | "negate" => Operation::Invert,
        "tint" => {
            let color = args
                .filter(|a| !a.is_empty())
                .ok_or_else(usage_error)?
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--op {text}: {e}"))?;
            Operation::Tint { color }
        }
        _ => return Err(usage_error()),
    };
    if let Err((field, msg)) = op.validate() {
        bail!("--op {text}: {field}: {msg}");
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_is_pointed_to_a_recipe() {
        let e = parse_op("overlay=logo").unwrap_err().to_string();
        assert!(
            e.contains("recipe") && e.contains("\"op\": \"overlay\""),
            "{e}"
        );
    }

    #[test]
    fn parses_operations() {
        assert_eq!(parse_op("grayscale").unwrap(), Operation::Grayscale);
        assert_eq!(parse_op("blur=2").unwrap(), Operation::Blur { sigma: 2.0 });
        assert_eq!(
            parse_op("sharpen=1,0.5").unwrap(),
            Operation::Sharpen {
                sigma: 1.0,
                amount: 0.5
            }
        );
        assert_eq!(
            parse_op("crop=1,2,30,40").unwrap(),
            Operation::Crop {
                left: 1,
                top: 2,
                width: 30,
                height: 40
            }
        );
        let err = |t: &str| parse_op(t).unwrap_err().to_string();
        assert_eq!(
            err("blur"),
            "--op blur: blur takes one number: SIGMA (e.g. blur=2)"
        );
        assert_eq!(
            err("crop=1,2,3"),
            "--op crop=1,2,3: crop takes four whole numbers: LEFT,TOP,WIDTH,HEIGHT (e.g. crop=0,0,800,600)"
        );
        assert_eq!(err("crop=1,2,3.5,4"), err("crop=1,2,3.5,4"));
        assert!(err("crop=1,2,3.5,4").contains("four whole numbers"));
        assert_eq!(
            err("flip=3"),
            "--op flip=3: flip takes nothing after it (write `flip`)"
        );
        assert_eq!(
            err("blur=x"),
            "--op blur=x: `x` is not a number; blur takes one number: SIGMA (e.g. blur=2)"
        );
        assert!(err("blur=inf").contains("not a number"));
        assert!(
            err("blurr=2").starts_with(
                "--op blurr=2: unknown operation `blurr` (did you mean `blur`? known: rotate, flip"
            ),
            "{}",
            err("blurr=2")
        );
        assert!(!err("explode").contains("did you mean"));
        assert!(parse_op("tint=#zz0000").is_err());
        assert!(err("tint").contains("tint takes a colour: #RRGGBB"));
    }

    #[test]
    fn parses_resize_boxes() {
        assert_eq!(parse_resize("800x600").unwrap(), (Some(800), Some(600)));
        assert_eq!(parse_resize("800x").unwrap(), (Some(800), None));
        assert_eq!(parse_resize("x600").unwrap(), (None, Some(600)));
        assert!(parse_resize("x").is_err());
        assert!(parse_resize("big").is_err());
    }
}
