//! The encode stage and `splade expand` through the real binary.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

use splade_stages::parquet_io::read_sparse;

const TOY: &str = "pipelines/toy-retrieval.toml";

fn vectors(
    a: &std::path::Path,
    pipeline: &str,
    target: &str,
) -> (Vec<String>, Vec<splade_stages::parquet_io::SparseVector>) {
    let p = PathBuf::from(ok(a, &["path", pipeline, target]).trim());
    read_sparse(&p).unwrap()
}

#[test]
fn toy_encodes_docs_and_queries_consistently_with_expand() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let out = ok(a, &["run", TOY]);
    assert_eq!(outcome_of(&out, "encode_docs"), "executed");
    let (ids, docs) = vectors(a, TOY, "encode_docs.vectors");
    assert_eq!(ids.len(), 300);
    assert_eq!(
        ids[0], "0",
        "input order is restored after length bucketing"
    );
    for v in &docs {
        assert!(!v.terms.is_empty());
        assert!(v.terms.windows(2).all(|w| w[0] < w[1]), "terms ascending");
        assert!(v.weights.iter().all(|w| *w > 0.0 && w.is_finite()));
    }
    let m: serde_json::Value = serde_json::from_str(&ok(
        a,
        &["inspect", TOY, "encode_docs.vectors", "--manifest"],
    ))
    .unwrap();
    assert_eq!(m["stats"]["shards"], 3);
    assert!(
        m["stats"]["nnz_mean"].as_f64().unwrap() > 10.0,
        "{}",
        m["stats"]
    );

    // Batched, bucketed encoding equals encoding each text alone (`splade expand --json`).
    let (qids, queries) = vectors(a, TOY, "encode_dev_queries.vectors");
    let texts: Vec<String> =
        std::fs::read_to_string(repo().join("pipelines/data/toy/queries.dev.tsv"))
            .unwrap()
            .lines()
            .take(5)
            .map(|l| l.split_once('\t').unwrap().1.to_string())
            .collect();
    let mut args = vec!["expand", "--json", "--max-length", "64"];
    args.extend(texts.iter().map(String::as_str));
    let lines = ok(a, &args);
    for (i, line) in lines.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let single: BTreeMap<u32, f32> = v["weights"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, w)| (k.parse().unwrap(), w.as_f64().unwrap() as f32))
            .collect();
        let idx = qids
            .iter()
            .position(|q| *q == format!("{}", 2000 + i))
            .unwrap();
        let batched: BTreeMap<u32, f32> = queries[idx]
            .terms
            .iter()
            .copied()
            .zip(queries[idx].weights.iter().copied())
            .collect();
        assert_eq!(
            single.keys().collect::<Vec<_>>(),
            batched.keys().collect::<Vec<_>>(),
            "{}",
            texts[i]
        );
        for (t, w) in &single {
            assert!((w - batched[t]).abs() < 1e-4, "{}: term {t}", texts[i]);
        }
    }
}

#[test]
fn pruning_and_bag_of_words_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let top5 = ["--set", "encode_dev_queries.top_k=5"];
    ok(
        a,
        &[
            "run",
            TOY,
            "--until",
            "encode_dev_queries",
            top5[0],
            top5[1],
        ],
    );
    let p = PathBuf::from(
        ok(
            a,
            &["path", TOY, "encode_dev_queries.vectors", top5[0], top5[1]],
        )
        .trim(),
    );
    let (_, q) = read_sparse(&p).unwrap();
    assert!(q.iter().all(|v| v.nnz() <= 5 && v.nnz() > 0));
    let set = ["--set", "encode_dev_queries.mode=\"bag_of_words\""];
    let mut args = vec!["run", TOY, "--until", "encode_dev_queries"];
    args.extend(set);
    ok(a, &args);
    let mut args = vec!["path", TOY, "encode_dev_queries.vectors"];
    args.extend(set);
    let p = PathBuf::from(ok(a, &args).trim());
    let (_, bow) = read_sparse(&p).unwrap();
    for v in &bow {
        assert!(v.weights.iter().all(|w| *w == 1.0));
        assert!(
            !v.terms.contains(&101) && !v.terms.contains(&102),
            "[CLS]/[SEP] excluded"
        );
    }
}

