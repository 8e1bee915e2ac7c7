//! No panic is reachable from a pipeline file or an input file: every stage kind is driven with
//! hostile params (zeros, negatives, huge values, empty lists, wrong enum names, NaN/inf, settings
//! that cannot work together) and malformed inputs. Each case goes through `splade plan` (and,
//! where plan accepts it, `splade run --until <stage>` on a tiny collection) and must end with
//! exit status 0 or 1, never a panic, a signal or a hang; a failure must name `stage.NAME.KEY`
//! (or `param `KEY``, at run time) or the offending file and line; and no artifact directory may
//! be left without its manifest.
//!
//! All failures are collected and reported together.

mod common;
use common::*;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const BIG: &str = "1000000000000";
const I64_MAX: &str = "9223372036854775807";
const I64_MIN: &str = "-9223372036854775808";
/// The longest a `splade run` of one case may take (the tiny pipeline runs in seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What a case must do at plan time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `splade plan` rejects it.
    PlanRejects,
    /// `splade plan` accepts it and `splade run` fails cleanly.
    RunFails,
    /// Either outcome, as long as it is clean.
    Clean,
}

/// One hostile setting: overrides of one table of the base pipeline.
#[derive(Debug, Clone)]
struct Case {
    /// `stage.NAME` or `backend`.
    table: String,
    /// The stage it is about (its errors name it; runs go `--until` it).
    stage: &'static str,
    /// Keys set (`Some(toml)`) or removed (`None`).
    set: Vec<(&'static str, Option<String>)>,
    /// Keys an error may blame.
    blame: Vec<&'static str>,
    /// A file (and line) a run-time error must name instead of a key.
    file: Option<(String, Option<usize>)>,
    /// Another text a run-time error may name instead (e.g. a diverged training).
    message: Option<&'static str>,
    expect: Expect,
    /// Run it when plan accepts it (false for settings that are valid but would run for ages).
    run: bool,
    /// Recompute the stage even when its artifact is cached (backend settings are not hashed).
    force: bool,
}

impl Case {
    fn label(&self) -> String {
        let set: Vec<String> = self
            .set
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} = {v}"),
                None => format!("-{k}"),
            })
            .collect();
        format!("[{}] {}", self.table, set.join(", "))
    }

    /// Also sets `key` (which an error may blame too).
    fn and(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.set.push((key, Some(value.into())));
        self.blame.push(key);
        self
    }

    /// Also removes `key`.
    fn without(mut self, key: &'static str) -> Self {
        self.set.push((key, None));
        self
    }

    /// The keys an error may blame, instead of the ones set.
    fn blame(mut self, keys: &[&'static str]) -> Self {
        self.blame = keys.to_vec();
        self
    }

    /// Plan accepts it and it may run fine or fail cleanly.
    fn ok(mut self) -> Self {
        self.expect = Expect::Clean;
        self
    }

    /// Plan accepts it and the run must fail naming a blamed key (or `file` / `message`).
    fn fails_at_run(mut self) -> Self {
        self.expect = Expect::RunFails;
        self
    }

    /// Plan accepts it; it is not run (valid, but would take too long).
    fn plan_only(mut self) -> Self {
        self.expect = Expect::Clean;
        self.run = false;
        self
    }

    /// The run fails naming `file` (at `line`).
    fn file(mut self, file: &Path, line: Option<usize>) -> Self {
        self.file = Some((file.display().to_string(), line));
        self.expect = Expect::RunFails;
        self
    }

    /// A run-time error may say `text` instead of naming a key.
    fn message(mut self, text: &'static str) -> Self {
        self.message = Some(text);
        self
    }

    fn force(mut self) -> Self {
        self.force = true;
        self
    }
}

/// A case setting `key = value` in `[stage.STAGE]`, expected to be rejected by plan.
fn p(stage: &'static str, key: &'static str, value: impl Into<String>) -> Case {
    Case {
        table: format!("stage.{stage}"),
        stage,
        set: vec![(key, Some(value.into()))],
        blame: vec![key],
        file: None,
        message: None,
        expect: Expect::PlanRejects,
        run: true,
        force: false,
    }
}

/// A `[backend]` setting, checked by running `stage` (forced: backends are not hashed).
fn backend(stage: &'static str, key: &'static str, value: &str) -> Case {
    Case {
        table: "backend".into(),
        ..p(stage, key, value)
    }
    .blame(&["backend", "batch_size"])
    .fails_at_run()
    .force()
}

/// A `[backend]` setting `splade plan` must reject, naming `key` (e.g. `backend.devices`).
fn backend_rejected(key: &'static str, value: &str, names: &'static str) -> Case {
    let mut c = backend("train", key, value);
    c.expect = Expect::PlanRejects;
    c.message = Some(names);
    c
}

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

fn qp(p: &Path) -> String {
    q(&p.display().to_string())
}

/// Tiny inputs (and malformed ones) in `dir`.
struct Data {
    dir: PathBuf,
}

