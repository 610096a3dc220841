//! Where `imgpipe process` writes each rendition: the `--name` template, names kept unique
//! within a run, and which files under `--out` are this recipe's outputs (so a later run over
//! the same folder does not take them for inputs).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// `--name` by default: the input's folder (relative to the folder given) kept under `--out`,
/// then `STEM-RENDITION.EXT`.
pub const DEFAULT_TEMPLATE: &str = "{dir}/{stem}-{rendition}.{ext}";

const PLACEHOLDERS: &str = "{stem}, {rendition}, {ext}, {width}, {height}, {dir}";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Stem,
    Rendition,
    Ext,
    Width,
    Height,
    Dir,
}

/// A parsed `--name`.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

/// What one output's name is made of.
pub struct Vars<'a> {
    /// The input's folder relative to the folder argument it was found in (empty for a file
    /// named on the command line).
    pub dir: &'a Path,
    pub stem: &'a str,
    pub rendition: &'a str,
    pub ext: &'a str,
    /// Known once the rendition is made; `None` while planning.
    pub dims: Option<(u32, u32)>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(0) if rest.starts_with('}') => {
                    bail!("--name {text}: a `}}` without its `{{` (placeholders: {PLACEHOLDERS})")
                }
                Some(0) => {
                    let close = rest[1..].find(['{', '}']).map(|i| i + 1);
                    let Some(end) = close.filter(|&i| rest[i..].starts_with('}')) else {
                        bail!(
                            "--name {text}: a `{{` without its `}}` (placeholders: {PLACEHOLDERS})"
                        );
                    };
                    parts.push(match &rest[1..end] {
                        "stem" => Part::Stem,
                        "rendition" => Part::Rendition,
                        "ext" => Part::Ext,
                        "width" => Part::Width,
                        "height" => Part::Height,
                        "dir" => Part::Dir,
                        other => bail!(
                            "--name {text}: no placeholder {{{other}}}; there are {PLACEHOLDERS}"
                        ),
                    });
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    parts.push(Part::Lit(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    parts.push(Part::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        // Inside --out: not absolute, and no `..` segment (a placeholder never renders as one:
        // stems are sanitised, folders are real ones below the folder given).
        if text.starts_with('/')
            || text.contains('\\')
            || text.split('/').any(|segment| segment == "..")
        {
            bail!("--name {text}: names a file outside --out; it is a path inside it");
        }
        if !parts
            .iter()
            .any(|p| matches!(p, Part::Stem | Part::Rendition | Part::Width | Part::Height))
        {
            bail!(
                "--name {text}: every input would get the same name; use {{stem}} (and {{rendition}} for a recipe of several renditions)"
            );
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether names depend on the rendition's size, which is known only once it is made.
    pub fn uses_dims(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Width | Part::Height))
    }

    pub fn uses_stem(&self) -> bool {
        self.parts.contains(&Part::Stem)
    }

    /// Whether two renditions of one input can get different names.
    pub fn tells_renditions_apart(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Rendition | Part::Width | Part::Height))
    }

    /// The output's path relative to `--out`: empty and `.` components dropped, so an empty
    /// `{dir}` leaves no leading `/`.
    pub fn render(&self, v: &Vars<'_>) -> PathBuf {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => text.push_str(s),
                Part::Stem => text.push_str(v.stem),
                Part::Rendition => text.push_str(v.rendition),
                Part::Ext => text.push_str(v.ext),
                Part::Width => text.push_str(&v.dims.map(|d| d.0.to_string()).unwrap_or_default()),
                Part::Height => text.push_str(&v.dims.map(|d| d.1.to_string()).unwrap_or_default()),
                Part::Dir => {
                    let dir: Vec<String> = v
                        .dir
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    text.push_str(&dir.join("/"));
                }
            }
        }
        text.split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .collect()
    }

    /// Whether `rel` (a path relative to `--out`) is a name this template gives one of
    /// `renditions` in one of `exts`: such a file is an earlier run's output, not an input.
    pub fn is_output(&self, rel: &Path, renditions: &[String], exts: &[&str]) -> bool {
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let text = parts.join("/");
        let ctx = Match { renditions, exts };
        // An empty {dir} at the start renders without its `/`: try the name with one too.
        ctx.matches(&self.parts, &text) || ctx.matches(&self.parts, &format!("/{text}"))
    }
}

