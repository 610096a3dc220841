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

/// `blur=2`, `sharpen=1,0.5`, `crop=0,0,100,100`, `tint=#ff8800`, `grayscale`.
pub fn parse_op(text: &str) -> Result<Operation> {
    let (name, args) = match text.split_once('=') {
        Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim())),
        None => (text.trim().to_ascii_lowercase(), None),
    };
    let nums = |want: std::ops::RangeInclusive<usize>| -> Result<Vec<f32>> {
        let list: Vec<f32> = match args {
            None => Vec::new(),
            Some(a) => a
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<f32>()
                        .with_context(|| format!("--op {text}: `{p}` is not a number"))
                })
                .collect::<Result<_>>()?,
        };
        if !want.contains(&list.len()) {
            bail!("--op {text}: {name} takes {want:?} numbers");
        }
        Ok(list)
    };
    let one = || -> Result<f32> { Ok(nums(1..=1)?[0]) };
    let as_u32 = |v: f32| -> Result<u32> {
        if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f32 {
            bail!("--op {text}: crop takes whole, non-negative numbers");
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
                .context("--op tint needs a colour, e.g. tint=#ff8800")?
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--op {text}: {e}"))?;
            Operation::Tint { color }
        }
        other => bail!(
            "--op {text}: unknown operation `{other}` (rotate, flip, flop, crop, grayscale, sepia, blur, sharpen, brightness, contrast, saturation, hue, gamma, invert, tint)"
        ),
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
        assert!(parse_op("blur").unwrap_err().to_string().contains("blur"));
        assert!(parse_op("crop=1,2,3").is_err());
        assert!(
            parse_op("explode")
                .unwrap_err()
                .to_string()
                .contains("unknown operation")
        );
        assert!(parse_op("tint=#zz0000").is_err());
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