impl Data {
    fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let w = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
        let docs = [
            "bees dance to share food locations",
            "corals grow slowly in warm reefs",
            "apollo seventeen was the last moon landing",
            "volcanoes erupt molten rock and ash",
            "the heart pumps blood through arteries",
            "rust is a systems programming language",
            "tea is brewed from leaves of camellia",
            "glaciers carve valleys over millennia",
            "owls hunt at night with silent wings",
            "solar panels convert sunlight to power",
            "bread rises because yeast makes gas",
            "whales sing long songs underwater",
        ];
        let queries = [
            "how do bees share food",
            "last moon landing",
            "how does bread rise",
            "what do whales sing",
            "how do owls hunt",
            "what makes volcanoes erupt",
        ];
        let relevant = [0usize, 2, 10, 11, 8, 3];
        let mut collection = String::new();
        for (i, d) in docs.iter().enumerate() {
            collection += &format!("d{i}\tfacts about {d}\n");
        }
        w("collection.tsv", collection.as_bytes());
        let mut qs = String::new();
        let mut qrels = String::new();
        let mut teacher = String::new();
        for (i, text) in queries.iter().enumerate() {
            qs += &format!("q{i}\tfacts about {text}\n");
            qrels += &format!("q{i} 0 d{} 1\n", relevant[i]);
            let mut scored: Vec<(f32, usize)> = (0..docs.len())
                .map(|d| {
                    (
                        if d == relevant[i] {
                            20.0
                        } else {
                            12.0 - d as f32
                        },
                        d,
                    )
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (rank, (s, d)) in scored.iter().enumerate() {
                teacher += &format!("q{i} Q0 d{d} {} {s:.2} t\n", rank + 1);
            }
        }
        w("queries.tsv", qs.as_bytes());
        w("qrels.trec", qrels.as_bytes());
        w("teacher.trec", teacher.as_bytes());
        // Malformed inputs.
        w("empty.tsv", b"");
        w("notab.tsv", b"d0\tfoo\nd1 no tab here\n");
        w("badutf8.tsv", b"d0\tfoo\nd1\t\xff\xfe bar\n");
        w(
            "bad.jsonl",
            b"{\"_id\": \"d0\", \"text\": \"x\"}\nnot json\n",
        );
        w("badrel.trec", b"q0 0 d0 1\nq1 0 d2 high\n");
        w("bad.json", b"{\"q0\": {\"d0\": 1},\n oops\n");
        w("shape.json", b"{\"q0\": 5}\n");
        w("badrank.trec", b"q0 Q0 d0 first 1.5 t\n");
        w("nanscore.trec", b"q0 Q0 d0 1 nan t\n");
        w("bad.pkl", b"garbage\x80\x02");
        w(
            "hn.jsonl",
            b"{\"qid\": \"q0\", \"pos\": [\"d0\"], \"neg\": {\"bm25\": [\"d1\"]}}\nnope\n",
        );
        let gz = |text: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, text).unwrap();
            let bytes = enc.finish().unwrap();
            bytes[..bytes.len() * 2 / 3].to_vec()
        };
        w("trunc.tsv.gz", &gz(collection.repeat(20).as_bytes()));
        w("trunc.trec.gz", &gz(teacher.as_bytes()));
        std::fs::create_dir_all(dir.join("badmodel")).unwrap();
        w("badmodel/config.json", b"this is not json");
        w("badmodel/tokenizer.json", b"{ nor is this");
        Data {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn file(&self, name: &str) -> String {
        qp(&self.path(name))
    }
}

/// The base pipeline: every stage kind over the tiny collection, runs in seconds.
fn base(data: &Data) -> Vec<(String, Vec<(&'static str, String)>)> {
    let t = |name: &str, keys: Vec<(&'static str, String)>| (name.to_string(), keys);
    vec![
        t(
            "backend",
            vec![("kind", q("flex")), ("devices", "[\"cpu\"]".into())],
        ),
        t(
            "stage.ingest",
            vec![
                ("kind", q("ingest")),
                ("docs", data.file("collection.tsv")),
                (
                    "queries",
                    format!("{{ train = {} }}", data.file("queries.tsv")),
                ),
                (
                    "qrels",
                    format!("{{ train = {} }}", data.file("qrels.trec")),
                ),
            ],
        ),
        t(
            "stage.bm25",
            vec![("kind", q("bm25")), ("input", q("ingest.docs"))],
        ),
        t(
            "stage.index",
            vec![("kind", q("index")), ("input", q("bm25.vectors"))],
        ),
        t(
            "stage.encode",
            vec![
                ("kind", q("encode")),
                ("input", q("ingest.train_queries")),
                ("mode", q("bag_of_words")),
                ("max_length", "32".into()),
            ],
        ),
        t(
            "stage.splade",
            vec![
                ("kind", q("encode")),
                ("input", q("ingest.train_queries")),
                ("model", q("conf/models/splade-tiny")),
                ("max_length", "16".into()),
            ],
        ),
        t(
            "stage.retrieve",
            vec![
                ("kind", q("retrieve")),
                ("index", q("index.index")),
                ("queries", q("encode.vectors")),
                ("k", "10".into()),
            ],
        ),
        t(
            "stage.evaluate",
            vec![
                ("kind", q("evaluate")),
                ("run", q("retrieve.run")),
                ("qrels", q("ingest.train_qrels")),
                ("measures", "[\"mrr@10\", \"recall\"]".into()),
                ("k", "[5, 10]".into()),
            ],
        ),
        t(
            "stage.report",
            vec![
                ("kind", q("report")),
                (
                    "evaluations",
                    "[{ dataset = \"d\", system = \"s\", per_query = \"evaluate.per_query\" }]"
                        .into(),
                ),
            ],
        ),
        t(
            "stage.mine",
            vec![
                ("kind", q("mine")),
                ("run", q("retrieve.run")),
                ("qrels", q("ingest.train_qrels")),
                ("depth", "10".into()),
                ("rank_range", "[1, 10]".into()),
                ("negatives", "2".into()),
            ],
        ),
        t(
            "stage.distill",
            vec![
                ("kind", q("distill")),
                ("scores", data.file("teacher.trec")),
            ],
        ),
        t(
            "stage.export",
            vec![
                ("kind", q("export")),
                ("input", q("bm25.vectors")),
                ("format", q("anserini_docs")),
            ],
        ),
        t(
            "stage.train",
            vec![
                ("kind", q("train")),
                ("negatives", q("mine.negatives")),
                ("docs", q("ingest.docs")),
                ("queries", q("ingest.train_queries")),
                ("steps", "2".into()),
                ("batch_size", "2".into()),
                ("negatives_per_query", "1".into()),
                ("max_length", "32".into()),
                ("query_max_length", "16".into()),
                ("checkpoint_every", "1".into()),
            ],
        ),
    ]
}

/// The base pipeline with `case`'s overrides, as TOML.
fn render(base: &[(String, Vec<(&'static str, String)>)], case: Option<&Case>) -> String {
    let mut text = String::from("name = \"hostile\"\n");
    for (table, keys) in base {
        let mut keys: Vec<(&str, String)> = keys.clone();
        if let Some(c) = case.filter(|c| &c.table == table) {
            for (k, v) in &c.set {
                keys.retain(|(key, _)| key != k);
                if let Some(v) = v {
                    keys.push((k, v.clone()));
                }
            }
        }
        text += &format!("\n[{table}]\n");
        for (k, v) in keys {
            text += &format!("{k} = {v}\n");
        }
    }
    text
}

/// How one `splade` invocation ended.
struct Ended {
    /// The exit code; `None` when killed by a signal (or by the timeout).
    code: Option<i32>,
    timed_out: bool,
    stderr: String,
    stdout: String,
}

/// Runs `splade ARGS` with a time limit, reading its output as it comes.
fn exec(artifacts: &Path, args: &[&str], timeout: Duration) -> Ended {
    let mut child = splade(artifacts)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn splade");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let t0 = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for splade") {
            break s;
        }
        if t0.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for killed splade");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ended {
        code: status.code(),
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Why `ended` is not a clean outcome, if it is not.
fn unclean(ended: &Ended) -> Option<String> {
    if ended.timed_out {
        return Some(format!("timed out after {RUN_TIMEOUT:?} (a hang)"));
    }
    match ended.code {
        Some(0 | 1) => {}
        Some(c) => return Some(format!("exit status {c} (101 = panic)")),
        None => return Some("killed by a signal (abort / out of memory)".into()),
    }
    if ended.stderr.contains("panicked") {
        return Some("stderr says `panicked`".into());
    }
    None
}

/// Whether a failure's message names what `case` is about.
fn names_the_culprit(case: &Case, stderr: &str) -> bool {
    let keyed = case.blame.iter().any(|k| {
        stderr.contains(&format!("stage.{}.{k}", case.stage))
            || (stderr.contains(&format!("stage `{}`", case.stage))
                && stderr.contains(&format!("param `{k}`")))
    });
    let filed = case.file.as_ref().is_some_and(|(f, line)| match line {
        Some(l) => stderr.contains(&format!("{f}:{l}")),
        None => stderr.contains(f.as_str()),
    });
    let said = case.message.is_some_and(|m| stderr.contains(m));
    keyed || filed || said
}

/// Directories under `<artifacts>/<kind>/` without a manifest (half-written artifacts).
fn half_written(artifacts: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let Ok(kinds) = std::fs::read_dir(artifacts) else {
        return bad;
    };
    for kind in kinds.flatten() {
        let name = kind.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !kind.path().is_dir() {
            continue;
        }
        for a in std::fs::read_dir(kind.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if a.path().is_dir() && !a.path().join("manifest.json").is_file() {
                bad.push(a.path().display().to_string());
            }
        }
    }
    bad
}

/// Every case: hostile params per stage kind, then malformed inputs.
fn cases(d: &Data) -> Vec<Case> {
    let mut c = Vec::new();

    // ingest: what its files hold.
    let docs = |name: &str, line: Option<usize>| {
        p("ingest", "docs", d.file(name)).file(&d.path(name), line)
    };
    c.push(docs("empty.tsv", None));
    c.push(docs("notab.tsv", Some(2)));
    c.push(docs("badutf8.tsv", Some(2)));
    c.push(docs("bad.jsonl", Some(2)));
    c.push(docs("trunc.tsv.gz", None));
    c.push(p("ingest", "docs", qp(&d.dir)).file(&d.dir, None));
    c.push(p("ingest", "docs", d.file("no/such/file.tsv")));
    c.push(p("ingest", "docs", q("")));
    c.push(p("ingest", "docs", "42"));
    let map = |name: &str| format!("{{ train = {} }}", d.file(name));
    c.push(p("ingest", "queries", map("empty.tsv")).file(&d.path("empty.tsv"), None));
    c.push(p("ingest", "queries", map("notab.tsv")).file(&d.path("notab.tsv"), Some(2)));
    c.push(p("ingest", "qrels", map("badrel.trec")).file(&d.path("badrel.trec"), Some(2)));
    c.push(p("ingest", "qrels", map("bad.json")).file(&d.path("bad.json"), Some(2)));
    c.push(p("ingest", "qrels", map("shape.json")).file(&d.path("shape.json"), None));
    c.push(p("ingest", "qrels", map("empty.tsv")).file(&d.path("empty.tsv"), None));
    c.push(p("ingest", "runs", map("badrank.trec")).file(&d.path("badrank.trec"), Some(1)));
    c.push(p("ingest", "runs", map("nanscore.trec")).file(&d.path("nanscore.trec"), Some(1)));
    c.push(p("ingest", "runs", map("bad.json")).file(&d.path("bad.json"), Some(2)));
    c.push(p("ingest", "qrels", "{ train = 3 }"));
    c.push(
        p("ingest", "queries", "{}")
            .and("qrels", "{}")
            .without("docs")
            .blame(&["docs"]),
    );

    // bm25
    for v in ["-1.0", "nan", "inf", "-inf"] {
        c.push(p("bm25", "k1", v));
    }
    c.push(p("bm25", "k1", "0").ok());
    c.push(p("bm25", "k1", "1e300").ok());
    for v in ["-1.0", "1.5", "nan"] {
        c.push(p("bm25", "b", v));
    }
    c.push(p("bm25", "b", "1").ok());
    for v in ["0", "-1", "1", I64_MIN] {
        c.push(p("bm25", "max_length", v));
    }
    c.push(p("bm25", "max_length", BIG).ok());
    c.push(p("bm25", "model", d.file("badmodel")).file(&d.path("badmodel"), None));
    c.push(p("bm25", "model", d.file("no-model")));

    // encode (a SPLADE model, and bag-of-words)
    for v in ["0", "-1", "1", I64_MIN] {
        c.push(p("splade", "max_length", v));
    }
    c.push(p("splade", "max_length", BIG).fails_at_run());
    c.push(p("encode", "max_length", BIG).ok());
    for key in ["batch_size", "shard_size", "vocab_chunk"] {
        c.push(p("splade", key, "0"));
        c.push(p("splade", key, "-1"));
        c.push(p("splade", key, I64_MAX).ok());
    }
    for key in ["sort_window", "top_k"] {
        c.push(p("splade", key, "-1"));
        c.push(p("splade", key, I64_MAX).ok());
        c.push(p("splade", key, "0").ok());
    }
    for v in ["nan", "inf"] {
        c.push(p("splade", "min_weight", v));
    }
    c.push(p("splade", "min_weight", "-1.0").ok());
    c.push(p("splade", "min_weight", "1e300").ok());
    c.push(p("splade", "mode", q("bow")));
    c.push(p("splade", "pooling", q("avg")));
    c.push(p("splade", "precision", q("fp16")));
    c.push(p("splade", "precision", q("bf16")).ok());
    c.push(p("splade", "pooling", q("sum")).ok());
    c.push(p("splade", "model", d.file("badmodel")).file(&d.path("badmodel"), None));
    c.push(p("splade", "model", qp(&d.dir)).file(&d.dir, None));
    c.push(p("splade", "model", d.file("missing-model")));
    c.push(p("splade", "input", q("ingest.nothing")));
    c.push(p("splade", "input", q("")));
    // The wrong kind of artifact: refused by plan (typed references).
    c.push(p("encode", "input", q("bm25.vectors")));

    // index
    for v in ["-1.0", "nan", "-inf"] {
        c.push(p("index", "memory_budget", v));
    }
    c.push(p("index", "memory_budget", "1e300").ok());
    c.push(p("index", "memory_budget", "1e-9").ok());
    for v in ["-1.0", "1e300", "inf", "nan"] {
        c.push(p("index", "max_weight", v));
    }
    c.push(p("index", "max_weight", "1e-30").ok());
    for v in ["0", "-1", BIG, I64_MAX] {
        c.push(p("index", "vocab", v));
    }
    c.push(p("index", "vocab", "1").ok());
    c.push(
        p("index", "input", d.file("collection.tsv"))
            .file(&d.path("collection.tsv"), None)
            .ok(),
    );
    // The wrong kind of artifact: refused by plan (typed references).
    c.push(p("index", "input", q("ingest.docs")));

    // retrieve
    for v in ["0", "-1", BIG, I64_MAX, I64_MIN] {
        c.push(p("retrieve", "k", v));
    }
    c.push(
        p("retrieve", "k", I64_MAX)
            .and("remove_self_matches", "true")
            .blame(&["k"]),
    );
    c.push(p("retrieve", "k", "1").ok());
    c.push(p("retrieve", "k", "1000000").ok());
    for v in ["0", "-1"] {
        c.push(p("retrieve", "batch_size", v));
    }
    c.push(p("retrieve", "batch_size", I64_MAX).ok());
    c.push(p("retrieve", "algorithm", q("wand")));
    c.push(p("retrieve", "algorithm", q("block_max")).ok());
    c.push(p("retrieve", "algorithm", q("maxscore")).and("k", "1").ok());
    for v in ["nan", "inf"] {
        c.push(p("retrieve", "min_score", v));
    }
    c.push(p("retrieve", "min_score", "1e300").ok());
    c.push(p("retrieve", "min_score", "-1e300").ok());
    c.push(p("retrieve", "max_length", "1"));
    c.push(p("retrieve", "max_length", I64_MIN));
    c.push(p("retrieve", "query_text", q("ingest.train_queries")));
    c.push(p("retrieve", "queries", q("")));
    c.push(
        p("retrieve", "query_text", q("ingest.train_queries"))
            .without("queries")
            .blame(&["model"]),
    );
    c.push(p("retrieve", "model", q("conf/models/splade-tiny")));
    c.push(
        p("retrieve", "query_text", q("ingest.train_queries"))
            .and("model", q("conf/models/splade-tiny"))
            .and("max_length", BIG)
            .without("queries")
            .fails_at_run(),
    );
    c.push(
        p("retrieve", "query_text", q("ingest.train_queries"))
            .and("model", q("conf/models/splade-tiny"))
            .and("mode", q("bag_of_words"))
            .without("queries")
            .ok(),
    );
    // The wrong kind of artifact: refused by plan (typed references).
    c.push(p("retrieve", "queries", q("ingest.train_queries")));
    // The wrong kind of artifact: refused by plan (typed references).
    c.push(p("retrieve", "index", q("bm25.vectors")));

    // evaluate
    c.push(p("evaluate", "k", "[]").blame(&["k", "measures"]));
    let most_negative = format!("[{I64_MIN}]");
    for v in ["[0]", "[-1]", "[10, 0]", most_negative.as_str()] {
        c.push(p("evaluate", "k", v));
    }
    c.push(p("evaluate", "k", format!("[{I64_MAX}]")).ok());
    c.push(p("evaluate", "k", "[\"ten\"]"));
    for v in [
        "[]",
        "[\"mrr@0\"]",
        "[\"mrr@-1\"]",
        "[\"ndgc@10\"]",
        "[\"map@10\"]",
        "[\"recall@99999999999999999999\"]",
        "[\"\"]",
        "[\"@\"]",
        "[1]",
    ] {
        c.push(p("evaluate", "measures", v));
    }
    for v in ["0", "-1", BIG, I64_MIN] {
        c.push(p("evaluate", "relevance_level", v));
    }
    c.push(p("evaluate", "relevance_level", "2").ok());
    c.push(p("evaluate", "complete", "1"));
    // A reference to the wrong kind of artifact is refused by plan (typed references).
    c.push(p("evaluate", "run", q("ingest.train_qrels")));

    // report
    let record = |d: &str, s: &str, r: &str| {
        format!("{{ dataset = \"{d}\", system = \"{s}\", per_query = \"{r}\" }}")
    };
    let good = record("d", "s", "evaluate.per_query");
    for v in [
        "[]".to_string(),
        "\"evaluate.per_query\"".into(),
        "[{ dataset = \"d\", system = \"s\" }]".into(),
        "[{ dataset = \"d\", system = \"s\", per_query = 3 }]".into(),
        format!("[{}]", record("", "s", "evaluate.per_query")),
        format!("[{good}, {good}]"),
        format!("[{}]", record("d", "s", "nowhere.per_query")),
        format!("[{}]", record("d", "s", "evaluate.nothing")),
        format!("[{}]", record("d", "s", "evaluate")),
    ] {
        c.push(p("report", "evaluations", v));
    }
    c.push(p(
        "report",
        "evaluations",
        format!("[{}]", record("d", "s", "evaluate.metrics")),
    ));
    c.push(p("report", "measures", "[\"bogus\"]"));
    c.push(p("report", "measures", "[\"p@5\"]").ok().message("p@5"));
    c.push(p("report", "baseline", q("zzz")));
    for v in ["0", "-1", BIG, I64_MIN] {
        c.push(p("report", "permutations", v));
    }
    for v in ["0", "1", "-0.5", "nan", "inf"] {
        c.push(p("report", "alpha", v));
    }
    c.push(p("report", "pairs", q("all")));
    c.push(p("report", "pairs", q("all_pairs")).ok());
    c.push(p("report", "correction", q("holm2")));
    c.push(p("report", "test", q("ttest")));

    // export
    c.push(p("export", "format", q("json")));
    c.push(p("export", "format", q("Ciff")));
    c.push(p("export", "format", q("ciff")).ok());
    c.push(p("export", "format", q("anserini_queries")).ok());
    for v in ["0", "-1.0", "1e12", "1e300", "nan", "inf"] {
        c.push(p("export", "scale", v));
    }
    c.push(
        p("export", "scale", "1e12")
            .and("format", q("anserini_queries"))
            .blame(&["scale"]),
    );
    c.push(p("export", "scale", "0.001").ok());
    c.push(p("export", "model", d.file("badmodel")).file(&d.path("badmodel"), None));
    c.push(p("export", "texts", q("ingest.train_queries")).ok());
    // The wrong kind of artifact: refused by plan (typed references).
    c.push(p("export", "input", q("ingest.docs")));

    // mine
    for v in ["[50, 10]", "[]", "[0, 10]", "[-5, 10]", "[1, 2, 3]", "[1]"] {
        c.push(p("mine", "rank_range", v));
    }
    c.push(p("mine", "rank_range", format!("[1, {I64_MAX}]")).ok());
    c.push(
        p("mine", "rank_range", format!("[{I64_MAX}, {I64_MAX}]"))
            .ok()
            .message("no query got negatives"),
    );
    for key in ["negatives", "depth", "shard_size"] {
        c.push(p("mine", key, "0"));
        c.push(p("mine", key, "-1"));
        c.push(p("mine", key, I64_MAX).ok());
    }
    c.push(p("mine", "queries_limit", "-1"));
    c.push(p("mine", "queries_limit", I64_MAX).ok());
    c.push(p("mine", "queries_limit", "1").ok());
    c.push(p("mine", "sampling", q("Top")));
    c.push(p("mine", "sampling", q("stratified")).ok());
    c.push(p("mine", "sampling", q("top")).and("negatives", "1").ok());
    c.push(p("mine", "seed", I64_MIN).ok());
    c.push(p("mine", "unscored", q("drop")));
    c.push(p("mine", "unscored", q("maybe")));
    c.push(p("mine", "margin", "-1e300"));
    c.push(p("mine", "max_score", "nan"));
    c.push(p("mine", "teacher_scores", q("distill.teacher_scores")));
    c.push(
        p("mine", "teacher_scores", q("distill.teacher_scores"))
            .and("margin", "-1e300")
            .ok()
            .message("no query got negatives"),
    );
    c.push(
        p("mine", "teacher_scores", q("distill.teacher_scores"))
            .and("max_score", "-1e300")
            .ok()
            .message("no query got negatives"),
    );
    c.push(
        p("mine", "teacher_scores", q("distill.teacher_scores"))
            .and("unscored", q("drop"))
            .and("margin", "0")
            .ok()
            .message("no query got negatives"),
    );
    c.push(p("mine", "hard_negatives", d.file("hn.jsonl")).blame(&["run", "hard_negatives"]));
    c.push(p("mine", "run", q("")).blame(&["run"]));
    c.push(p("mine", "qrels", q("")).blame(&["qrels"]));
    c.push(
        p("mine", "hard_negatives", d.file("hn.jsonl"))
            .without("run")
            .without("qrels")
            .and("docs", q("ingest.docs"))
            .and("queries", q("ingest.train_queries"))
            .file(&d.path("hn.jsonl"), Some(2)),
    );
    c.push(
        p("mine", "hard_negatives", d.file("trunc.trec.gz"))
            .without("run")
            .without("qrels")
            .and("docs", q("ingest.docs"))
            .and("queries", q("ingest.train_queries"))
            .file(&d.path("trunc.trec.gz"), None),
    );
    c.push(
        p("mine", "hard_negatives", d.file("empty.tsv"))
            .without("run")
            .without("qrels")
            .file(&d.path("empty.tsv"), None)
            .message("no query got negatives")
            .ok(),
    );
    c.push(p("mine", "systems", "[\"a\"]"));
    c.push(p("mine", "systems", "[]").ok());
    // A reference to the wrong kind of artifact is refused by plan (typed references).
    c.push(p("mine", "run", q("ingest.train_qrels")));

    // distill
    c.push(p("distill", "format", q("csv")));
    c.push(p("distill", "format", q("pickle")).file(&d.path("teacher.trec"), None));
    c.push(
        p("distill", "format", q("triplets"))
            .fails_at_run()
            .blame(&["queries", "docs"]),
    );
    c.push(p("distill", "on_missing", q("ignore")));
    for name in ["bad.pkl", "trunc.trec.gz", "empty.tsv"] {
        c.push(p("distill", "scores", d.file(name)).file(&d.path(name), None));
    }
    c.push(p("distill", "scores", d.file("bad.json")).file(&d.path("bad.json"), Some(2)));
    c.push(p("distill", "scores", d.file("queries.tsv")).file(&d.path("queries.tsv"), Some(1)));
    c.push(p("distill", "scores", d.file("nanscore.trec")).file(&d.path("nanscore.trec"), Some(1)));
    c.push(p("distill", "scores", qp(&d.dir)).file(&d.dir, None));
    c.push(p("distill", "scores", d.file("no/such.pkl")));
    c.push(
        p("distill", "docs", q("ingest.docs"))
            .and("queries", q("ingest.train_queries"))
            .ok(),
    );
    c.push(p("distill", "negatives", q("mine.negatives")).ok());
    // The wrong kind of artifact: refused by plan (typed references).
    c.push(p("distill", "negatives", q("ingest.docs")));

    // train
    for v in ["0", "-1", I64_MIN] {
        c.push(p("train", "steps", v));
    }
    c.push(p("train", "steps", BIG).plan_only());
    c.push(p("train", "steps", I64_MAX));
    for v in ["0", "-1", BIG, I64_MAX] {
        c.push(p("train", "batch_size", v));
    }
    for v in ["-1", BIG, I64_MAX] {
        c.push(p("train", "negatives_per_query", v));
    }
    // The bug: in_batch_pairwise_nll with no negatives passed validation, then panicked.
    for loss in [
        "in_batch_pairwise_nll",
        "pairwise_nll",
        "contrastive",
        "margin_mse",
        "kl_div",
        "mse_margin",
    ] {
        c.push(
            p("train", "negatives_per_query", "0")
                .and("losses", format!("{{ {loss} = 1 }}"))
                .and("teacher_scores", q("distill.teacher_scores")),
        );
    }
    c.push(p("train", "negatives_per_query", "0").blame(&["negatives_per_query", "losses"]));
    for v in ["0", "-1", BIG] {
        c.push(p("train", "gradient_accumulation", v));
    }
    c.push(p("train", "gradient_accumulation", "2").ok());
    for v in ["0", "-1", "1"] {
        c.push(p("train", "max_length", v));
    }
    c.push(p("train", "max_length", BIG).fails_at_run());
    for v in ["-1", "1"] {
        c.push(p("train", "query_max_length", v));
    }
    c.push(p("train", "query_max_length", BIG).fails_at_run());
    c.push(p("train", "query_max_length", "0").ok());
    for v in ["-1.0", "nan", "inf"] {
        c.push(p("train", "lr", v));
    }
    c.push(p("train", "lr", "0").ok());
    c.push(p("train", "lr", "1e300").ok().message("training diverged"));
    c.push(p("train", "weight_decay", "-1.0"));
    c.push(
        p("train", "weight_decay", "1e300")
            .ok()
            .message("training diverged"),
    );
    for v in ["0", "-1e-6"] {
        c.push(p("train", "adam_eps", v));
    }
    c.push(p("train", "grad_clip", "-1.0"));
    c.push(p("train", "grad_clip", "1e-30").ok());
    for v in [
        "{}",
        "{ in_batch_pairwise_nll = 0 }",
        "{ in_batch_pairwise_nll = -1 }",
        "{ in_batch_pairwise_nll = nan }",
        "{ in_batch_pairwise_nll = inf }",
        "{ in_batch_pairwise_nll = \"x\" }",
        "{ nll = 1 }",
        "{ in_batch_pairwise_nll = 0, pairwise_nll = 0 }",
        "1",
        "[\"in_batch_pairwise_nll\"]",
    ] {
        c.push(p("train", "losses", v));
    }
    c.push(
        p("train", "losses", "{ in_batch_pairwise_nll = 1e300 }")
            .ok()
            .message("training diverged"),
    );
    c.push(p("train", "losses", "{ pairwise_nll = 1, contrastive = 0.5 }").ok());
    c.push(p("train", "losses", "{ kl_div = 1 }").blame(&["teacher_scores"]));
    c.push(
        p(
            "train",
            "losses",
            "{ kl_div = 1, margin_mse = 1, mse_margin = 1 }",
        )
        .and("teacher_scores", q("distill.teacher_scores"))
        .ok(),
    );
    for key in [
        "flops_lambda_q",
        "flops_lambda_d",
        "l1_lambda_q",
        "l1_lambda_d",
    ] {
        c.push(p("train", key, "-1.0"));
        c.push(p("train", key, "nan"));
    }
    c.push(
        p("train", "flops_lambda_d", "1e300")
            .ok()
            .message("training diverged"),
    );
    for key in ["warmup_steps", "lambda_warmup_steps", "validate_every"] {
        c.push(p("train", key, "-1"));
    }
    c.push(p("train", "warmup_steps", I64_MAX).ok());
    c.push(p("train", "lambda_warmup_steps", I64_MAX).ok());
    c.push(p("train", "checkpoint_every", "0"));
    c.push(p("train", "checkpoint_every", I64_MAX).ok());
    c.push(p("train", "validate_every", "1").blame(&["validation_queries", "validation_qrels"]));
    c.push(p("train", "select", q("best")));
    c.push(p("train", "select", q("first")));
    c.push(
        p("train", "validate_every", I64_MAX)
            .and("validation_queries", q("ingest.train_queries"))
            .and("validation_qrels", q("ingest.train_qrels"))
            .and("select", q("best"))
            .ok(),
    );
    for v in ["0", "-1"] {
        c.push(p("train", "recall_k", v));
    }
    c.push(
        p("train", "recall_k", I64_MAX)
            .and("validate_every", "1")
            .and("validation_queries", q("ingest.train_queries"))
            .and("validation_qrels", q("ingest.train_qrels"))
            .ok(),
    );
    for v in ["-1", I64_MIN] {
        c.push(p("train", "seed", v));
    }
    c.push(p("train", "seed", I64_MAX).ok());
    for v in ["1.0", "-0.5", "nan", "1e300"] {
        c.push(p("train", "dropout", v));
    }
    c.push(p("train", "vocab_chunk", "0"));
    c.push(p("train", "vocab_chunk", I64_MAX).ok());
    c.push(p("train", "pooling", q("mean")));
    c.push(p("train", "init", q("zeros")));
    c.push(p("train", "precision", q("f16")));
    c.push(p("train", "query_encoder", q("dual")));
    c.push(p("train", "init", q("random")).ok());
    c.push(p("train", "precision", q("bf16")).ok());
    c.push(p("train", "query_encoder", q("separate")).ok());
    c.push(p("train", "query_encoder", q("bag_of_words")).ok());
    c.push(
        p("train", "query_encoder", q("bag_of_words"))
            .and("flops_lambda_q", "1e-3")
            .blame(&["query_encoder", "flops_lambda_q"]),
    );
    c.push(p("train", "query_model", q("conf/models/splade-tiny")));
    c.push(p("train", "model", d.file("badmodel")).file(&d.path("badmodel"), None));
    c.push(p("train", "model", qp(&d.dir)).file(&d.dir, None));
    // The wrong kind of artifact: refused by plan (typed references).
    c.push(p("train", "negatives", q("ingest.docs")));
    c.push(
        p("train", "docs", q("ingest.train_queries"))
            .ok()
            .message("negatives"),
    );

    // The backend, checked when a model stage runs: batch smaller than the devices, no devices,
    // unknown kinds and devices.
    c.push(backend("train", "devices", "[\"cpu\", \"cpu\", \"cpu\"]"));
    // What no stage could run is rejected by `plan`, at `backend.<key>`.
    c.push(backend_rejected("devices", "[]", "backend.devices"));
    c.push(backend_rejected(
        "devices",
        "[\"cuda:0\"]",
        "backend.devices",
    ));
    c.push(backend_rejected("devices", "\"cpu\"", "backend.devices"));
    c.push(backend_rejected("devices", "[\"gpu\"]", "backend.devices"));
    c.push(backend_rejected("kind", "\"cuda\"", "backend.kind"));
    c.push(backend_rejected("kind", "7", "backend.kind"));
    c.push(backend_rejected("threads", "0", "backend.threads"));
    c.push(backend_rejected("threads", "-2", "backend.threads"));
    c.push(backend_rejected("threads", BIG, "backend.threads"));
    c
}

#[test]
fn hostile_params_and_inputs_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Data::create(&tmp.path().join("data"));
    let base = base(&data);
    let plan_art = tmp.path().join("plan-artifacts");
    let run_art = tmp.path().join("run-artifacts");
    let file = write_pipeline(tmp.path(), "base.toml", &render(&base, None));

    // The base works, and its artifacts are the cache every case's upstream stages come from.
    let ended = exec(&run_art, &["run", &file], RUN_TIMEOUT);
    assert!(
        ended.code == Some(0),
        "the base pipeline must run\nstdout:\n{}\nstderr:\n{}",
        ended.stdout,
        ended.stderr
    );

    let cases = cases(&data);
    let mut failures: Vec<String> = Vec::new();
    let (mut planned, mut ran) = (0usize, 0usize);
    for (i, case) in cases.iter().enumerate() {
        let label = case.label();
        let mut fail = |why: String, ended: &Ended| {
            failures.push(format!(
                "{label}: {why}\n    stderr: {}",
                ended.stderr.trim().replace('\n', "\n            ")
            ))
        };
        let file = write_pipeline(
            tmp.path(),
            &format!("case-{i}.toml"),
            &render(&base, Some(case)),
        );
        let plan = exec(&plan_art, &["plan", &file], RUN_TIMEOUT);
        planned += 1;
        if let Some(why) = unclean(&plan) {
            fail(format!("plan: {why}"), &plan);
            continue;
        }
        if plan.code != Some(0) {
            if case.expect != Expect::PlanRejects {
                fail("plan rejected a case it should accept".into(), &plan);
            } else if !case
                .blame
                .iter()
                .any(|k| plan.stderr.contains(&format!("stage.{}.{k}", case.stage)))
                && !case.message.is_some_and(|m| plan.stderr.contains(m))
            {
                fail(
                    format!(
                        "plan's error names none of stage.{}.{:?}",
                        case.stage, case.blame
                    ),
                    &plan,
                );
            } else if !plan.stderr.contains(&format!("{file}:")) {
                fail(
                    "plan's error does not give the pipeline file and line".into(),
                    &plan,
                );
            }
            continue;
        }
        if case.expect == Expect::PlanRejects {
            fail("plan accepted a setting that cannot work".into(), &plan);
        }
        if !case.run {
            continue;
        }
        let mut args = vec!["run", file.as_str(), "--until", case.stage];
        if case.force {
            args.extend(["--force", case.stage]);
        }
        let run = exec(&run_art, &args, RUN_TIMEOUT);
        ran += 1;
        if let Some(why) = unclean(&run) {
            fail(format!("run: {why}"), &run);
        } else if run.code == Some(0) {
            if case.expect == Expect::RunFails {
                fail("the run succeeded; it should have failed".into(), &run);
            }
        } else if !names_the_culprit(case, &run.stderr) {
            fail(
                format!(
                    "the run's error names none of {:?} (or {:?} / {:?})",
                    case.blame, case.file, case.message
                ),
                &run,
            );
        }
        let half = half_written(&run_art);
        if !half.is_empty() {
            fail(format!("half-written artifacts: {half:?}"), &run);
        }
    }
    eprintln!("{} cases: {planned} planned, {ran} run", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases misbehaved:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
