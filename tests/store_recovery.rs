//! The store is an index of the disk, never the only copy: a damaged or deleted store is rebuilt
//! from manifests, resume files and run files, and the pipeline goes on with identical outputs;
//! read-only commands work while a run holds the store, and a run waits for a reader.
#![cfg(feature = "test-stages")]

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// q (quick) → a (slow, 8 shards) → b.
fn pipeline(dir: &Path, delay_ms: u64) -> String {
    write_pipeline(
        dir,
        "store.toml",
        &format!(
            "name = \"store\"\n\
             [stage.q]\nkind = \"slow_shards\"\nshards = 1\ndelay_ms = 0\nseed = 7\n\
             [stage.a]\nkind = \"slow_shards\"\nshards = 8\nrows_per_shard = 500\ndelay_ms = {delay_ms}\ninput = \"q.shards\"\n\
             [stage.b]\nkind = \"slow_shards\"\nshards = 3\ndelay_ms = 0\ninput = \"a.shards\"\n"
        ),
    )
}

/// Damages the store of `root` the way `how` says.
fn damage(root: &Path, how: &str) {
    let store = root.join(".store");
    match how {
        "garbage" => std::fs::write(store.join("db"), b"not a sled log").unwrap(),
        "flipped" => {
            let mut bytes = std::fs::read(store.join("db")).unwrap();
            for i in (0..bytes.len()).step_by(997) {
                bytes[i] ^= 0x5a;
            }
            std::fs::write(store.join("db"), bytes).unwrap();
        }
        // What a command run on a full disk used to leave behind.
        "empty snapshot" => {
            for e in std::fs::read_dir(&store).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("snap.") {
                    std::fs::write(e.path(), b"").unwrap();
                }
            }
            std::fs::write(store.join("snap.00000000000FFFFF.generating"), b"").unwrap();
        }
        "deleted" => std::fs::remove_dir_all(&store).unwrap(),
        other => panic!("unknown damage {other}"),
    }
}

#[test]
fn a_damaged_store_is_rebuilt_and_everything_stays_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let file = pipeline(tmp.path(), 0);
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", &file]);
    for how in ["garbage", "flipped", "empty snapshot", "deleted"] {
        let a = tmp.path().join(how.replace(' ', "_"));
        ok(&a, &["run", &file]);
        damage(&a, how);
        let status = run(&a, &["status"]);
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(status.status.success(), "{how}: {stderr}");
        if how == "garbage" {
            assert!(
                stderr.contains("unreadable") && stderr.contains("rebuilt it from the disk"),
                "{how}: {stderr}"
            );
        }
        let plan = ok(&a, &["plan", &file]);
        for s in ["q", "a", "b"] {
            assert_eq!(plan_of(&plan, s).0, "cached", "{how}: {plan}");
        }
        let again = ok(&a, &["run", &file]);
        assert!(again.contains("0 executed"), "{how}: {again}");
        // The run history survived too (it is kept in files).
        let status = ok(&a, &["status"]);
        assert!(status.matches("store ").count() >= 2, "{how}: {status}");
        assert_same_artifacts(&reference, &a);
        ok(&a, &["verify"]);
    }
}

#[test]
fn an_interrupted_stage_resumes_after_its_store_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let file = pipeline(tmp.path(), 150);
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", &file]);

    let a = tmp.path().join("art");
    let mut child = splade(&a).args(["run", &file]).spawn().unwrap();
    wait_for(
        || committed_shards(&a, "shards") >= 4,
        "four committed shards",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    damage(&a, "garbage");

    let plan = ok(&a, &["plan", &file]);
    assert_eq!(plan_of(&plan, "q").0, "cached", "{plan}");
    assert_eq!(plan_of(&plan, "a").0, "partial", "{plan}");
    let out = ok(&a, &["run", &file]);
    assert_eq!(outcome_of(&out, "a"), "resumed", "{out}");
    let m: serde_json::Value =
        serde_json::from_str(&ok(&a, &["inspect", &file, "a.shards", "--manifest"])).unwrap();
    assert!(m["stats"]["resumed_from"].as_i64().unwrap() >= 3, "{m}");
    assert_same_artifacts(&reference, &a);
}

#[test]
fn store_repair_rebuilds_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let file = pipeline(tmp.path(), 0);
    let a = tmp.path().join("art");
    ok(&a, &["run", &file]);
    let out = ok(&a, &["store", "repair"]);
    assert!(
        out.contains("moved the old store to") && out.contains("3 artifacts, 3 pipeline stages"),
        "{out}"
    );
    assert!(ok(&a, &["run", &file]).contains("0 executed"));
    // gc takes the damaged copy away.
    let gc = ok(&a, &["gc"]);
    assert!(gc.contains("damaged store copy"), "{gc}");
}

#[test]
fn readers_work_while_a_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let file = pipeline(tmp.path(), 200);
    let a = tmp.path().join("art");
    let first = splade(&a)
        .args(["run", &file, "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || committed_shards(&a, "shards") >= 2,
        "stage a to be under way",
    );

    let t0 = Instant::now();
    let plan = ok(&a, &["plan", &file]);
    assert_eq!(plan_of(&plan, "q").0, "cached", "{plan}");
    assert_eq!(plan_of(&plan, "a").0, "partial", "{plan}");

    let status = run(&a, &["status", &file]);
    let (out, err) = (
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr),
    );
    assert!(status.status.success(), "{err}");
    assert!(
        err.contains("is using") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    assert!(out.contains("in progress: pid"), "{out}");
    assert!(out.contains("running  a"), "{out}");
    assert!(out.contains("ended    q"), "{out}");

    // Two `path` calls at once (they used to race for the lock).
    let spawn_path = || {
        splade(&a)
            .args(["path", &file, "q.shards"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn_path(), spawn_path());
    let (o1, o2) = (
        p1.wait_with_output().unwrap(),
        p2.wait_with_output().unwrap(),
    );
    assert!(o1.status.success() && o2.status.success());
    assert_eq!(o1.stdout, o2.stdout);

    ok(&a, &["inspect", &file, "q.shards", "--head", "2"]);
    ok(&a, &["verify", &file]);
    let gc = ok(&a, &["gc", "--dry-run"]);
    assert!(gc.contains("staging directories are not listed"), "{gc}");
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "readers must not wait"
    );

    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "the run is unaffected by its readers");
    assert_eq!(
        outcome_of(&String::from_utf8_lossy(&out.stdout), "b"),
        "executed"
    );
}

#[test]
fn a_run_waits_for_a_reader_instead_of_failing() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let file = pipeline(tmp.path(), 0);
    let a = tmp.path().join("art");
    std::fs::create_dir_all(&a).unwrap();
    // Hold the lock the way a reader does, for a second.
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(a.join(".lock"))
        .unwrap();
    lock.try_lock().unwrap();
    write!(lock, "pid {} (reading)\n`splade plan`", std::process::id()).unwrap();
    let child = splade(&a)
        .args(["run", &file])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    lock.unlock().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
