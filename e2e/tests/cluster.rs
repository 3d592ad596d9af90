//! The cluster suite, against the current kube context (kind or k3d; the recipe is in
//! e2e/README.md). Ignored by default, since no cluster can run on the project's machines;
//! `make e2e-cluster` runs it wherever one exists. It installs the operator (the Helm chart
//! when `helm` is on the PATH, else the kustomize base), MinIO and the devnet of
//! e2e/cluster/, then: every resource Ready with its window advancing; a TemplarMiner scaled
//! from three to four; a deleted pod coming back; a hyperparameters change rolling the pods;
//! the resources deleted and every object they owned garbage-collected.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use templar_crds::{NodeSetStatus, TemplarMiner, TemplarValidator};
use templar_e2e::repo_root;

const NAMESPACE: &str = "templar-e2e";
const TIMEOUT: Duration = Duration::from_secs(15 * 60);
const CONFIG_HASH: &str = "templar.tplr.ai/config-hash";

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn has(program: &str) -> bool {
    Command::new(program).arg("version").output().is_ok()
}

/// Poll `check` every 5 s until it returns Some, or fail after [`TIMEOUT`] saying `what`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "{what}: not within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn ready(status: Option<&NodeSetStatus>, replicas: i32) -> bool {
    status.is_some_and(|s| {
        s.ready_replicas == replicas
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn miner_status(api: &Api<TemplarMiner>) -> Option<NodeSetStatus> {
    api.get("devnet").await.ok()?.status
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the images loaded: make e2e-cluster"]
async fn the_operator_runs_a_devnet_on_a_real_cluster() {
    // Install the operator.
    if has("helm") {
        run(
            "helm",
            &[
                "upgrade",
                "--install",
                "templar-operator",
                "charts/templar-operator",
                "--namespace",
                "templar-system",
                "--create-namespace",
                "--wait",
                "--set",
                "replicas=1",
                "--set",
                "leaderElection.enabled=false",
            ],
        );
    } else {
        run(
            "kubectl",
            &["apply", "--server-side", "-k", "manifests/install/base"],
        );
    }
    // The namespace may exist from an earlier run; a failure here shows in the next apply.
    let _ = Command::new("kubectl")
        .args(["create", "namespace", NAMESPACE])
        .output();
    run(
        "kubectl",
        &["apply", "-n", NAMESPACE, "-f", "e2e/cluster/minio.yaml"],
    );
    run(
        "kubectl",
        &[
            "wait",
            "-n",
            NAMESPACE,
            "--for=condition=complete",
            "job/minio-bucket",
            "--timeout=600s",
        ],
    );
    run(
        "kubectl",
        &["apply", "-n", NAMESPACE, "-f", "e2e/cluster/devnet.yaml"],
    );

    let client = kube::Client::try_default().await.expect("a kube context");
    let miners: Api<TemplarMiner> = Api::namespaced(client.clone(), NAMESPACE);
    let validators: Api<TemplarValidator> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);

    // Every resource Ready, and the window advancing.
    let first = wait_for("the miners Ready with a window", || async {
        let s = miner_status(&miners).await?;
        (ready(Some(&s), 3) && s.window.is_some()).then_some(s.window.unwrap())
    })
    .await;
    wait_for("the validator Ready", || async {
        let s = validators.get("devnet").await.ok()?.status;
        ready(s.as_ref(), 1).then_some(())
    })
    .await;
    wait_for("the window advancing", || async {
        let w = miner_status(&miners).await?.window?;
        (w >= first + 2).then_some(())
    })
    .await;

    // Scale to four (the scale subresource, as kubectl scale does).
    miners
        .patch_scale(
            "devnet",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    wait_for("four miners Ready", || async {
        ready(miner_status(&miners).await.as_ref(), 4).then_some(())
    })
    .await;

    // A deleted pod comes back (a new pod of the same name, Ready again).
    let victim = pods.get("devnet-miner-1").await.unwrap();
    let old_uid = victim.metadata.uid.clone().unwrap();
    pods.delete("devnet-miner-1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("devnet-miner-1 back and Ready", || async {
        let p = pods.get("devnet-miner-1").await.ok()?;
        let is_ready = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (p.metadata.uid.as_deref() != Some(old_uid.as_str()) && is_ready).then_some(())
    })
    .await;
    wait_for("four miners Ready after the pod's return", || async {
        ready(miner_status(&miners).await.as_ref(), 4).then_some(())
    })
    .await;

    // A hyperparameters change rolls the pods: new config hash, new revision, all updated.
    let before = sets.get("devnet-miner").await.unwrap();
    let hash_before = before
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH]
        .clone();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    config_maps
        .patch(
            "devnet-hparams",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"hparams.toml": "[model]\nsize = \"tiny\"\n\n[network]\nblocks_per_window = 12\n"}})),
        )
        .await
        .unwrap();
    wait_for("the pods rolled to the new hyperparameters", || async {
        let set = sets.get("devnet-miner").await.ok()?;
        let hash = set
            .spec
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(CONFIG_HASH)?
            .clone();
        let st = set.status.as_ref()?;
        let rolled = hash != hash_before
            && st.update_revision.is_some()
            && st.current_revision == st.update_revision
            && st.updated_replicas == Some(4);
        (rolled && ready(miner_status(&miners).await.as_ref(), 4)).then_some(())
    })
    .await;

    // Deleting the resources deletes what they owned.
    miners
        .delete("devnet", &DeleteParams::default())
        .await
        .unwrap();
    validators
        .delete("devnet", &DeleteParams::default())
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for("owned objects garbage-collected", || async {
        let selector =
            ListParams::default().labels("app.kubernetes.io/managed-by=templar-operator");
        let left = sets.list(&selector).await.ok()?.items.len()
            + services.list(&selector).await.ok()?.items.len()
            + pods.list(&selector).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
}
