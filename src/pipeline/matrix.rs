//! `[matrix]`: named axes whose values expand template stages (`[stage."encode_{dataset}"]`) into
//! ordinary stages before validation, so the DAG, fingerprints, `plan`, `--until`, `--set` and
//! error messages see only plain stages.
//!
//! Grammar (see docs/pipelines.md):
//! - an axis is an array of strings (`dataset = ["arguana", "fiqa"]`), a table of label → scalar
//!   (`model = { tiny = "conf/models/splade-tiny", ft = "train.model" }`) or a table of label →
//!   table of fields (`dataset = { arguana = { self_matches = true } }`);
//! - `{axis}` is the entry's label, `{axis.value}` its value (the string itself for arrays),
//!   `{axis.FIELD}` a field of a table entry; a string that is exactly one placeholder takes the
//!   value's type (`remove_self_matches = "{dataset.self_matches}"` is a boolean);
//! - a stage whose name holds placeholders has one instance per combination of the axes its name
//!   names (first axis outermost); an array element holding placeholders of axes the stage name
//!   does not bind is repeated for each combination of those axes (fan-in: one `report` reading
//!   every `evaluate_{dataset}`);
//! - when several tables expand to the same stage, the more specific one (fewer placeholders in
//!   its name, a plain table most of all) wins key by key: `[stage."evaluate_arguana_{model}"]`
//!   overrides `[stage."evaluate_{dataset}_{model}"]` for arguana only. Such an override that
//!   matches no instance (its dataset was dropped from the matrix) is ignored.

use indexmap::IndexMap;
use serde_json::Value;
use splade_stages::params::did_you_mean;

use super::{err, validate_stage_name, Located, Origin, PipelineError, RawStage};

/// One axis of the matrix: its name and its entries, in declaration order.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    name: String,
    entries: Vec<Entry>,
}

/// One value of an axis: the label used in stage names, and its fields (`value` at least).
#[derive(Debug, Clone)]
struct Entry {
    label: String,
    fields: serde_json::Map<String, Value>,
}

/// Reads the `[matrix]` table into axes, checking names, labels and shapes.
pub(super) fn parse_axes(matrix: &IndexMap<String, Located>) -> Result<Vec<Axis>, PipelineError> {
    matrix
        .iter()
        .map(|(name, loc)| parse_axis(name, loc))
        .collect()
}

fn parse_axis(name: &str, loc: &Located) -> Result<Axis, PipelineError> {
    let key = format!("matrix.{name}");
    if !is_identifier(name) {
        return Err(err(
            &loc.origin,
            &key,
            "axis names use letters, digits and `_`, starting with a letter",
        ));
    }
    let entries = match &loc.value {
        Value::Array(items) => array_entries(items, &loc.origin, &key)?,
        Value::Object(map) => table_entries(map, &loc.origin, &key)?,
        _ => {
            return Err(err(
                &loc.origin,
                &key,
                "expected an array of strings or a table of label = value",
            ))
        }
    };
    if entries.is_empty() {
        return Err(err(&loc.origin, &key, "an axis needs at least one value"));
    }
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        if !seen.insert(e.label.as_str()) {
            return Err(err(
                &loc.origin,
                &key,
                format!(
                    "two values have the label `{}`: give them labels with a table \
                     (`{name} = {{ a = \"...\", b = \"...\" }}`)",
                    e.label
                ),
            ));
        }
    }
    Ok(Axis {
        name: name.to_string(),
        entries,
    })
}

/// Array form: each string is the value; its label is the string when it is a valid name part,
/// else its last path component with other characters replaced by `_`.
fn array_entries(items: &[Value], origin: &Origin, key: &str) -> Result<Vec<Entry>, PipelineError> {
    items
        .iter()
        .map(|item| {
            let Some(s) = item.as_str() else {
                return Err(err(origin, key, "array values must be strings"));
            };
            let label = derived_label(s);
            if label.is_empty() {
                return Err(err(
                    origin,
                    key,
                    format!("cannot derive a label from `{s}`: use a table of label = value"),
                ));
            }
            let mut fields = serde_json::Map::new();
            fields.insert("value".into(), Value::String(s.to_string()));
            Ok(Entry { label, fields })
        })
        .collect()
}

fn table_entries(
    map: &serde_json::Map<String, Value>,
    origin: &Origin,
    key: &str,
) -> Result<Vec<Entry>, PipelineError> {
    map.iter()
        .map(|(label, v)| {
            if !is_label(label) {
                return Err(err(
                    origin,
                    format!("{key}.{label}"),
                    "labels use letters, digits, `_` and `-` only (they become part of stage names)",
                ));
            }
            let fields = match v {
                Value::Object(fields) => fields.clone(),
                scalar => {
                    let mut fields = serde_json::Map::new();
                    fields.insert("value".into(), scalar.clone());
                    fields
                }
            };
            Ok(Entry {
                label: label.clone(),
                fields,
            })
        })
        .collect()
}

