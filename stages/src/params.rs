//! Declared stage parameters: names, types, defaults and docs.
//!
//! The engine validates a pipeline's `[stage.NAME]` table against these specs before anything runs
//! (unknown key → nearest suggestion, wrong type → expected vs got, missing required → error), then
//! fills defaults to get the canonical params that enter the fingerprint.

use serde_json::Value;

/// The type a parameter value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Bool,
    Int,
    /// Integers are accepted and stored as floats, so `1` and `1.0` fingerprint the same.
    Float,
    Str,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    IntList,
    StrList,
    /// A path to a user file or directory; it is an input, hashed by content.
    File,
    /// A table of name → file path (e.g. `queries = { train = "...", dev = "..." }`); each is an input.
    FileMap,
    /// A reference `"<stage>.<output>"` to another stage's output; it is a DAG edge.
    Artifact,
    /// A model directory: a reference `"<stage>.<output>"` when it names a stage of the pipeline
    /// (a trained model), else a file path like [`ParamType::File`].
    FileOrArtifact,
    /// A table of name → number (e.g. loss weights `{ kl_div = 0.99, contrastive = 0.01 }`).
    FloatMap,
}

impl ParamType {
    /// Human description used in error messages.
    pub fn describe(&self) -> String {
        match self {
            ParamType::Bool => "a boolean".into(),
            ParamType::Int => "an integer".into(),
            ParamType::Float => "a number".into(),
            ParamType::Str => "a string".into(),
            ParamType::Choice(c) => format!("one of {}", c.join(" | ")),
            ParamType::IntList => "an array of integers".into(),
            ParamType::StrList => "an array of strings".into(),
            ParamType::File => "a file path (string)".into(),
            ParamType::FileMap => "a table of name = \"file path\"".into(),
            ParamType::Artifact => "a reference \"<stage>.<output>\"".into(),
            ParamType::FileOrArtifact => {
                "a directory path or a reference \"<stage>.<output>\" (string)".into()
            }
            ParamType::FloatMap => "a table of name = number".into(),
        }
    }

    /// True for the types whose values are inputs (files or artifact references).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            ParamType::File | ParamType::FileMap | ParamType::Artifact | ParamType::FileOrArtifact
        )
    }

    /// Checks `value` against this type and returns it in canonical form (ints as floats for
    /// `Float`), or a description of what was wrong.
    pub fn canonicalize(&self, value: &Value) -> Result<Value, String> {
        let got = || format!("expected {}, got {}", self.describe(), json_type(value));
        match self {
            ParamType::Bool => value.as_bool().map(Value::Bool).ok_or_else(got),
            ParamType::Int => value.as_i64().map(Value::from).ok_or_else(got),
            ParamType::Float => match value.as_f64() {
                Some(v) if v.is_finite() => Ok(Value::from(v)),
                Some(_) => Err("expected a finite number".into()),
                None => Err(got()),
            },
            ParamType::Str | ParamType::File | ParamType::Artifact | ParamType::FileOrArtifact => {
                value.as_str().map(Value::from).ok_or_else(got)
            }
            ParamType::Choice(choices) => match value.as_str() {
                Some(s) if choices.contains(&s) => Ok(Value::from(s)),
                Some(s) => Err(format!(
                    "`{s}` is not one of {}{}",
                    choices.join(" | "),
                    suggest(s, choices.iter().copied())
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default()
                )),
                None => Err(got()),
            },
            ParamType::IntList => match value.as_array() {
                Some(items) if items.iter().all(|v| v.as_i64().is_some()) => Ok(value.clone()),
                _ => Err(got()),
            },
            ParamType::StrList => match value.as_array() {
                Some(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
                _ => Err(got()),
            },
            ParamType::FileMap => match value.as_object() {
                Some(map) if map.values().all(Value::is_string) => Ok(value.clone()),
                _ => Err(got()),
            },
            ParamType::FloatMap => match value.as_object() {
                Some(map) => {
                    let mut out = serde_json::Map::new();
                    for (k, v) in map {
                        match v.as_f64() {
                            Some(x) if x.is_finite() => {
                                out.insert(k.clone(), Value::from(x));
                            }
                            _ => return Err(format!("`{k}`: expected a finite number")),
                        }
                    }
                    Ok(Value::Object(out))
                }
                None => Err(got()),
            },
        }
    }
}

/// One declared parameter of a stage kind.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// Default as JSON text (`"[10, 100]"`, `"null"` for optional-without-default); `None` = required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl ParamSpec {
    /// A required parameter.
    pub const fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default: None,
            doc,
        }
    }

    /// A parameter with a default (JSON text; `"null"` means optional and absent).
    pub const fn with_default(
        name: &'static str,
        ty: ParamType,
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        ParamSpec {
            name,
            ty,
            default: Some(default),
            doc,
        }
    }

    /// The default value, parsed. Panics only on a malformed literal in our own source.
    pub fn default_value(&self) -> Option<Value> {
        self.default.map(|d| {
            serde_json::from_str(d)
                .unwrap_or_else(|e| panic!("bad default literal for `{}`: {e}", self.name))
        })
    }
}

/// The JSON type name of a value, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn suggests_near_names_only() {
        let names = ["negatives", "sampling", "seed", "depth"];
        assert_eq!(
            suggest("negatvies", names.iter().copied()),
            Some("negatives")
        );
        assert_eq!(suggest("seeed", names.iter().copied()), Some("seed"));
        assert_eq!(suggest("completely_else", names.iter().copied()), None);
    }

    #[test]
    fn floats_accept_ints_and_canonicalize() {
        assert_eq!(
            ParamType::Float.canonicalize(&json!(1)).unwrap(),
            json!(1.0)
        );
        assert!(ParamType::Int.canonicalize(&json!(1.5)).is_err());
        assert!(ParamType::IntList.canonicalize(&json!([1, "a"])).is_err());
        let err = ParamType::Choice(&["random", "top"])
            .canonicalize(&json!("tpo"))
            .unwrap_err();
        assert!(err.contains("did you mean `top`"), "{err}");
    }
}
