//! The container images, as far as a machine without a container engine can check them
//! (none can run here; `make images` builds them where one exists): the Dockerfiles parse
//! into the stages, user and entrypoint the chart and operator expect, follow the usual
//! lint rules (hadolint's main ones), and the node image's library list is exactly what
//! ldd says the binary needs.

use std::collections::BTreeSet;
use std::process::Command;
use templar_e2e::{binary, repo_root};

/// One instruction of a Dockerfile: keyword (upper case) and its arguments, with line
/// continuations joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its base image, its name and its instructions.
#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

fn parse(path: &str) -> Vec<Stage> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.is_empty()) {
        let (keyword, args) = line.split_once(' ').unwrap_or((&line, ""));
        let keyword = keyword.to_uppercase();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = (words.len() == 3 && words[1].eq_ignore_ascii_case("as"))
                .then(|| words[2].to_string());
            stages.push(Stage {
                from: words[0].to_string(),
                name,
                body: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{path}: {keyword} before FROM"))
                .body
                .push(Instruction {
                    keyword,
                    args: args.trim().to_string(),
                });
        }
    }
    stages
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.body
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }
}

/// The rules every Dockerfile of the project keeps; returns the runtime stage.
fn check_rules(path: &str) -> Vec<Stage> {
    let stages = parse(path);
    assert!(stages.len() >= 2, "{path}: a multi-stage build");
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    assert_eq!(names.len(), stages.len(), "{path}: every stage is named");
    for stage in &stages {
        // DL3006/DL3007: base images carry an explicit tag, never latest.
        let tag = stage.from.rsplit_once(':').map(|(_, t)| t);
        assert!(
            tag.is_some_and(|t| t != "latest" && !t.is_empty()),
            "{path}: {} has no pinned tag",
            stage.from
        );
        for run in stage.all("RUN") {
            // DL3015 and DL3009: no recommended packages; the apt lists removed in the same
            // layer. DL3004: no sudo.
            if run.contains("apt-get install") {
                assert!(run.contains("--no-install-recommends"), "{path}: {run}");
                assert!(run.contains("-y"), "{path}: {run}");
                assert!(run.contains("rm -rf /var/lib/apt/lists"), "{path}: {run}");
            }
            assert!(!run.contains("sudo "), "{path}: {run}");
            // DL3042: pip without its cache in the image.
            if run.contains("pip install") {
                assert!(run.contains("--no-cache-dir"), "{path}: {run}");
            }
        }
        for copy in stage.all("COPY") {
            if let Some(from) = copy
                .split_whitespace()
                .find_map(|w| w.strip_prefix("--from="))
            {
                assert!(
                    names.contains(&from),
                    "{path}: COPY --from={from}: no such stage"
                );
            }
        }
        // DL3000: absolute WORKDIR.
        for dir in stage.all("WORKDIR") {
            assert!(dir.starts_with('/'), "{path}: WORKDIR {dir}");
        }
    }
    let runtime = stages.last().unwrap();
    assert_eq!(runtime.name.as_deref(), Some("runtime"), "{path}");
    // A numeric non-root user, so the restricted Pod Security Standard's runAsNonRoot holds.
    let user: Vec<&str> = runtime.all("USER").collect();
    assert_eq!(user.len(), 1, "{path}: one USER in the runtime stage");
    let uid: u32 = user[0]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert!(uid > 0, "{path}: root user");
    // Exec-form entrypoint (signals reach the process; no shell needed), and the binary it
    // names is copied into the runtime stage.
    let entrypoint: Vec<&str> = runtime.all("ENTRYPOINT").collect();
    assert_eq!(entrypoint.len(), 1, "{path}");
    let argv: Vec<String> = serde_json::from_str(entrypoint[0]).expect("exec-form ENTRYPOINT");
    assert!(
        runtime
            .all("COPY")
            .any(|c| c.ends_with(&format!(" {}", argv[0]))),
        "{path}: {} is not copied into the runtime stage",
        argv[0]
    );
    stages
}

#[test]
fn node_dockerfile_builds_against_the_pinned_torch_and_carries_its_libraries() {
    let stages = check_rules("images/node/Dockerfile");
    let build = &stages[0];
    let runtime = stages.last().unwrap();
    let setup = std::fs::read_to_string(repo_root().join("scripts/setup.sh")).unwrap();
    let torch = setup
        .lines()
        .find_map(|l| l.strip_prefix("TORCH_VERSION="))
        .unwrap();
    assert!(
        build
            .all("RUN")
            .any(|r| r.contains(&format!("torch=={torch}"))),
        "the image's torch is the one tch expects ({torch})"
    );
    assert!(
        build
            .all("RUN")
            .any(|r| r.contains("cargo build --release --locked -p templar-node"))
    );
    // The libraries are collected by the checked list, and the runtime finds them.
    assert!(build.all("RUN").any(|r| r.contains(
        "scripts/node-runtime-libs.sh copy target/release/templar-node /runtime/lib images/node/runtime-libs.txt"
    )));
    assert!(
        runtime
            .all("COPY")
            .any(|c| c == "--from=build /runtime/lib/ /opt/templar/lib/")
    );
    assert!(
        runtime
            .all("ENV")
            .any(|e| e.contains("LD_LIBRARY_PATH=/opt/templar/lib"))
    );
    assert!(
        runtime.all("EXPOSE").any(|p| p == "9100"),
        "the node's status port"
    );
}

#[test]
fn operator_dockerfile_is_distroless_and_non_root() {
    let stages = check_rules("images/operator/Dockerfile");
    let runtime = stages.last().unwrap();
    assert!(
        runtime.from.starts_with("gcr.io/distroless/"),
        "{}",
        runtime.from
    );
    assert!(
        !runtime.body.iter().any(|i| i.keyword == "RUN"),
        "no shell in distroless"
    );
    assert!(
        runtime.all("EXPOSE").any(|p| p == "8080"),
        "the operator's metrics port"
    );
    assert_eq!(runtime.all("CMD").next(), Some(r#"["run"]"#));
}

#[test]
fn node_image_library_list_is_exactly_what_ldd_finds() {
    let out = Command::new(repo_root().join("scripts/node-runtime-libs.sh"))
        .arg("list")
        .arg(binary("templar-node"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let needed: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let listed: BTreeSet<String> =
        std::fs::read_to_string(repo_root().join("images/node/runtime-libs.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(String::from)
            .collect();
    // libtorch itself, the CUDA runtime the node dlopens, and none of glibc.
    for lib in [
        "libtorch_cpu.so",
        "libc10.so",
        "libtorch_cuda.so",
        "libcudart.so.13",
    ] {
        assert!(needed.contains(lib), "ldd closure lacks {lib}: {needed:?}");
    }
    assert!(!needed.iter().any(|l| l.starts_with("libc.so")));
    let missing: Vec<_> = needed.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&needed).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "images/node/runtime-libs.txt: missing {missing:?}, not needed {stale:?} \
         (regenerate with scripts/node-runtime-libs.sh list)"
    );
}

#[test]
fn library_copy_refuses_a_list_that_lacks_a_needed_library() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("libs.txt");
    std::fs::write(&short, "libc10.so\n").unwrap();
    let out = Command::new(repo_root().join("scripts/node-runtime-libs.sh"))
        .arg("copy")
        .arg(binary("templar-node"))
        .arg(dir.path().join("lib"))
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("libtorch_cpu.so"), "{stderr}");
}

#[test]
fn make_images_says_when_no_container_engine_exists() {
    let out = Command::new("make")
        .args(["-s", "images", "CONTAINER_ENGINE="])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no container engine"));
}