struct Match<'a> {
    renditions: &'a [String],
    exts: &'a [&'a str],
}

impl Match<'_> {
    /// Backtracking match of `parts` against all of `text`. Templates have a handful of
    /// parts and names are short, so the search stays small.
    fn matches(&self, parts: &[Part], text: &str) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return text.is_empty();
        };
        let one_of =
            |o: &str| !o.is_empty() && text.starts_with(o) && self.matches(rest, &text[o.len()..]);
        match first {
            Part::Lit(s) => text.starts_with(s.as_str()) && self.matches(rest, &text[s.len()..]),
            Part::Rendition => self.renditions.iter().any(|o| one_of(o)),
            Part::Ext => self.exts.iter().any(|o| one_of(o)),
            Part::Width | Part::Height => {
                let digits = text.bytes().take_while(u8::is_ascii_digit).count();
                (1..=digits).any(|n| self.matches(rest, &text[n..]))
            }
            // A stem is one path component; a folder any number of them, or none.
            Part::Stem | Part::Dir => {
                let any_slash = *first == Part::Dir;
                let mut ends: Vec<usize> = text.char_indices().map(|(i, _)| i).skip(1).collect();
                ends.push(text.len());
                if any_slash {
                    ends.insert(0, 0);
                }
                ends.into_iter()
                    .take_while(|&end| any_slash || !text[..end].contains('/'))
                    .any(|end| self.matches(rest, &text[end..]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(dir: &'a str, stem: &'a str, rendition: &'a str, ext: &'a str) -> Vars<'a> {
        Vars {
            dir: Path::new(dir),
            stem,
            rendition,
            ext,
            dims: Some((800, 600)),
        }
    }

    #[test]
    fn the_default_keeps_the_folder_and_names_the_rendition() {
        let t = Template::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(
            t.render(&vars("", "a", "thumb", "webp")),
            Path::new("a-thumb.webp")
        );
        assert_eq!(
            t.render(&vars("2024/june", "a", "thumb", "webp")),
            Path::new("2024/june/a-thumb.webp")
        );
        // Dots between placeholders are no `..`.
        let t = Template::parse("{stem}.{rendition}.{ext}").unwrap();
        assert_eq!(
            t.render(&vars("", "a", "thumb", "webp")),
            Path::new("a.thumb.webp")
        );
        let t = Template::parse("{rendition}/{stem}_{width}x{height}.{ext}").unwrap();
        assert!(t.uses_dims());
        assert_eq!(
            t.render(&vars("x", "a", "large", "jpg")),
            Path::new("large/a_800x600.jpg")
        );
    }

    #[test]
    fn bad_templates_are_named() {
        for (text, words) in [
            ("{stem}-{size}.{ext}", "no placeholder {size}"),
            ("{stem.{ext}", "without its `}`"),
            ("{stem}}.jpg", "without its `{`"),
            ("../{stem}.{ext}", "outside --out"),
            ("/tmp/{stem}.{ext}", "outside --out"),
            ("photo.{ext}", "the same name"),
            ("x/../../{stem}.{ext}", "outside --out"),
        ] {
            let e = Template::parse(text).unwrap_err().to_string();
            assert!(e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn outputs_are_recognised_by_their_names() {
        let names = ["thumb".to_string(), "large".to_string()];
        let exts = ["webp", "jpg"];
        let t = Template::parse(DEFAULT_TEMPLATE).unwrap();
        let is = |p: &str| t.is_output(Path::new(p), &names, &exts);
        assert!(is("a-thumb.webp"));
        assert!(is("x/y/my-photo-large.jpg"));
        assert!(!is("a-medium.webp"), "not a rendition of this recipe");
        assert!(!is("a-thumb.png"), "not a format of this recipe");
        assert!(!is("-thumb.webp"), "a stem is never empty");
        assert!(!is("holiday.jpg"));
        let t = Template::parse("{stem}_{width}w.{ext}").unwrap();
        assert!(t.is_output(Path::new("a_800w.jpg"), &names, &exts));
        assert!(!t.is_output(Path::new("a_w.jpg"), &names, &exts));
        assert!(!t.is_output(Path::new("sub/a_800w.jpg"), &names, &exts));
    }
}
