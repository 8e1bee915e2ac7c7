//! Declared stage parameters: names, types, defaults and docs.
//!
//! Each stage declares its params once, with [`stage_params!`](crate::stage_params): a typed struct
//! the stage reads, and the [`ParamSpec`] table the engine validates a pipeline's `[stage.NAME]`
//! table against before anything runs (unknown key → nearest suggestion, wrong type → expected vs
//! got, missing required → error), fills defaults from, and `splade kinds` documents.
//!
//! Defaults stay JSON literals (`"0"`, `"2e-5"`, `"null"`) because the canonical params, and the
//! rule that a param left at its default is not hashed, compare JSON values: a literal `0` and a
//! typed `0.0` would fingerprint differently.

use serde_json::Value;

/// The type a parameter value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `true` or `false`.
    Bool,
    /// A 64-bit signed integer.
    Int,
    /// Integers are accepted and stored as floats, so `1` and `1.0` fingerprint the same.
    Float,
    /// Any string.
    Str,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// An array of integers.
    IntList,
    /// An array of strings.
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
    /// An array of tables of strings, each holding a reference `"<stage>.<output>"` in the named
    /// field and labels in the others (`{ dataset = "fiqa", system = "bm25", per_query = "..." }`);
    /// each reference is a DAG edge, keyed `<param>.<index>`.
    ArtifactRecords(&'static str),
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
            ParamType::ArtifactRecords(field) => format!(
                "an array of tables of strings, each with a reference \"<stage>.<output>\" in \
                 `{field}`"
            ),
        }
    }

    /// True for the types whose values are inputs (files or artifact references).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            ParamType::File
                | ParamType::FileMap
                | ParamType::Artifact
                | ParamType::FileOrArtifact
                | ParamType::ArtifactRecords(_)
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
            ParamType::ArtifactRecords(field) => {
                let items = value.as_array().ok_or_else(got)?;
                for (i, item) in items.iter().enumerate() {
                    let record = item
                        .as_object()
                        .filter(|m| m.values().all(Value::is_string))
                        .ok_or_else(|| format!("item {i}: expected a table of strings"))?;
                    if !record.contains_key(*field) {
                        return Err(format!(
                            "item {i}: missing `{field}` (a reference \"<stage>.<output>\")"
                        ));
                    }
                }
                Ok(value.clone())
            }
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
    /// The key in `[stage.NAME]`.
    pub name: &'static str,
    /// What values it takes.
    pub ty: ParamType,
    /// Default as JSON text (`"[10, 100]"`, `"null"` for optional-without-default); `None` = required.
    pub default: Option<&'static str>,
    /// One line for `splade kinds` and error messages.
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

/// A stage's typed params, declared with [`stage_params!`](crate::stage_params).
pub trait StageParams: serde::de::DeserializeOwned + serde::Serialize + Sized {
    /// The table the engine validates, defaults and documents params from.
    const SPECS: &'static [ParamSpec];

    /// Params from a partial table: missing keys take their defaults (for in-process runs such as
    /// benchmarks). A missing required key or a wrong type is an error naming the key.
    fn with_defaults(partial: &Value) -> Result<Self, ParamError> {
        let mut map = partial.as_object().cloned().unwrap_or_default();
        for spec in Self::SPECS {
            if !map.contains_key(spec.name) {
                let value = spec
                    .default_value()
                    .ok_or_else(|| ParamError::new(spec.name, "missing required param"))?;
                map.insert(spec.name.to_string(), value);
            }
        }
        Self::from_canonical(&Value::Object(map))
    }

    /// Params from the engine's canonical table (validated, defaults filled).
    fn from_canonical(params: &Value) -> Result<Self, ParamError> {
        serde_json::from_value(params.clone()).map_err(|e| {
            let key = Self::SPECS
                .iter()
                .map(|s| s.name)
                .find(|k| e.to_string().contains(&format!("`{k}`")))
                .or_else(|| Self::rejected_key(params))
                .unwrap_or("params");
            let message = e
                .to_string()
                .replace("expected u64", "expected an integer >= 0")
                .replace("expected usize", "expected an integer >= 0")
                .replace(
                    "expected i32",
                    "expected an integer from -2147483648 to 2147483647",
                );
            ParamError::new(key, message)
        })
    }