fn derived_label(s: &str) -> String {
    if is_label(s) {
        return s.to_string();
    }
    let last = s.trim_end_matches('/').rsplit('/').next().unwrap_or(s);
    let mut out = String::new();
    for c in last.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out.trim_matches('_').to_string()
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_identifier(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A `{axis}` or `{axis.field}` placeholder found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placeholder {
    start: usize,
    end: usize,
    axis: String,
    field: Option<String>,
}

/// The placeholders in `s`, in order. Braces around anything else are left as they are.
fn placeholders(s: &str) -> Vec<Placeholder> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(open) = s[rest..].find('{').map(|i| rest + i) {
        let Some(close) = s[open..].find('}').map(|i| open + i) else {
            break;
        };
        let inner = &s[open + 1..close];
        let (axis, field) = match inner.split_once('.') {
            Some((a, f)) => (a, Some(f)),
            None => (inner, None),
        };
        if is_identifier(axis) && field.is_none_or(is_identifier) {
            out.push(Placeholder {
                start: open,
                end: close + 1,
                axis: axis.to_string(),
                field: field.map(str::to_string),
            });
            rest = close + 1;
        } else {
            rest = open + 1;
        }
    }
    out
}

/// Which entry of each axis is bound, by axis index.
type Bindings = Vec<Option<usize>>;

/// Expands template stages over the matrix, merging same-named results by specificity.
pub(super) fn expand(
    axes: &[Axis],
    stages: IndexMap<String, RawStage>,
) -> Result<IndexMap<String, RawStage>, PipelineError> {
    let templates: Vec<String> = stages
        .keys()
        .filter(|n| !placeholders(n).is_empty())
        .cloned()
        .collect();
    let mut groups: IndexMap<String, Vec<(usize, RawStage)>> = IndexMap::new();
    for (name, stage) in stages {
        for (instance_name, axes_in_name, instance) in expand_stage(axes, &name, stage)? {
            groups
                .entry(instance_name)
                .or_default()
                .push((axes_in_name, instance));
        }
    }
    let mut out = IndexMap::new();
    for (name, group) in groups {
        let overrides_a_template = templates.iter().any(|t| matches_template(&name, t));
        if let Some(stage) = merge_group(&name, group, overrides_a_template)? {
            out.insert(name, stage);
        }
    }
    Ok(out)
}

/// The instances of one `[stage.NAME]` table: (instance name, axes in its name, stage).
fn expand_stage(
    axes: &[Axis],
    name: &str,
    stage: RawStage,
) -> Result<Vec<(String, usize, RawStage)>, PipelineError> {
    let header = stage.header.clone().unwrap_or_else(|| Origin {
        file: "--set".into(),
        line: 0,
    });
    let name_axes = name_axes(axes, name, &header)?;
    let mut out = Vec::new();
    for bindings in combinations(axes, &name_axes, vec![None; axes.len()]) {
        let instance_name = interpolate(axes, name, &bindings, &header, &format!("stage.{name}"))?;
        validate_stage_name(&instance_name, &header)?;
        let mut params = IndexMap::new();
        for (key, loc) in &stage.params {
            let full = format!("stage.{name}.{key}");
            let value = substitute(axes, &loc.value, &bindings, &loc.origin, &full)?;
            params.insert(
                key.clone(),
                Located {
                    value,
                    origin: loc.origin.clone(),
                },
            );
        }
        let instance_of = if name_axes.is_empty() {
            stage.instance_of.clone()
        } else {
            Some(describe_instance(axes, name, &bindings))
        };
        out.push((
            instance_name,
            name_axes.len(),
            RawStage {
                header: stage.header.clone(),
                params,
                instance_of,
            },
        ));
    }
    Ok(out)
}

/// The axes a stage name binds, in matrix order; placeholders there may not name fields.
fn name_axes(axes: &[Axis], name: &str, header: &Origin) -> Result<Vec<usize>, PipelineError> {
    let mut used = Vec::new();
    for p in placeholders(name) {
        let key = format!("stage.{name}");
        if p.field.is_some() {
            return Err(err(
                header,
                key,
                "stage names take labels only (`{axis}`), not fields",
            ));
        }
        let index = axis_index(axes, &p.axis, header, &key)?;
        if !used.contains(&index) {
            used.push(index);
        }
    }
    used.sort_unstable();
    Ok(used)
}

fn axis_index(
    axes: &[Axis],
    axis: &str,
    origin: &Origin,
    key: &str,
) -> Result<usize, PipelineError> {
    axes.iter().position(|a| a.name == axis).ok_or_else(|| {
        let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
        let declared = if names.is_empty() {
            "the pipeline has no [matrix]".to_string()
        } else {
            format!("matrix axes: {}", names.join(", "))
        };
        err(
            origin,
            key,
            format!(
                "`{{{axis}}}` names no matrix axis ({declared}){}",
                did_you_mean(axis, names.iter().copied())
            ),
        )
    })
}

/// Every binding of `which` axes (first axis outermost), extending `base`.
fn combinations(axes: &[Axis], which: &[usize], base: Bindings) -> Vec<Bindings> {
    let mut out = vec![base];
    for &a in which {
        out = out
            .into_iter()
            .flat_map(|b| {
                (0..axes[a].entries.len()).map(move |e| {
                    let mut b = b.clone();
                    b[a] = Some(e);
                    b
                })
            })
            .collect();
    }
    out
}

fn describe_instance(axes: &[Axis], template: &str, bindings: &Bindings) -> String {
    let bound: Vec<String> = bindings
        .iter()
        .enumerate()
        .filter_map(|(a, e)| e.map(|e| format!("{} = {}", axes[a].name, axes[a].entries[e].label)))
        .collect();
    format!("`{template}` with {}", bound.join(", "))
}

/// Substitutes placeholders in a param value. Array elements may use axes `bindings` leaves
/// free: each such element is repeated over their combinations.
fn substitute(
    axes: &[Axis],
    value: &Value,
    bindings: &Bindings,
    origin: &Origin,
    key: &str,
) -> Result<Value, PipelineError> {
    match value {
        Value::String(s) => substitute_str(axes, s, bindings, origin, key),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                let free = free_axes(axes, item, bindings, origin, key)?;
                for b in combinations(axes, &free, bindings.clone()) {
                    out.push(substitute(axes, item, &b, origin, key)?);
                }
            }
            Ok(Value::Array(out))
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), substitute(axes, v, bindings, origin, key)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// Axes named anywhere inside `value` that `bindings` leaves unbound, in matrix order.
fn free_axes(
    axes: &[Axis],
    value: &Value,
    bindings: &Bindings,
    origin: &Origin,
    key: &str,
) -> Result<Vec<usize>, PipelineError> {
    let mut free = Vec::new();
    let mut visit = |s: &str| -> Result<(), PipelineError> {
        for p in placeholders(s) {
            let a = axis_index(axes, &p.axis, origin, key)?;
            if bindings[a].is_none() && !free.contains(&a) {
                free.push(a);
            }
        }
        Ok(())
    };
    walk_strings(value, &mut visit)?;
    free.sort_unstable();
    Ok(free)
}

fn walk_strings(
    value: &Value,
    visit: &mut impl FnMut(&str) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    match value {
        Value::String(s) => visit(s),
        Value::Array(items) => items.iter().try_for_each(|i| walk_strings(i, visit)),
        Value::Object(map) => map.values().try_for_each(|v| walk_strings(v, visit)),
        _ => Ok(()),
    }
}

/// A string with its placeholders replaced; exactly one placeholder keeps the value's type.
fn substitute_str(
    axes: &[Axis],
    s: &str,
    bindings: &Bindings,
    origin: &Origin,
    key: &str,
) -> Result<Value, PipelineError> {
    let found = placeholders(s);
    if let [only] = found.as_slice() {
        if only.start == 0 && only.end == s.len() {
            return lookup(axes, only, bindings, origin, key);
        }
    }
    interpolate(axes, s, bindings, origin, key).map(Value::String)
}

fn interpolate(
    axes: &[Axis],
    s: &str,
    bindings: &Bindings,
    origin: &Origin,
    key: &str,
) -> Result<String, PipelineError> {
    let mut out = String::new();
    let mut last = 0;
    for p in placeholders(s) {
        out.push_str(&s[last..p.start]);
        match lookup(axes, &p, bindings, origin, key)? {
            Value::String(v) => out.push_str(&v),
            v @ (Value::Number(_) | Value::Bool(_)) => out.push_str(&v.to_string()),
            _ => {
                return Err(err(
                    origin,
                    key,
                    format!(
                        "`{}` is a table or array: it can only stand alone in a string",
                        &s[p.start..p.end]
                    ),
                ))
            }
        }
        last = p.end;
    }
    out.push_str(&s[last..]);
    Ok(out)
}

/// The value a placeholder stands for under `bindings`.
fn lookup(
    axes: &[Axis],
    p: &Placeholder,
    bindings: &Bindings,
    origin: &Origin,
    key: &str,
) -> Result<Value, PipelineError> {
    let a = axis_index(axes, &p.axis, origin, key)?;
    let Some(e) = bindings[a] else {
        return Err(err(
            origin,
            key,
            format!(
                "`{{{}}}` is not bound here: put it in the stage name (one stage per value) or \
                 inside an array element (one element per value)",
                p.axis
            ),
        ));
    };
    let entry = &axes[a].entries[e];
    let Some(field) = &p.field else {
        return Ok(Value::String(entry.label.clone()));
    };
    entry.fields.get(field).cloned().ok_or_else(|| {
        let fields: Vec<&str> = entry.fields.keys().map(String::as_str).collect();
        err(
            origin,
            key,
            format!(
                "matrix value `{}` of axis `{}` has no field `{field}` (fields: {}){}",
                entry.label,
                axes[a].name,
                fields.join(", "),
                did_you_mean(field, fields.iter().copied())
            ),
        )
    })
}

/// True when `name` is what `template` gives for some labels (`evaluate_arguana` of
/// `evaluate_{dataset}`): a placeholder matches one or more label characters.
fn matches_template(name: &str, template: &str) -> bool {
    fn rest(name: &str, template: &str) -> bool {
        let Some(p) = placeholders(template).into_iter().next() else {
            return name == template;
        };
        let Some(after_literal) = name.strip_prefix(&template[..p.start]) else {
            return false;
        };
        let tail = &template[p.end..];
        let label_len = after_literal
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after_literal.len());
        (1..=label_len).any(|n| rest(&after_literal[n..], tail))
    }
    rest(name, template)
}

