//! Hugging Face model names (`"naver/splade-cocondenser-ensembledistil"`, `"org/name@revision"`)
//! resolved through the local Hugging Face cache, laid out as `huggingface_hub` writes it:
//! `$HF_HUB_CACHE/models--org--name/{refs/<revision>, snapshots/<commit>/...}`.
//!
//! A name not in the cache is downloaded into it ([`download`]) unless `HF_HUB_OFFLINE=1`; a
//! cached name is used without asking the Hub again (pin `@<commit>` for a fixed model). The
//! resolved snapshot directory is an ordinary input, hashed by content, so a stage's fingerprint
//! follows the model's files, not its name.

pub mod download;

use std::io::Write;
use std::path::{Path, PathBuf};

/// A model named by its Hub repository and an optional revision (branch, tag or commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubName {
    /// `org/name`.
    pub repo: String,
    /// The revision asked for; `main` when none was.
    pub revision: String,
}

impl HubName {
    /// `org/name` or `org/name@revision`; `None` for anything else (paths with more parts,
    /// absolute or `./` paths, characters the Hub does not allow).
    pub fn parse(text: &str) -> Option<Self> {
        let (repo, revision) = match text.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return None,
            None => (text, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (valid(org) && valid(name)).then(|| HubName {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// `<cache>/models--org--name`.
    pub fn repo_dir(&self, cache: &Path) -> PathBuf {
        cache.join(format!("models--{}", self.repo.replace('/', "--")))
    }

    /// The snapshot directory of this revision in `cache`: `refs/<revision>` names the commit,
    /// or the revision is a commit with a snapshot of its own.
    pub fn snapshot(&self, cache: &Path) -> Option<PathBuf> {
        let dir = self.repo_dir(cache);
        let commit = std::fs::read_to_string(dir.join("refs").join(&self.revision))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| self.revision.clone());
        let snapshot = dir.join("snapshots").join(commit);
        snapshot.join("config.json").is_file().then_some(snapshot)
    }
}

/// The Hugging Face hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (as `huggingface_hub` decides it).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// A model param's directory: the path itself when it exists, else the cached snapshot of the
/// Hub model it names. The error says every place it looked.
pub fn resolve_model(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path.exists() {
        return Ok(path);
    }
    let Some(name) = HubName::parse(text) else {
        return Err(format!(
            "model directory `{text}` not found (relative paths are resolved from the current directory)"
        ));
    };
    let cache = cache_dir();
    if let Some(snapshot) = name.snapshot(&cache) {
        return Ok(snapshot);
    }
    let not_found = format!(
        "model `{text}` is neither a directory (looked for ./{text}) nor in the Hugging Face \
         cache (looked for {}/snapshots/ at revision `{}`; the cache is HF_HUB_CACHE, HF_HOME/hub \
         or ~/.cache/huggingface/hub)",
        name.repo_dir(&cache).display(),
        name.revision,
    );
    if offline() {
        return Err(format!(
            "{not_found}, and HF_HUB_OFFLINE is set, so it was not downloaded"
        ));
    }
    let _ = writeln!(
        std::io::stderr(),
        "downloading {}@{} from {} into {}",
        name.repo,
        name.revision,
        download::endpoint(),
        cache.display()
    );
    download::fetch(&name, &cache)
        .map_err(|e| format!("{not_found}, and downloading it failed: {e}"))
}

/// Whether `HF_HUB_OFFLINE` forbids downloads (`1`, `true`, `yes`, `on`, as huggingface_hub).
fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_paths_do_not() {
        let n = HubName::parse("naver/splade-v3@v1.0").unwrap();
        assert_eq!(
            (n.repo.as_str(), n.revision.as_str()),
            ("naver/splade-v3", "v1.0")
        );
        assert_eq!(
            HubName::parse("naver/splade_v2.distil").unwrap().revision,
            "main"
        );
        for not_a_name in [
            "conf/models/splade-tiny",
            "/abs/x",
            "./a/b",
            "a/",
            "x@",
            "a b/c",
            "../a",
        ] {
            assert_eq!(HubName::parse(not_a_name), None, "{not_a_name}");
        }
    }

    #[test]
    fn snapshots_resolve_through_refs_or_commit() {
        let cache = tempfile::tempdir().unwrap();
        let name = HubName::parse("org/model").unwrap();
        let snap = name.repo_dir(cache.path()).join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        assert_eq!(name.snapshot(cache.path()), None, "no refs/main yet");
        std::fs::create_dir_all(name.repo_dir(cache.path()).join("refs")).unwrap();
        std::fs::write(name.repo_dir(cache.path()).join("refs/main"), "abc123\n").unwrap();
        assert_eq!(name.snapshot(cache.path()), Some(snap.clone()));
        let pinned = HubName::parse("org/model@abc123").unwrap();
        assert_eq!(pinned.snapshot(cache.path()), Some(snap));
    }
}
