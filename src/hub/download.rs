//! Fetching a model from the Hugging Face Hub into the local cache, laid out as
//! `huggingface_hub` writes it, so the Python tools and splade share one cache:
//! `models--org--name/blobs/<etag>`, `snapshots/<commit>/<file>` (a relative symlink to the
//! blob) and `refs/<revision>` (the commit).
//!
//! Only what a SPLADE model needs is fetched: the config, the tokenizer files and one weights
//! file (`model.safetensors`, else `pytorch_model.bin`). `HF_ENDPOINT` names another Hub (a
//! mirror, or a test server) and `HF_TOKEN` authenticates. `config.json` is written last, and a
//! snapshot counts only once it is there, so an interrupted download is never used.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::HubName;

/// Files fetched when the repository has them (weights: the first one present).
const MODEL_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
];
const WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// The Hub's answer to `GET /api/models/{repo}/revision/{revision}`.
#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// The Hub's base URL: `HF_ENDPOINT`, else huggingface.co.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

/// Downloads `name` into `cache` and returns its snapshot directory.
pub fn fetch(name: &HubName, cache: &Path) -> Result<PathBuf, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
    runtime.block_on(fetch_async(name, cache))
}

async fn fetch_async(name: &HubName, cache: &Path) -> Result<PathBuf, String> {
    let client = reqwest::Client::new();
    let base = endpoint();
    let info_url = format!("{base}/api/models/{}/revision/{}", name.repo, name.revision);
    let info: RevisionInfo = serde_json::from_slice(
        &get(&client, &info_url)
            .await?
            .bytes()
            .await
            .map_err(|e| format!("{info_url}: {e}"))?,
    )
    .map_err(|e| format!("{info_url}: unexpected answer: {e}"))?;
    let present = |f: &str| info.siblings.iter().any(|s| s.rfilename == f);
    if !present("config.json") {
        return Err(format!(
            "{} at {} has no config.json: not a transformers model",
            name.repo, info.sha
        ));
    }
    let weights = WEIGHTS.iter().find(|w| present(w)).ok_or_else(|| {
        format!(
            "{} at {} has neither model.safetensors nor pytorch_model.bin",
            name.repo, info.sha
        )
    })?;
    let repo_dir = name.repo_dir(cache);
    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    let files = std::iter::once(*weights).chain(MODEL_FILES.iter().copied().filter(|f| present(f)));
    for file in files {
        let url = format!("{base}/{}/resolve/{}/{file}", name.repo, info.sha);
        let blob = download_blob(&client, &url, &repo_dir.join("blobs")).await?;
        link_into_snapshot(&blob, &snapshot.join(file))?;
    }
    if name.revision != info.sha {
        let refs = repo_dir.join("refs");
        std::fs::create_dir_all(&refs).map_err(|e| format!("{}: {e}", refs.display()))?;
        std::fs::write(refs.join(&name.revision), &info.sha)
            .map_err(|e| format!("{}: {e}", refs.display()))?;
    }
    Ok(snapshot)
}

/// A GET with `HF_TOKEN` as bearer token, failing on any status but success.
async fn get(client: &reqwest::Client, url: &str) -> Result<reqwest::Response, String> {
    let mut request = client.get(url);
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => " (a gated or private model: set HF_TOKEN)",
            404 => " (no such model or revision)",
            _ => "",
        };
        return Err(format!("{url}: HTTP {status}{hint}"));
    }
    Ok(response)
}

/// Streams `url` into `blobs/<etag>` (the Hub's ETag: the file's sha256 for LFS files), through
/// a temporary file; returns the blob's path.
async fn download_blob(
    client: &reqwest::Client,
    url: &str,
    blobs: &Path,
) -> Result<PathBuf, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(blobs).map_err(|e| io(blobs, e))?;
    let mut response = get(client, url).await?;
    let etag = ["x-linked-etag", "etag"]
        .iter()
        .find_map(|h| response.headers().get(*h)?.to_str().ok())
        .map(|t| t.trim_start_matches("W/").trim_matches('"').to_string())
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let tmp = blobs.join(format!(".incomplete-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    let mut hasher = blake3::Hasher::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        file.write_all(&chunk).map_err(|e| io(&tmp, e))?;
        hasher.update(&chunk);
    }
    file.sync_all().map_err(|e| io(&tmp, e))?;
    let name = etag.unwrap_or_else(|| hasher.finalize().to_hex().to_string());
    let blob = blobs.join(name);
    std::fs::rename(&tmp, &blob).map_err(|e| io(&blob, e))?;
    Ok(blob)
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>`, replacing an older link.
fn link_into_snapshot(blob: &Path, link: &Path) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let dir = link.parent().unwrap_or(link);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let target = PathBuf::from("../../blobs").join(blob.file_name().unwrap_or_default());
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).map_err(|e| io(link, e))?;
    }
    std::os::unix::fs::symlink(&target, link).map_err(|e| io(link, e))
}
