//! Mistakes in names and JSON said the way a person reads them: "did you mean" for a mistyped
//! name, and JSON errors with the field they are in and the type in words.

/// The candidate most like `typed` (Jaro-Winkler similarity, as clap's own suggestions), if
/// any is at least 0.8 alike; case is ignored.
pub fn did_you_mean<'a>(
    typed: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let typed = typed.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&typed, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Parses JSON, and on error says where (`renditions[0].resize.width: ...`), names Rust's
/// types in words (`expected u32` is `expected a whole number`) and suggests the field meant
/// for an unknown one.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.to_string();
        for (rust, words) in [
            ("expected u8", "expected a whole number 0-255"),
            ("expected u16", "expected a whole number 0-65535"),
            ("expected u32", "expected a whole number 0-4294967295"),
            ("expected u64", "expected a whole number"),
            ("expected usize", "expected a whole number"),
            ("expected f32", "expected a number"),
            ("expected f64", "expected a number"),
        ] {
            message = message.replace(rust, words);
        }
        let mut path = path;
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((field, rest)) = rest.split_once('`')
            && let Some(expected) = rest.strip_prefix(", expected ")
        {
            let (list, end) = match expected.find(" at line") {
                Some(i) => expected.split_at(i),
                None => (expected, ""),
            };
            // serde lists them as `a`, `a` or `b`, or one of `a`, `b`, ...: the quoted words.
            let known: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(field, known.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            // The path ends with the unknown field; the message names it already.
            if let Some(parent) = path.strip_suffix(field) {
                path = parent.trim_end_matches('.').to_string();
            }
            message = format!(
                "unknown field `{field}` ({hint}known: {}){end}",
                known.join(", ")
            );
        }
        if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_not() {
        let presets = ["archive", "social", "thumbnail", "web"];
        assert_eq!(did_you_mean("webb", presets), Some("web"));
        assert_eq!(did_you_mean("Thumbnails", presets), Some("thumbnail"));
        assert_eq!(did_you_mean("archiv", presets), Some("archive"));
        assert_eq!(did_you_mean("banana", presets), None);
    }

    #[test]
    fn json_errors_name_the_field_and_the_type_in_words() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Size {
            width: u32,
            format: Option<String>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            sizes: Vec<Size>,
        }
        let e = from_json::<Doc>(r#"{"sizes": [{"width": 1}, {"width": "800"}]}"#).unwrap_err();
        assert!(
            e.starts_with("sizes[1].width: invalid type: string \"800\", expected a whole number"),
            "{e}"
        );
        let e = from_json::<Doc>(r#"{"sizes": [{"width": 1, "formatt": "png"}]}"#).unwrap_err();
        assert!(
            e.starts_with(
                "sizes[0]: unknown field `formatt` (did you mean `format`? known: width, format)"
            ),
            "{e}"
        );
    }
}