#[test]
fn expand_prints_expansion_terms() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(
        tmp.path(),
        &["expand", "--top", "5", "what is the capital of france?"],
    );
    assert!(
        out.contains("capital") && out.contains("france") && out.contains("(15 terms"),
        "{out}"
    );
    let json = ok(
        tmp.path(),
        &["expand", "--json", "what is the capital of france?"],
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["weights"].as_object().unwrap().len(), 15);
    assert!((v["weights"]["3007"].as_f64().unwrap() - 2.789453).abs() < 1e-4);
    let err = fails(tmp.path(), &["expand", "--model", "/no/such/model", "x"]);
    assert!(err.contains("/no/such/model"), "{err}");
    // The device is chosen like a pipeline's [backend]; CUDA needs libtorch.
    let err = fails(tmp.path(), &["expand", "--device", "cuda:0", "x"]);
    assert!(
        err.contains("--device") && err.contains("\"cpu\" only"),
        "{err}"
    );
    let cpu = ok(
        tmp.path(),
        &[
            "expand",
            "--backend",
            "flex",
            "--device",
            "cpu",
            "--json",
            "what is the capital of france?",
        ],
    );
    assert_eq!(cpu, json);
}

#[test]
fn killed_encode_resumes_per_shard_with_identical_output() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        "enc.toml",
        "name = \"enc\"\n\
         [stage.ingest]\nkind = \"ingest\"\ndocs = \"pipelines/data/toy/collection.tsv\"\n\
         [stage.encode]\nkind = \"encode\"\ninput = \"ingest.docs\"\nshard_size = 10\nbatch_size = 5\n",
    );
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", &pipeline]);

    let a = tmp.path().join("killed");
    let mut child = splade(&a)
        .args(["run", &pipeline, "--no-progress"])
        .spawn()
        .unwrap();
    let shards = || committed_shards(&a, "vectors");
    wait_for(|| shards() >= 3, "three committed encode shards");
    child.kill().unwrap();
    child.wait().unwrap();
    // A shard renamed into place just before the kill may not have its resume state saved yet.
    let committed = shards() as u64 - 1;
    let out = ok(&a, &["run", &pipeline]);
    assert_eq!(outcome_of(&out, "encode"), "resumed", "{out}");
    let m: serde_json::Value = serde_json::from_str(&ok(
        &a,
        &["inspect", &pipeline, "encode.vectors", "--manifest"],
    ))
    .unwrap();
    assert!(
        m["stats"]["resumed_from_shard"].as_u64().unwrap() >= committed,
        "{}",
        m["stats"]
    );
    assert_eq!(
        output_files(&a, &pipeline, "encode.vectors"),
        output_files(&reference, &pipeline, "encode.vectors"),
        "resumed artifact is byte-identical"
    );
}

