//! Choice rules: `Variable` comparisons and their `And`/`Or`/`Not` combinations, parsed
//! strictly (an operator the runner does not implement is a definition error) and evaluated
//! as Step Functions does.

use serde::Deserialize;
use serde_json::Value;

use super::{Path, TaskFailure};

#[derive(Debug, Deserialize)]
#[serde(try_from = "Value")]
pub(super) struct Rule {
    pub(super) cond: Cond,
    pub(super) next: String,
}

#[derive(Debug)]
pub(super) enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Test(Path, Test),
}

#[derive(Debug)]
pub(super) enum Test {
    IsPresent(bool),
    IsNull(bool),
    BooleanEquals(bool),
    StringEquals(String),
    StringMatches(Wildcard),
    NumericEquals(f64),
}

impl TryFrom<Value> for Rule {
    type Error = String;

    fn try_from(v: Value) -> Result<Rule, String> {
        let (cond, next) = Cond::parse(&v, true)?;
        let next = next.ok_or_else(|| format!("choice rule {v} has no Next"))?;
        Ok(Rule { cond, next })
    }
}

impl Cond {
    fn parse(v: &Value, top: bool) -> Result<(Cond, Option<String>), String> {
        let Value::Object(m) = v else {
            return Err(format!("a choice rule must be an object, not {v}"));
        };
        let text = |val: &Value| val.as_str().map(str::to_string);
        let flag = |k: &str, val: &Value| val.as_bool().ok_or(format!("{k} needs a boolean"));
        let (mut variable, mut next, mut conds, mut tests) = (None, None, vec![], vec![]);
        for (k, val) in m {
            match k.as_str() {
                "Comment" => {}
                "Next" if top => next = Some(text(val).ok_or("Next needs a string")?),
                "Variable" => {
                    let p = text(val).ok_or("Variable needs a string")?;
                    variable = Some(Path::try_from(p)?);
                }
                "And" | "Or" => {
                    let list = val.as_array().ok_or(format!("{k} needs an array"))?;
                    let inner = list.iter().map(|c| Cond::parse(c, false).map(|(c, _)| c));
                    let inner = inner.collect::<Result<Vec<_>, _>>()?;
                    conds.push(if k == "And" {
                        Cond::And(inner)
                    } else {
                        Cond::Or(inner)
                    });
                }
                "Not" => conds.push(Cond::Not(Box::new(Cond::parse(val, false)?.0))),
                "IsPresent" => tests.push(Test::IsPresent(flag(k, val)?)),
                "IsNull" => tests.push(Test::IsNull(flag(k, val)?)),
                "BooleanEquals" => tests.push(Test::BooleanEquals(flag(k, val)?)),
                "StringEquals" => tests.push(Test::StringEquals(
                    text(val).ok_or("StringEquals needs a string")?,
                )),
                "StringMatches" => tests.push(Test::StringMatches(Wildcard::parse(
                    val.as_str().ok_or("StringMatches needs a string")?,
                )?)),
                "NumericEquals" => tests.push(Test::NumericEquals(
                    val.as_f64().ok_or("NumericEquals needs a number")?,
                )),
                _ => return Err(format!("unsupported choice rule field {k:?}")),
            }
        }
        let cond = match (conds.pop(), tests.pop(), variable) {
            (Some(c), None, None) if conds.is_empty() => c,
            (None, Some(t), Some(p)) if tests.is_empty() => Cond::Test(p, t),
            _ => {
                return Err(format!(
                    "choice rule {v} needs one comparison with a Variable, or one And/Or/Not"
                ));
            }
        };
        Ok((cond, next))
    }

    pub(super) fn eval(&self, input: &Value, ctx: &Value) -> Result<bool, TaskFailure> {
        Ok(match self {
            Cond::And(cs) => {
                for c in cs {
                    if !c.eval(input, ctx)? {
                        return Ok(false);
                    }
                }
                true
            }
            Cond::Or(cs) => {
                for c in cs {
                    if c.eval(input, ctx)? {
                        return Ok(true);
                    }
                }
                false
            }
            Cond::Not(c) => !c.eval(input, ctx)?,
            Cond::Test(path, test) => {
                // Step Functions fails a comparison on a missing Variable rather than calling it
                // false; IsPresent is the way to ask.
                let v = match (test, path.get(input, ctx)) {
                    (Test::IsPresent(want), found) => return Ok(found.is_some() == *want),
                    (_, Some(v)) => v,
                    (_, None) => return Err(path.missing(input, ctx)),
                };
                match test {
                    Test::IsPresent(want) => *want,
                    Test::IsNull(want) => v.is_null() == *want,
                    Test::BooleanEquals(b) => v.as_bool() == Some(*b),
                    Test::StringEquals(s) => v.as_str() == Some(s.as_str()),
                    Test::StringMatches(w) => v.as_str().is_some_and(|s| w.matches(s)),
                    Test::NumericEquals(n) => v.as_f64() == Some(*n),
                }
            }
        })
    }
}

/// A `StringMatches` pattern: `*` stands for any run of characters (none included); `\\*` is
/// a literal asterisk and `\\\\` a literal backslash, the only escapes Step Functions knows.
#[derive(Debug)]
pub(super) struct Wildcard {
    /// The literal text between the stars: one more part than there are stars.
    parts: Vec<String>,
}

impl Wildcard {
    fn parse(pattern: &str) -> Result<Wildcard, String> {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => parts.push(std::mem::take(&mut current)),
                '\\' => match chars.next() {
                    Some(e @ ('*' | '\\')) => current.push(e),
                    _ => {
                        return Err(format!(
                            "StringMatches {pattern:?}: a backslash may only escape * or \\"
                        ));
                    }
                },
                c => current.push(c),
            }
        }
        parts.push(current);
        Ok(Wildcard { parts })
    }

    fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(x) => x,
            None => return s.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return s == first;
        };
        if s.len() < first.len() + last.len() || !s.starts_with(first.as_str()) {
            return false;
        }
        if !s.ends_with(last.as_str()) {
            return false;
        }
        // Between the fixed ends, each middle part at its leftmost place after the one before:
        // if any placement works, the leftmost one does.
        let mut between = &s[first.len()..s.len() - last.len()];
        for part in middle {
            match between.find(part.as_str()) {
                Some(i) => between = &between[i + part.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Wildcard;

    #[test]
    fn string_matches_patterns_behave_as_step_functions_documents() {
        let m = |p: &str, s: &str| Wildcard::parse(p).unwrap().matches(s);
        assert!(m("*/", "uploads/folder/"));
        assert!(!m("*/", "uploads/folder/a.jpg"));
        assert!(m("log-*.txt", "log-2024.txt"));
        assert!(m("log-*.txt", "log-.txt"));
        assert!(!m("log-*.txt", "log.txt"));
        assert!(m("a*b*c", "a-b-b-c"));
        assert!(!m("a*b*c", "a-c-b"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exact!"));
        assert!(m("*", ""));
        assert!(m("**", "anything"));
        // Overlapping ends: "ab*ba" needs four characters at least.
        assert!(!m("ab*ba", "aba"));
        assert!(m("ab*ba", "abba"));
        assert!(m("100\\*", "100*"));
        assert!(!m("100\\*", "1000"));
        assert!(m("a\\\\b", "a\\b"));
        assert!(m("é*ü", "éaü"));
        assert!(Wildcard::parse("bad\\q").is_err());
        assert!(Wildcard::parse("trailing\\").is_err());
    }
}
