//! Agent X end to end on the real Docker engine: `deploy_agent` missions running the reference
//! agent image (docker/agent, built here on a scratch base holding the test's hypercode binary
//! and the libraries it links), approved, rejected, or never healthy; and without Docker.
//!
//! Each test has its own agents network, whose gateway (an address of this host) the API
//! listens on, so the deployed agent heartbeats to it; everything a test creates is removed
//! when it ends, also when it fails.

mod common;
mod docker_lab;

use common::agents::{deployment, listed, wait_live};
use common::*;
use docker_lab::{docker, must};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The test agent image's repository (tagged by the binary it holds).
const IMAGE_REPO: &str = "hypercode-test/agent";

/// Build (once per binary) the agent image: docker/agent/Dockerfile on a scratch base with
/// the binary at /usr/local/bin/hypercode and its shared libraries where `ldd` found them.
fn agent_image() -> String {
    let binary = Path::new(BIN);
    let meta = std::fs::metadata(binary).expect("the hypercode binary");
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{IMAGE_REPO}:{:x}-{:x}", meta.len(), modified);
    if docker(&["image", "inspect", &tag]).is_ok() {
        return tag;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("hypercode-test-agent-image.lock"))
        .expect("open the image lock file");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the image lock file");
    if docker(&["image", "inspect", &tag]).is_ok() {
        return tag;
    }
    // Older builds hold older binaries: only the newest is kept.
    if let Ok(old) = docker(&[
        "image",
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        IMAGE_REPO,
    ]) {
        for image in old.lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["image", "rm", image]);
        }
    }
    let dir = std::env::temp_dir().join(format!("hypercode-agent-image-{}", std::process::id()));
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/local/bin")).expect("create the build context");
    std::fs::copy(binary, rootfs.join("usr/local/bin/hypercode")).expect("copy the binary");
    for library in linked_libraries(binary) {
        let target = rootfs.join(library.strip_prefix("/").unwrap_or(&library));
        std::fs::create_dir_all(target.parent().expect("a library's directory"))
            .expect("create a library directory");
        std::fs::copy(&library, &target)
            .unwrap_or_else(|e| panic!("copy {}: {e}", library.display()));
    }
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\n")
        .expect("write the base Dockerfile");
    let base = format!("{tag}-base");
    let built = docker(&["build", "-q", "-t", &base, &dir.to_string_lossy()]).and_then(|_| {
        let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/agent");
        docker(&[
            "build",
            "-q",
            "--build-arg",
            &format!("BASE={base}"),
            "-t",
            &tag,
            &agent.to_string_lossy(),
        ])
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = built {
        panic!("building {tag}: {e}");
    }
    tag
}

/// The shared libraries `binary` loads, as `ldd` resolves them.
fn linked_libraries(binary: &Path) -> Vec<PathBuf> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`.
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A test's agents network and agent name; removes the agent's container, its network and
/// the image's leftovers when dropped.
struct Site {
    network: String,
    gateway: String,
    agent: String,
}

impl Site {
    fn new() -> Site {
        let suffix = random_suffix();
        let network = format!("hc-test-agentx-{suffix}");
        must(&[
            "network",
            "create",
            "--label",
            "hypercode-test.agentx=1",
            &network,
        ]);
        let gateway = must(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &network,
        ]);
        Site {
            network,
            gateway,
            agent: format!("x-{suffix}"),
        }
    }

    fn container(&self) -> String {
        format!("hc-agent-{}", self.agent)
    }

    /// A free port on the gateway for the API (bound and released: the server binds it next).
    fn api_address(&self) -> String {
        let listener = std::net::TcpListener::bind(format!("{}:0", self.gateway))
            .expect("bind the network's gateway");
        let address = listener.local_addr().expect("its address");
        address.to_string()
    }

    /// A deployment whose API listens on the gateway and deploys agents of `image` here.
    async fn deployment(&self, image: &str, health_timeout_s: u64) -> Harness {
        let address = self.api_address();
        let (h, _) = deployment(&[
            ("HYPERCODE_LISTEN", &address),
            ("HYPERCODE_AGENT_API_URL", &format!("http://{address}")),
            ("HYPERCODE_AGENT_NETWORK", &self.network),
            ("HYPERCODE_AGENT_IMAGES", image),
            (
                "HYPERCODE_AGENT_HEALTH_TIMEOUT_S",
                &health_timeout_s.to_string(),
            ),
        ])
        .await;
        h
    }

    /// Whether the agent's container exists.
    fn container_exists(&self) -> bool {
        docker(&["container", "inspect", &self.container()]).is_ok()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container()]);
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// Submit a deployment of `site`'s agent; its mission id.
async fn submit(h: &Harness, site: &Site, image: &str, env: Value) -> String {
    let reply = h
        .submit_body(&json!({
            "workflow": "deploy_agent",
            "input": {
                "name": site.agent,
                "image": image,
                "capabilities": ["upper", "echo"],
                "env": env,
            }
        }))
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    id_of(&reply.body)
}

/// Wait for the approval and return its message.
async fn approval_message(h: &Harness, id: &str) -> String {
    h.wait_until(
        id,
        "waiting for the approval",
        |m| m["status"] == "waiting" && step_is(m, "approve", "waiting"),
        Duration::from_secs(30),
    )
    .await;
    let history = h.history(id).await;
    let asked = events_of(&history, "approval_requested");
    asked
        .first()
        .and_then(|e| e["data"]["message"].as_str())
        .unwrap_or_else(|| panic!("no approval message:\n{}", describe_history(&history)))
        .to_owned()
}

/// `docker inspect -f <format>` of the agent's container.
fn inspect(site: &Site, format: &str) -> String {
    must(&["inspect", "-f", format, &site.container()])
}

#[tokio::test]
async fn an_approved_deployment_runs_a_locked_down_agent_that_answers_routed_steps() {
    let image = agent_image();
    let site = Site::new();
    let h = site.deployment(&image, 60).await;
    let id = submit(
        &h,
        &site,
        &image,
        json!({"AGENT_NOTE": "deployed by a test"}),
    )
    .await;
    let message = approval_message(&h, &id).await;
    for shown in [
        site.container().as_str(),
        image.as_str(),
        site.network.as_str(),
        "no-new-privileges",
        "\"ALL\"",
        "10001:10001",
        "AGENT_NOTE",
    ] {
        assert!(
            message.contains(shown),
            "{shown} not in the approval: {message}"
        );
    }
    assert!(!site.container_exists(), "created before the approval");
    let decided = h.decide(&id, "approve", "approve", "ship it").await;
    assert_eq!(decided.status, 200, "{decided:?}");
    let mission = h
        .wait_terminal(&id, "succeeded", Duration::from_secs(90))
        .await;
    assert_eq!(
        step_statuses(&mission)
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>(),
        ["validate", "approve", "create", "start", "health", "register"]
    );
    assert_eq!(mission["output"]["container"], site.container());

    // Locked down as the spec said.
    assert_eq!(inspect(&site, "{{.State.Status}}"), "running");
    assert_eq!(inspect(&site, "{{json .HostConfig.CapDrop}}"), "[\"ALL\"]");
    assert_eq!(inspect(&site, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert!(inspect(&site, "{{json .HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    assert_eq!(inspect(&site, "{{.HostConfig.Memory}}"), "268435456");
    assert_eq!(inspect(&site, "{{.HostConfig.PidsLimit}}"), "256");
    assert_eq!(inspect(&site, "{{.Config.User}}"), "10001:10001");
    assert_eq!(
        inspect(&site, "{{index .Config.Labels \"hypercode.agent\"}}"),
        site.agent
    );
    assert_eq!(
        inspect(&site, "{{index .Config.Labels \"hypercode.heal\"}}"),
        "true"
    );
    assert!(inspect(&site, "{{json .NetworkSettings.Networks}}").contains(&site.network));

    // Registered, heartbeating from the container with its own key, and answering.
    wait_live(&h, &[site.agent.as_str()]).await;
    let agent = listed(&h, &site.agent).await;
    assert_eq!(agent["capabilities"], json!(["upper", "echo"]));
    let plan = h
        .submit(
            json!([{"name": "shout", "agent": {"capability": "upper", "command": "hello from x"}}]),
        )
        .await;
    let plan = h
        .wait_terminal(&id_of(&plan), "succeeded", Duration::from_secs(30))
        .await;
    let shout = step(&plan, "shout");
    assert_eq!(shout["output"]["agent"], site.agent, "{shout}");
    assert_eq!(shout["output"]["output"], "HELLO FROM X");

    // The call secret the container was given is stored sealed, not as given.
    let env = inspect(&site, "{{json .Config.Env}}");
    let secret = serde_json::from_str::<Vec<String>>(&env)
        .expect("the container's environment")
        .into_iter()
        .find_map(|v| {
            v.strip_prefix("HYPERCODE_AGENT_CALL_SECRET=")
                .map(str::to_owned)
        })
        .expect("a call secret in the container's environment");
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect to the test database");
    let (plain, sealed): (Option<String>, Option<Vec<u8>>) =
        sqlx::query_as("select call_secret, call_secret_sealed from agents where name = $1")
            .bind(&site.agent)
            .fetch_one(&pool)
            .await
            .expect("the agent's row");
    assert_eq!(plain, None);
    let sealed = sealed.expect("a sealed call secret");
    assert!(
        !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the call secret is stored in plain text"
    );
}

#[tokio::test]
async fn a_rejected_deployment_creates_nothing() {
    let image = agent_image();
    let site = Site::new();
    let h = site.deployment(&image, 60).await;
    let id = submit(&h, &site, &image, json!({})).await;
    approval_message(&h, &id).await;
    let decided = h.decide(&id, "approve", "reject", "not this one").await;
    assert_eq!(decided.status, 200, "{decided:?}");
    let mission = h
        .wait_terminal(&id, "failed", Duration::from_secs(30))
        .await;
    assert_eq!(
        step_statuses(&mission),
        [("validate", "succeeded"), ("approve", "rejected")]
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    assert!(!site.container_exists(), "a container was created");
    assert_eq!(listed(&h, &site.agent).await, Value::Null);
}

#[tokio::test]
async fn an_agent_that_never_answers_health_is_removed_and_not_registered() {
    let image = agent_image();
    let site = Site::new();
    let h = site.deployment(&image, 3).await;
    // It listens on the container's loopback only: /health never answers from outside.
    let id = submit(
        &h,
        &site,
        &image,
        json!({"HYPERCODE_AGENT_LISTEN": "127.0.0.1:9000"}),
    )
    .await;
    approval_message(&h, &id).await;
    h.decide(&id, "approve", "approve", "try").await;
    let mission = h
        .wait_terminal(&id, "failed", Duration::from_secs(60))
        .await;
    let statuses = step_statuses(&mission);
    assert!(
        statuses.contains(&("create".to_owned(), "compensated".to_owned()))
            && statuses.contains(&("health".to_owned(), "failed".to_owned())),
        "{statuses:?}"
    );
    let health = step(&mission, "health");
    assert!(
        health["error"]
            .to_string()
            .contains("did not answer GET /health"),
        "{health}"
    );
    assert!(!site.container_exists(), "the container was left behind");
    assert_eq!(listed(&h, &site.agent).await, Value::Null);
    // The key it was given is revoked.
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect to the test database");
    let live: i64 =
        sqlx::query_scalar("select count(*) from api_keys where agent = $1 and revoked_at is null")
            .bind(&site.agent)
            .fetch_one(&pool)
            .await
            .expect("count the agent's keys");
    assert_eq!(live, 0);
}

#[tokio::test]
async fn without_docker_the_first_step_fails_clearly() {
    let (h, _) = deployment(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("HYPERCODE_AGENT_IMAGES", "hypercode-agent:local"),
    ])
    .await;
    let reply = h
        .submit_body(&json!({
            "workflow": "deploy_agent",
            "input": {"name": "nodocker", "image": "hypercode-agent:local", "capabilities": ["echo"]}
        }))
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let mission = h
        .wait_terminal(&id_of(&reply.body), "failed", Duration::from_secs(30))
        .await;
    let validate = step(&mission, "validate");
    assert_eq!(validate["status"], "failed", "{mission}");
    assert!(
        validate["error"].to_string().contains("Docker"),
        "{validate}"
    );
    // An image outside the allowlist is refused at submission.
    let refused = h
        .submit_body(&json!({
            "workflow": "deploy_agent",
            "input": {"name": "x", "image": "busybox", "capabilities": ["echo"]}
        }))
        .await;
    refused.problem(422);
    assert_eq!(refused.pointers(), ["/input/image"]);
}