#[test]
fn bf16_encoding_stays_close_to_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        "bf16.toml",
        "name = \"bf16\"\n\
         [stage.ingest]\nkind = \"ingest\"\ndocs = \"pipelines/data/toy/collection.tsv\"\n\
         [stage.full]\nkind = \"encode\"\ninput = \"ingest.docs\"\n\
         [stage.half]\nkind = \"encode\"\ninput = \"ingest.docs\"\nprecision = \"bf16\"\n",
    );
    let a = tmp.path().join("a");
    ok(&a, &["run", &pipeline]);
    let read = |stage: &str| {
        let path = ok(&a, &["path", &pipeline, &format!("{stage}.vectors")]);
        read_sparse(std::path::Path::new(path.trim())).unwrap()
    };
    let ((ids32, v32), (ids16, v16)) = (read("full"), read("half"));
    assert_eq!(ids32, ids16);
    // Per document: the weight differences relative to the largest weight, and how many of the
    // 10 strongest f32 terms are among the 10 strongest bf16 terms.
    let top = |v: &splade_stages::parquet_io::SparseVector| {
        let mut p: Vec<(u32, f32)> = v.terms.iter().copied().zip(v.weights.clone()).collect();
        p.sort_by(|x, y| y.1.total_cmp(&x.1));
        p.iter().take(10).map(|x| x.0).collect::<Vec<_>>()
    };
    let (mut worst_rel, mut shared, mut total, mut identical) = (0f32, 0usize, 0usize, true);
    for (x, y) in v32.iter().zip(&v16) {
        identical &= x == y;
        let dense = |v: &splade_stages::parquet_io::SparseVector| {
            let mut d = vec![0f32; 30522];
            for (t, w) in v.terms.iter().zip(&v.weights) {
                d[*t as usize] = *w;
            }
            d
        };
        let (dx, dy) = (dense(x), dense(y));
        let peak = x.weights.iter().fold(0f32, |m, w| m.max(*w));
        let diff = dx
            .iter()
            .zip(&dy)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        worst_rel = worst_rel.max(diff / peak);
        let (tx, ty) = (top(x), top(y));
        shared += tx.iter().filter(|t| ty.contains(t)).count();
        total += tx.len();
    }
    let share = shared as f64 / total as f64;
    eprintln!("bf16 vs f32: worst relative weight difference {worst_rel:.4}, top-10 terms shared {share:.4}");
    assert!(
        !identical,
        "bf16 vectors equal the f32 ones: bf16 did not run"
    );
    assert!(
        worst_rel < 0.1,
        "bf16 weights differ by {worst_rel} of the peak"
    );
    assert!(share > 0.9, "only {share} of the top-10 terms agree");
}

/// A Hugging Face cache laid out as `huggingface_hub` writes it (blobs, snapshot symlinks,
/// refs/main) holding splade-tiny as `org/splade-tiny`.
fn hub_cache(root: &std::path::Path) -> PathBuf {
    let repo = root.join("models--org--splade-tiny");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    // Every file of the bundled model (the hub keeps README.md and LICENSE too).
    for entry in std::fs::read_dir(repo_path("conf/models/splade-tiny")).unwrap() {
        let f = entry.unwrap().file_name();
        let blob = repo.join("blobs").join(&f);
        std::fs::copy(repo_path("conf/models/splade-tiny").join(&f), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snapshot.join(&f)).unwrap();
    }
    root.to_path_buf()
}

fn repo_path(rel: &str) -> PathBuf {
    repo().join(rel)
}

#[test]
fn hugging_face_names_resolve_through_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = hub_cache(&tmp.path().join("hub"));
    let pipeline = |model: &str| {
        write_pipeline(
            tmp.path(),
            &format!("p{}.toml", model.len()),
            &format!(
                "name = \"hub\"\n[stage.ingest]\nkind = \"ingest\"\n\
                 queries = {{ dev = \"pipelines/data/toy/queries.dev.tsv\" }}\n\
                 [stage.encode]\nkind = \"encode\"\ninput = \"ingest.dev_queries\"\n\
                 model = \"{model}\"\nmax_length = 16\n"
            ),
        )
    };
    let a = tmp.path().join("artifacts");
    let by_name = pipeline("org/splade-tiny");
    let run = |p: &str| {
        let out = splade(&a)
            .args(["run", p, "--json"])
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run(&by_name);
    assert!(
        first.contains("\"stage\":\"encode\",\"kind\":\"encode\",\"state\":\"executed\""),
        "{first}"
    );
    // The fingerprint follows the model's files, not its name: the same files by path are cached.
    let by_path = pipeline("conf/models/splade-tiny");
    let second = run(&by_path);
    assert!(
        second.contains("\"stage\":\"encode\",\"kind\":\"encode\",\"state\":\"cached\""),
        "{second}"
    );
    // A pinned revision that the cache lacks: the error says both places it looked.
    let missing = pipeline("org/splade-tiny@v9");
    let out = splade(&a)
        .args(["plan", &missing])
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("stage.encode.model")
            && err.contains("neither a directory")
            && err.contains("models--org--splade-tiny")
            && err.contains("`v9`")
            && err.contains("HF_HUB_OFFLINE is set"),
        "{err}"
    );
}