/// Merges the tables that expanded to one stage name: least specific first, so more specific
/// tables win key by key. `None` when only kind-less overrides matched and they override a
/// template (nothing to override: their matrix value was dropped, e.g. by `--set matrix...`).
fn merge_group(
    name: &str,
    mut group: Vec<(usize, RawStage)>,
    overrides_a_template: bool,
) -> Result<Option<RawStage>, PipelineError> {
    group.sort_by_key(|(axes_in_name, _)| std::cmp::Reverse(*axes_in_name));
    for pair in group.windows(2) {
        if pair[0].0 == pair[1].0 && pair[0].0 > 0 {
            let origin = pair[1].1.header.clone().unwrap_or_else(|| Origin {
                file: String::new(),
                line: 0,
            });
            return Err(err(
                &origin,
                format!("stage.{name}"),
                format!(
                    "two templates with as many placeholders expand to stage `{name}` \
                     ({} and {}): make one of them more specific",
                    pair[0].1.instance_of.clone().unwrap_or_default(),
                    pair[1].1.instance_of.clone().unwrap_or_default()
                ),
            ));
        }
    }
    let declares_kind = group.iter().any(|(_, s)| s.params.contains_key("kind"));
    let all_templates = group.iter().all(|(n, _)| *n > 0);
    if !declares_kind && (all_templates || overrides_a_template) {
        return Ok(None);
    }
    let mut merged = RawStage::default();
    for (_, stage) in group {
        if stage.params.contains_key("kind") || merged.header.is_none() {
            merged.header = stage.header;
            merged.instance_of = stage.instance_of;
        }
        merged.params.extend(stage.params);
    }
    Ok(Some(merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders_and_skips_other_braces() {
        let p = placeholders("a_{dataset}_{model.value}_{not an axis}_{}");
        let names: Vec<_> = p
            .iter()
            .map(|p| (p.axis.as_str(), p.field.clone()))
            .collect();
        assert_eq!(
            names,
            vec![("dataset", None), ("model", Some("value".to_string()))]
        );
    }

    #[test]
    fn matches_names_a_template_gives() {
        assert!(matches_template(
            "evaluate_arguana_tiny",
            "evaluate_{dataset}_{model}"
        ));
        assert!(matches_template(
            "evaluate_a_b_c",
            "evaluate_{dataset}_{model}"
        ));
        assert!(!matches_template(
            "evaluate_arguana",
            "evaluate_{dataset}_{model}"
        ));
        assert!(!matches_template("evalute_x", "evaluate_{dataset}"));
        assert!(matches_template("x", "x"));
    }

    #[test]
    fn derives_labels_from_paths_and_references() {
        assert_eq!(derived_label("arguana"), "arguana");
        assert_eq!(derived_label("conf/models/splade-tiny"), "splade-tiny");
        assert_eq!(derived_label("train.model"), "train_model");
        assert_eq!(derived_label("naver/splade_v2_distil/"), "splade_v2_distil");
    }
}
