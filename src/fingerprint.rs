//! Fingerprints: blake3 over a stage's kind, kind version, canonical params and input digests;
//! content digests of files and directories.

use std::fmt;
use std::path::Path;

use serde_json::Value;

/// The identity of an artifact: 128 bits of blake3, as 32 hex chars.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// The first 12 hex chars, for tables.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// JSON with object keys sorted at every level, so equal values always hash equal.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}

/// The fingerprint of a stage run: kind, version and params where every input param has been
/// replaced by the digest of its content.
pub fn stage_fingerprint(kind: &str, version: u32, params_with_digests: &Value) -> Fingerprint {
    let doc = serde_json::json!({
        "kind": kind,
        "version": version,
        "params": params_with_digests,
    });
    let hash = blake3::hash(canonical_json(&doc).as_bytes());
    Fingerprint(hash.to_hex()[..32].to_string())
}

/// blake3 of a file's bytes, read in 16 MiB chunks each hashed on all threads. Not memory-mapped:
/// a mapped multi-GB collection would count in the process's resident memory and make
/// `memory_budget` builds look far bigger than they are.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 16 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update_rayon(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// A digest over `(relative path, content hash)` pairs in sorted order: the content identity of
/// a directory or of an output made of several files.
pub fn combine(entries: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = entries.iter().collect();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    for (p, d) in sorted {
        h.update(p.as_bytes());
        h.update(&[0]);
        h.update(d.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex().to_string()
}

/// Every regular file under `dir`, as paths relative to it, sorted.
pub fn walk_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let p = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_file() || (ft.is_symlink() && p.is_file()) {
                if let Ok(rel) = p.strip_prefix(dir) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let a = stage_fingerprint("k", 1, &json!({"a": 1, "b": [1, 2]}));
        let b = stage_fingerprint("k", 1, &json!({"b": [1, 2], "a": 1}));
        assert_eq!(a, b);
        assert_ne!(a, stage_fingerprint("k", 2, &json!({"a": 1, "b": [1, 2]})));
        assert_ne!(a, stage_fingerprint("k", 1, &json!({"a": 1, "b": [2, 1]})));
    }
}