/// A stand-in for the Hub's HTTP API on 127.0.0.1 serving splade-tiny as `org/tiny` at commit
/// `COMMIT`: `/api/models/org/tiny/revision/main` and `/org/tiny/resolve/COMMIT/<file>` (with
/// an ETag), 404 for anything else. Records each request line and its Authorization header.
struct FakeHub {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

const COMMIT: &str = "5f2c0b6f0a6e8a3c1d2e4f5a6b7c8d9e0f1a2b3c";

impl FakeHub {
    fn start() -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut auth = String::new();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                    if header.to_ascii_lowercase().starts_with("authorization:") {
                        auth = header.trim().to_string();
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(format!("{path} {auth}"));
                let (status, etag, body) = FakeHub::answer(&path);
                let mut out = stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{etag}Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = out.write_all(&body);
            }
        });
        FakeHub { url, seen }
    }

    fn answer(path: &str) -> (&'static str, String, Vec<u8>) {
        let model = repo_path("conf/models/splade-tiny");
        if path == "/api/models/org/tiny/revision/main" {
            let siblings: Vec<String> = std::fs::read_dir(&model)
                .unwrap()
                .map(|e| {
                    format!(
                        "{{\"rfilename\":\"{}\"}}",
                        e.unwrap().file_name().to_string_lossy()
                    )
                })
                .collect();
            let body = format!(
                "{{\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
                siblings.join(",")
            );
            return ("200 OK", String::new(), body.into_bytes());
        }
        if let Some(file) = path.strip_prefix(&format!("/org/tiny/resolve/{COMMIT}/")) {
            if let Ok(bytes) = std::fs::read(model.join(file)) {
                let etag = format!("ETag: \"{}\"\r\n", &blake3::hash(&bytes).to_hex()[..40]);
                return ("200 OK", etag, bytes);
            }
        }
        ("404 Not Found", String::new(), b"not found".to_vec())
    }
}

/// A name missing from the cache is downloaded into it (the huggingface_hub layout), gives the
/// same vectors as the model's directory, and is then used offline from the cache.
#[test]
fn hugging_face_names_download_into_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = FakeHub::start();
    let cache = tmp.path().join("hub");
    let pipeline = |model: &str, name: &str| {
        write_pipeline(
            tmp.path(),
            name,
            &format!(
                "name = \"dl\"\n[stage.ingest]\nkind = \"ingest\"\n\
                 queries = {{ dev = \"pipelines/data/toy/queries.dev.tsv\" }}\n\
                 [stage.encode]\nkind = \"encode\"\ninput = \"ingest.dev_queries\"\n\
                 model = \"{model}\"\nmax_length = 16\n"
            ),
        )
    };
    let by_name = pipeline("org/tiny", "by_name.toml");
    let a = tmp.path().join("artifacts");
    let out = splade(&a)
        .args(["run", &by_name])
        .env("HF_HUB_CACHE", &cache)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_TOKEN", "hf_test_token")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("downloading org/tiny@main from http://127.0.0.1"),
        "{err}"
    );
    let repo = cache.join("models--org--tiny");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let snapshot = repo.join("snapshots").join(COMMIT);
    let link = std::fs::read_link(snapshot.join("model.safetensors")).unwrap();
    assert!(link.starts_with("../../blobs"), "{}", link.display());
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(snapshot.join(f)).unwrap(),
            std::fs::read(repo_path("conf/models/splade-tiny").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(
        !snapshot.join("README.md").exists(),
        "only the model's files are fetched"
    );
    let seen = hub.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|r| r.ends_with("Bearer hf_test_token")),
        "{seen:?}"
    );
    let vectors = |root: &std::path::Path, p: &str| {
        let out = splade(root)
            .args(["path", p, "encode.vectors"])
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        read_sparse(&dir).unwrap()
    };
    let downloaded = vectors(&a, &by_name);
    // The same model by path gives the same vectors.
    let by_path = pipeline("conf/models/splade-tiny", "by_path.toml");
    let b = tmp.path().join("by_path");
    ok(&b, &["run", &by_path]);
    assert_eq!(downloaded, vectors(&b, &by_path));

    // Offline, with the Hub gone: the cache serves the name, nothing is fetched again.
    let requests = seen.len();
    let offline = tmp.path().join("offline");
    let out = splade(&offline)
        .args(["run", &by_name])
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.seen.lock().unwrap().len(), requests);

    // A name the Hub does not know: the HTTP error, and both places looked.
    let unknown = pipeline("org/missing", "unknown.toml");
    let out = splade(&a)
        .args(["plan", &unknown])
        .env("HF_HUB_CACHE", &cache)
        .env("HF_ENDPOINT", &hub.url)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("neither a directory")
            && err.contains("HTTP 404")
            && err.contains("no such model"),
        "{err}"
    );
}