    /// The param whose value the typed struct rejects although its JSON type is right (an integer
    /// out of the field's range, e.g. a negative `u64` seed): the first whose value, put back to
    /// its default, lets the table deserialize.
    fn rejected_key(params: &Value) -> Option<&'static str> {
        let map = params.as_object()?;
        Self::SPECS
            .iter()
            .find(|spec| {
                let Some(default) = spec.default_value() else {
                    return false;
                };
                if map.get(spec.name) == Some(&default) {
                    return false;
                }
                let mut fixed = map.clone();
                fixed.insert(spec.name.to_string(), default);
                serde_json::from_value::<Self>(Value::Object(fixed)).is_ok()
            })
            .map(|spec| spec.name)
    }
}

/// Params that are individually valid but cannot work (together): the key to blame and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("param `{key}`: {message}")]
pub struct ParamError {
    /// The param the message is about (reported as `stage.NAME.<key>`).
    pub key: String,
    /// What is wrong, for the user.
    pub message: String,
}

impl ParamError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// An integer param that must be ≥ 1, as `usize`.
pub fn positive(key: &str, v: i64) -> Result<usize, ParamError> {
    usize::try_from(v)
        .ok()
        .filter(|x| *x > 0)
        .ok_or_else(|| ParamError::new(key, format!("must be a positive integer, got {v}")))
}

/// An error unless integer param `key` is at most `max` (a bound beyond which the value cannot
/// work: it would overflow or allocate without limit).
pub fn at_most(key: &str, v: i64, max: i64, what: &str) -> Result<(), ParamError> {
    if v > max {
        return Err(ParamError::new(
            key,
            format!("{v} is too large: at most {max} {what}"),
        ));
    }
    Ok(())
}

/// A fixed set of string values a param may take; implemented by [`param_choice!`](crate::param_choice).
pub trait ParamChoice: Copy {
    /// Every accepted spelling, in declaration order.
    const NAMES: &'static [&'static str];
    /// This value's spelling.
    fn as_str(self) -> &'static str;
}

/// Declares a serde enum for a choice param: `param_choice! { pub enum Sampling { Random = "random", ... } }`.
#[macro_export]
macro_rules! param_choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $crate::params::ParamChoice for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::params::ParamChoice::as_str(*self))
            }
        }
    };
}

/// Declares a stage's params once: a struct with a `pub` field per param (doc comments become the
/// `splade kinds` docs) and its [`StageParams::SPECS`] table.
///
/// Each field reads `/// doc` `name: RustType [ParamType] = "json default",`; leave out
/// `= "..."` for a required param. `[ParamType]` is a [`ParamType`] variant (`Int`, `Artifact`,
/// `Choice(Sampling::NAMES)`, ...).
#[macro_export]
macro_rules! stage_params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty [ $($pty:tt)+ ] $(= $default:literal)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl $crate::params::StageParams for $name {
            const SPECS: &'static [$crate::params::ParamSpec] = &[
                $( $crate::params::ParamSpec {
                    name: stringify!($field),
                    ty: {
                        // Not every table names a choice or every type.
                        #[allow(unused_imports)]
                        use $crate::params::{ParamChoice as _, ParamType::*};
                        $($pty)+
                    },
                    default: $crate::stage_params!(@default $($default)?),
                    doc: $crate::params::trim_doc(concat!($($doc),*)),
                }, )*
            ];
        }
    };
    (@default) => { None };
    (@default $d:literal) => { Some($d) };
}

/// A doc comment's text without the space `///` leaves in front (const, for [`stage_params!`]).
pub const fn trim_doc(doc: &'static str) -> &'static str {
    doc.trim_ascii()
}

/// `"; did you mean `x`?"` when a candidate is close to `word`, else `""`.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
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