/// Spans of `SPLADE_DEVICE_TRACE` lines with `label`: `(device, start_ns, end_ns)`.
fn traced_spans(trace: &std::path::Path, label: &str) -> Vec<(u64, u128, u128)> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("trace line is JSON"))
        .filter(|v| v["label"] == label)
        .map(|v| {
            let n = |k: &str| v[k].as_u64().expect("integer field") as u128;
            (v["device"].as_u64().unwrap(), n("start_ns"), n("end_ns"))
        })
        .collect()
}

#[test]
fn shards_are_byte_identical_on_one_two_and_four_devices() {
    // Top-k pruning and a weight threshold on (selected on the device), small batches so that
    // every device gets work.
    let mut reference: Option<Vec<(String, Vec<u8>)>> = None;
    for devices in [1usize, 2, 4] {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path();
        let trace = a.join("trace.jsonl");
        let list = vec!["\"cpu\""; devices].join(",");
        let set_devices = format!("backend.devices=[{list}]");
        let sets = [
            set_devices.as_str(),
            "backend.threads=2",
            "encode_docs.batch_size=8",
            "encode_docs.top_k=40",
            "encode_docs.min_weight=0.05",
        ];
        let with_sets = |args: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            for s in sets {
                v.extend(["--set".to_string(), s.to_string()]);
            }
            v
        };
        let out = splade(a)
            .env("SPLADE_DEVICE_TRACE", &trace)
            .args(with_sets(&["run", TOY, "--until", "encode_docs"]))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = PathBuf::from(
            String::from_utf8(
                splade(a)
                    .args(with_sets(&["path", TOY, "encode_docs.vectors"]))
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim(),
        );
        let files = dir_files(&dir);
        assert_eq!(files.len(), 3, "300 docs in shards of 100");
        let vectors: Vec<_> = files
            .iter()
            .flat_map(|(name, _)| read_sparse(&dir.join(name)).unwrap().1)
            .collect();
        assert_eq!(vectors.len(), 300);
        assert!(vectors
            .iter()
            .all(|v| v.terms.len() <= 40 && !v.terms.is_empty()));
        assert!(vectors.iter().flat_map(|v| &v.weights).all(|w| *w >= 0.05));
        match &reference {
            None => reference = Some(files),
            Some(r) => assert!(
                r == &files,
                "{devices} devices wrote different shard bytes than 1 device"
            ),
        }
        let spans = traced_spans(&trace, "encode");
        let used: std::collections::BTreeSet<u64> = spans.iter().map(|s| s.0).collect();
        assert_eq!(
            used.len(),
            devices,
            "every device encoded batches: {spans:?}"
        );
        if devices > 1 {
            // Concurrency, shown by the stage's own record: some batch of one device was being
            // computed while another device was computing one.
            let overlap = spans
                .iter()
                .any(|x| spans.iter().any(|y| x.0 != y.0 && x.1 < y.2 && y.1 < x.2));
            assert!(overlap, "no two devices ever computed at once: {spans:?}");
        }
    }
}
