//! Static checks of writ's deployment material: the `Dockerfile`,
//! `docker-compose.yml` and `deploy/k8s/`. No Docker engine or cluster runs
//! where the tests do, so these prove what can be proven without one:
//!
//! * always: the image ships exactly the workspace's binaries; every service
//!   is probed, bounded and non-root; compose and Kubernetes wire the right
//!   config files, ports and consumer groups; every config, with the
//!   environment overrides compose and Kubernetes add, loads through its
//!   binary's own loader (unknown keys fail); the k8s config copies equal
//!   `deploy/config/`;
//! * with the test venv (`WRIT_TEST_PYTHON`, set by `tests/run.sh`): the
//!   compose file against the compose-spec schema, the rendered kustomization
//!   against the Kubernetes schemas, KEDA ScaledObjects against
//!   `deploy/k8s/schemas/`, and hadolint on the Dockerfile. Each validator is
//!   also shown a broken input, so a validator that accepts anything fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde_json::Value;
use writ_worker::{Profile, WorkerConfig};

// ---------------------------------------------------------------- reading

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file under the repository root, or a panic naming it.
fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file as JSON (merge keys `<<:` applied, empty documents dropped).
fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            let mut v = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}"));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{what}: bad merge key: {e}"));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{what}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `docker-compose.yml`, merge keys applied.
fn compose() -> Value {
    let mut docs = yaml_docs(&read("docker-compose.yml"), "docker-compose.yml");
    assert_eq!(docs.len(), 1, "docker-compose.yml must be one document");
    docs.remove(0)
}

/// `deploy/k8s/kustomization.yaml`.
fn kustomization() -> Value {
    yaml_docs(&read("deploy/k8s/kustomization.yaml"), "kustomization.yaml").remove(0)
}

/// Every resource the kustomization lists, as (file, document).
fn k8s_resources() -> Vec<(String, Value)> {
    let k = kustomization();
    let mut out = Vec::new();
    for file in strings(&k["resources"]) {
        let rel = format!("deploy/k8s/{file}");
        for doc in yaml_docs(&read(&rel), &rel) {
            out.push((rel.clone(), doc));
        }
    }
    out
}

/// The resources of one kind.
fn of_kind<'a>(resources: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    resources
        .iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

/// A YAML list of strings (empty when absent).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a list of strings").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.name`.
fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().expect("metadata.name")
}

/// Does `selector` (matchLabels) select pods labelled `labels`?
fn selects(selector: &Value, labels: &Value) -> bool {
    let want = selector.as_object().expect("a label map");
    !want.is_empty() && want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------- the Dockerfile

/// One `FROM ... AS name` stage and the instructions in it.
#[derive(Debug, Default)]
struct Stage {
    from: String,
    name: String,
    lines: Vec<String>,
}

impl Stage {
    /// The arguments of the stage's last `op` instruction (the one that wins).
    fn instruction(&self, op: &str) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(op).filter(|r| r.starts_with(' ')))
            .map(str::trim)
    }
}

/// The Dockerfile's stages, with line continuations joined and comments dropped.
fn dockerfile_stages() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let name = match parts.as_slice() {
                [from, as_, name] if as_.eq_ignore_ascii_case("as") => (*from, *name),
                [from] => (*from, ""),
                _ => panic!("Dockerfile: cannot read `{line}`"),
            };
            stages.push(Stage {
                from: name.0.to_owned(),
                name: name.1.to_owned(),
                lines: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push(line);
        }
    }
    stages
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("Dockerfile has no `{name}` stage"))
}

/// `ARG WRIT_BINARIES="..."`: the binaries the image build copies by name.
fn dockerfile_binaries() -> BTreeSet<String> {
    let stages = dockerfile_stages();
    let line = stages
        .iter()
        .flat_map(|s| &s.lines)
        .find_map(|l| l.strip_prefix("ARG WRIT_BINARIES="))
        .expect("Dockerfile declares ARG WRIT_BINARIES");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The `[[bin]]` targets of every workspace crate (explicit ones, plus Cargo's
/// auto-discovered `src/main.rs` and `src/bin/*.rs`).
fn workspace_binaries() -> BTreeSet<String> {
    let mut bins = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = entry.expect("crates/ entry").path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let manifest: toml::Table = manifest
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let package = manifest["package"]["name"].as_str().expect("package.name");
        // Test tools (`[package.metadata.writ] ship = false`) are not deployed.
        let shipped = manifest["package"]
            .get("metadata")
            .and_then(|m| m.get("writ"))
            .and_then(|w| w.get("ship"))
            .and_then(|s| s.as_bool())
            .unwrap_or(true);
        if !shipped {
            continue;
        }
        let explicit: Vec<&toml::Value> = manifest
            .get("bin")
            .and_then(|b| b.as_array())
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let mut paths = BTreeSet::new();
        for bin in &explicit {
            let bin_name = bin["name"].as_str().expect("[[bin]] name").to_owned();
            let path = bin
                .get("path")
                .and_then(|p| p.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("src/bin/{bin_name}.rs"));
            paths.insert(path);
            bins.insert(bin_name);
        }
        let autobins = manifest["package"]
            .get("autobins")
            .and_then(|a| a.as_bool())
            .unwrap_or(true);
        if !autobins {
            continue;
        }
        if dir.join("src/main.rs").exists() && !paths.contains("src/main.rs") {
            bins.insert(package.to_owned());
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for e in entries {
                let p = e.expect("src/bin entry").path();
                let rel = format!("src/bin/{}", p.file_name().unwrap().to_string_lossy());
                if p.extension().is_some_and(|x| x == "rs") && !paths.contains(&rel) {
                    bins.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    bins
}

/// The deployable targets: Dockerfile stage -> (binary, port its probes listen on).
const SERVICE_TARGETS: [(&str, &str, u16); 3] = [
    ("worker", "writ-worker", 9464),
    ("ingress", "writ-ingress", 8080),
    ("edge", "writ-edge", 8090),
];

#[test]
fn the_image_ships_exactly_the_workspace_binaries() {
    let shipped = dockerfile_binaries();
    let built = workspace_binaries();
    assert!(
        built.contains("writ") && built.contains("writ-worker"),
        "{built:?}"
    );
    assert_eq!(
        shipped, built,
        "ARG WRIT_BINARIES in the Dockerfile must list every workspace binary, and only those"
    );
    let stages = dockerfile_stages();
    for s in &stages {
        if let Some(ep) = s.instruction("ENTRYPOINT") {
            let ep: Vec<String> = serde_json::from_str(ep)
                .unwrap_or_else(|e| panic!("stage {}: ENTRYPOINT must be exec form: {e}", s.name));
            assert!(
                shipped.contains(&ep[0]),
                "stage {} runs {}, which the image does not ship",
                s.name,
                ep[0]
            );
        }
    }
}

#[test]
fn every_image_target_runs_as_non_root_and_services_have_a_healthcheck() {
    let stages = dockerfile_stages();
    let runtime = stage(&stages, "runtime");
    assert!(
        runtime.from.starts_with("debian:") && runtime.from.contains("-slim"),
        "the runtime image is a slim Debian, got {}",
        runtime.from
    );
    // Numeric, so Kubernetes can verify runAsNonRoot; matches the manifests' runAsUser.
    assert_eq!(runtime.instruction("USER"), Some("10001:10001"));
    // The build stage's toolchain never reaches a deployable image.
    assert!(stage(&stages, "build").from.starts_with("rust:"));
    for (target, binary, port) in SERVICE_TARGETS {
        let s = stage(&stages, target);
        assert_eq!(s.from, "runtime", "{target} builds on the runtime stage");
        let ep: Vec<String> = serde_json::from_str(s.instruction("ENTRYPOINT").unwrap()).unwrap();
        assert_eq!(ep, [binary], "{target}'s entrypoint");
        assert_eq!(s.instruction("EXPOSE"), Some(port.to_string().as_str()));
        let hc = s
            .instruction("HEALTHCHECK")
            .unwrap_or_else(|| panic!("{target} has no HEALTHCHECK"));
        assert!(
            hc.contains(&format!("http://127.0.0.1:{port}/readyz")),
            "{target}'s HEALTHCHECK probes /readyz on its port: {hc}"
        );
    }
    // `docker build .` without --target yields the CLI.
    let last = stages.last().unwrap();
    assert_eq!(last.name, "writ");
    assert_eq!(last.instruction("HEALTHCHECK"), Some("NONE"));
}

// ---------------------------------------------------------------- configs and overrides

/// Layers `WRIT__SECTION__KEY` overrides onto a TOML file the way the
/// binaries' figment `Env::prefixed("WRIT__").split("__")` does (keys
/// lowercased, values parsed as figment values), and returns the merged TOML.
fn with_env_overrides(toml_text: &str, env: &BTreeMap<String, String>, what: &str) -> String {
    let mut figment = Figment::from(Toml::string(toml_text));
    for (key, value) in env {
        let Some(path) = key.strip_prefix("WRIT__") else {
            continue;
        };
        let path = path.to_ascii_lowercase().replace("__", ".");
        let value: figment::value::Value = value.parse().expect("infallible");
        figment = figment.merge(Serialized::default(&path, value));
    }
    let merged: toml::Table = figment
        .extract()
        .unwrap_or_else(|e| panic!("{what}: cannot merge overrides: {e}"));
    toml::to_string(&merged).unwrap()
}

fn load_worker(config_rel: &str, env: &BTreeMap<String, String>, what: &str) -> WorkerConfig {
    let merged = with_env_overrides(&read(config_rel), env, what);
    WorkerConfig::from_toml(&merged).unwrap_or_else(|e| panic!("{what} ({config_rel}): {e}"))
}

/// What every service's configuration says, read through the binary's own loader.
struct Loaded {
    listen: SocketAddr,
    bootstrap_servers: String,
    registry_url: Option<String>,
    /// Where the service keeps a SQLite file, which must be a writable volume
    /// (the root filesystem is read-only).
    state_dir: Option<PathBuf>,
    /// The worker's full configuration.
    worker: Option<WorkerConfig>,
}

/// The directory of a `sqlite:` URL's file (`None` for memory or other databases).
fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap();
    if path.is_empty() || path.starts_with(':') {
        return None;
    }
    Path::new(path).parent().map(Path::to_path_buf)
}

/// Loads `config_rel` with `env` layered on top the way `binary` does at
/// start-up: unknown keys and inconsistent values fail here, not in a pod.
fn load_config(
    binary: &str,
    config_rel: &str,
    env: &BTreeMap<String, String>,
    what: &str,
) -> Loaded {
    let merged = with_env_overrides(&read(config_rel), env, what);
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{what} ({config_rel}): {e}") };
    match binary {
        "writ-worker" => {
            let c = WorkerConfig::from_toml(&merged).unwrap_or_else(|e| fail(&e));
            Loaded {
                listen: c.listen,
                bootstrap_servers: c.kafka.bootstrap_servers.clone(),
                registry_url: c.registry_url.clone(),
                state_dir: match &c.master {
                    writ_store::MasterConfig::Sqlite(m) => sqlite_dir(&m.url),
                    _ => None,
                },
                worker: Some(c),
            }
        }
        "writ-ingress" => {
            let c = writ_ingress::IngressConfig::from_toml(&merged).unwrap_or_else(|e| fail(&e));
            Loaded {
                listen: c.listen,
                bootstrap_servers: c.kafka.bootstrap_servers,
                registry_url: c.schemas.registry_url,
                state_dir: c
                    .store
                    .path
                    .as_deref()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf),
                worker: None,
            }
        }
        "writ-edge" => {
            let c = writ_edge::EdgeConfig::from_toml(&merged).unwrap_or_else(|e| fail(&e));
            Loaded {
                listen: c.listen,
                bootstrap_servers: c.kafka.bootstrap_servers,
                registry_url: c.registry_url,
                state_dir: sqlite_dir(&c.store.url),
                worker: None,
            }
        }
        other => panic!("{what}: no config loader for {other}"),
    }
}

#[test]
fn k8s_config_copies_are_identical_to_deploy_config() {
    let list = |rel: &str| -> BTreeSet<String> {
        std::fs::read_dir(root().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect()
    };
    let originals = list("deploy/config");
    let copies = list("deploy/k8s/config");
    assert_eq!(
        originals, copies,
        "deploy/k8s/config/ must hold a copy of every deploy/config/*.toml: run deploy/k8s/sync-config.sh"
    );
    for f in &originals {
        assert!(
            read(&format!("deploy/config/{f}")) == read(&format!("deploy/k8s/config/{f}")),
            "deploy/k8s/config/{f} differs from deploy/config/{f}: run deploy/k8s/sync-config.sh"
        );
    }
    // And the kustomization generates its ConfigMaps from exactly those copies.
    let generated: BTreeSet<String> = kustomization()["configMapGenerator"]
        .as_array()
        .expect("configMapGenerator")
        .iter()
        .flat_map(|g| strings(&g["files"]))
        .map(|f| {
            let src = f.split_once('=').map_or(f.as_str(), |(_, s)| s);
            src.strip_prefix("config/")
                .unwrap_or_else(|| panic!("{src} is not under config/"))
                .to_owned()
        })
        .collect();
    let needed: BTreeSet<String> = copies.into_iter().collect();
    assert_eq!(generated, needed, "every config copy feeds one ConfigMap");
}

// ---------------------------------------------------------------- docker-compose.yml

/// compose service -> the Dockerfile target it builds (writ's own services).
fn compose_writ_services(c: &Value) -> BTreeMap<String, String> {
    c["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(n, s)| {
            s["build"]["target"]
                .as_str()
                .map(|t| (n.clone(), t.to_owned()))
        })
        .collect()
}

fn compose_env(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bind mounts of a service: (host path relative to the root, container path).
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    strings(&service["volumes"])
        .into_iter()
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap().trim_start_matches("./").to_owned();
            let container = parts.next().expect("a container path").to_owned();
            (host, container)
        })
        .collect()
}

#[test]
fn compose_runs_the_whole_stack_in_dependency_order() {
    let c = compose();
    let services = c["services"].as_object().expect("services");
    for required in [
        "kafka",
        "schema-registry",
        "postgres",
        "topics-init",
        "ingress",
        "worker-interactive",
        "worker-bulk",
        "edge",
    ] {
        assert!(
            services.contains_key(required),
            "missing service {required}"
        );
    }
    assert!(
        !services.keys().any(|k| k.contains("zookeeper")),
        "Kafka runs in KRaft mode"
    );
    let kafka = &services["kafka"];
    assert!(kafka["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    let roles = kafka["environment"]["KAFKA_PROCESS_ROLES"]
        .as_str()
        .unwrap();
    assert!(roles.contains("controller") && roles.contains("broker"));
    assert_eq!(
        kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"],
        "false"
    );

    let stages = dockerfile_stages();
    let image_has_healthcheck = |svc: &Value| {
        svc["build"]["target"]
            .as_str()
            .map(|t| stage(&stages, t).instruction("HEALTHCHECK"))
            .is_some_and(|hc| hc.is_some_and(|h| h != "NONE"))
    };
    for (svc_name, svc) in services {
        for (host, _) in bind_mounts(svc) {
            assert!(
                root().join(&host).exists(),
                "{svc_name} mounts ./{host}, which does not exist"
            );
        }
        if let Some(target) = svc["build"]["target"].as_str() {
            stage(&stages, target);
            assert_eq!(
                svc["build"]["context"], ".",
                "{svc_name} builds the top-level Dockerfile"
            );
        }
        let Some(deps) = svc["depends_on"].as_object() else {
            continue;
        };
        for (dep, cond) in deps {
            let d = services
                .get(dep)
                .unwrap_or_else(|| panic!("{svc_name} depends on unknown service {dep}"));
            match cond["condition"].as_str() {
                Some("service_healthy") => assert!(
                    d.get("healthcheck").is_some() || image_has_healthcheck(d),
                    "{svc_name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                Some("service_completed_successfully") => assert_eq!(
                    d["restart"], "no",
                    "{dep} is a one-shot and must not restart"
                ),
                other => panic!(
                    "{svc_name} -> {dep}: use a health or completion condition, not {other:?}"
                ),
            }
        }
    }
    // Every long-running writ service starts only after the topics exist.
    for (svc_name, target) in compose_writ_services(&c) {
        if target == "writ" {
            continue;
        }
        assert_eq!(
            services[&svc_name]["depends_on"]["topics-init"]["condition"],
            "service_completed_successfully",
            "{svc_name} must wait for topics-init"
        );
        assert!(image_has_healthcheck(&services[&svc_name]), "{svc_name}");
    }
    let workers = ["worker-interactive", "worker-bulk"];
    for w in workers {
        assert_eq!(
            services[w]["depends_on"]["postgres"]["condition"], "service_healthy",
            "{w} applies to PostgreSQL"
        );
    }
    // The master schema is loaded by PostgreSQL's init scripts.
    assert!(bind_mounts(&services["postgres"])
        .iter()
        .any(|(h, c)| h == "deploy/config/master.sql"
            && c.starts_with("/docker-entrypoint-initdb.d/")));
}

#[test]
fn compose_services_get_their_config_and_publish_their_probe_ports() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    let mut profiles = BTreeSet::new();
    let mut registries = BTreeMap::new();
    for (svc_name, target) in compose_writ_services(&c) {
        let svc = &services[&svc_name];
        let env = compose_env(svc);
        if target == "writ" {
            // The one-shot: `writ topics init` for the domain the workers consume.
            let cmd = strings(&svc["command"]);
            assert_eq!(cmd[..2], ["topics", "init"], "{svc_name}: {cmd:?}");
            assert!(env.contains_key("WRIT__KAFKA__BOOTSTRAP_SERVERS"));
            continue;
        }
        let (_, binary, port) = SERVICE_TARGETS
            .iter()
            .find(|(t, ..)| *t == target)
            .unwrap_or_else(|| panic!("{svc_name} builds unknown target {target}"));
        let config_path = format!("/etc/writ/{}.toml", target);
        let (host, _) = bind_mounts(svc)
            .into_iter()
            .find(|(_, c)| *c == config_path)
            .unwrap_or_else(|| panic!("{svc_name} must mount its config at {config_path}"));
        let what = format!("compose service {svc_name}");
        let cfg = load_config(binary, &host, &env, &what);
        assert_eq!(
            cfg.listen.port(),
            *port,
            "{what}: listens where the image probes"
        );
        assert_eq!(
            cfg.bootstrap_servers, "kafka:9092",
            "{what}: reaches Kafka on the compose network"
        );
        registries.insert(svc_name.clone(), cfg.registry_url.clone());
        if let Some(dir) = &cfg.state_dir {
            assert!(
                strings(&svc["volumes"])
                    .iter()
                    .any(|v| v.split(':').nth(1) == Some(dir.to_str().unwrap())),
                "{what}: {} holds its SQLite file and must be a volume (read_only root)",
                dir.display()
            );
        }
        if let Some(w) = &cfg.worker {
            let stop = svc["stop_grace_period"]
                .as_str()
                .expect("stop_grace_period");
            let stop_ms: u64 = stop.trim_end_matches('s').parse::<u64>().unwrap() * 1000;
            assert!(
                stop_ms > w.drain_timeout_ms,
                "{what}: stop_grace_period {stop} must exceed drain_timeout_ms {}",
                w.drain_timeout_ms
            );
            profiles.insert(w.profile.as_str());
        }
        // Host port mappings point at the port the service listens on.
        for p in strings(&svc["ports"]) {
            let container: u16 = p.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(container, *port, "{what}: publishes {p}");
        }
    }
    assert_eq!(
        profiles,
        BTreeSet::from(["interactive", "bulk"]),
        "one worker per profile"
    );
    assert_one_registry_setting(&registries);
}

/// With a registry, Avro carries Confluent framing; a service configured
/// without one cannot read what the others write, so all agree.
fn assert_one_registry_setting(registries: &BTreeMap<String, Option<String>>) {
    let distinct: BTreeSet<&Option<String>> = registries.values().collect();
    assert_eq!(
        distinct.len(),
        1,
        "every writ service must use the same Schema Registry (or none): {registries:?}"
    );
}

// ---------------------------------------------------------------- deploy/k8s

#[test]
fn kustomization_lists_every_manifest_and_each_exists() {
    let listed: BTreeSet<String> = strings(&kustomization()["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "a manifest not in kustomization.yaml is never applied"
    );
}

/// The pod spec of a workload's template.
fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Restricted-profile pod: non-root as the image's uid, no privilege, bounded resources.
fn assert_hardened(what: &str, pod: &Value) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}: pod runAsNonRoot");
    assert_eq!(psc["runAsUser"], 10001, "{what}: the image's uid");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{what}: no API access needed"
    );
    for c in pod["containers"].as_array().expect("containers") {
        let cname = format!("{what}/{}", c["name"].as_str().unwrap());
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{cname}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{cname}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{cname}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{cname}"
        );
        let r = &c["resources"];
        for (section, key) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                r[section][key].is_string(),
                "{cname}: resources.{section}.{key}"
            );
        }
    }
}

/// The ConfigMap generator's file for a ConfigMap name.
fn generated_config(name: &str) -> String {
    let k = kustomization();
    let g = k["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no configMapGenerator named {name}"));
    let files = strings(&g["files"]);
    assert_eq!(files.len(), 1, "{name}: one config file per ConfigMap");
    let src = files[0]
        .split_once('=')
        .map_or(files[0].as_str(), |(_, s)| s);
    format!("deploy/k8s/{src}")
}

/// Environment a container gets: literal values as given; values from Secrets
/// and the downward API as plausible stand-ins (they are only known in the cluster).
fn k8s_env(container: &Value, what: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            assert!(
                key.ends_with("__URL"),
                "{what}: secret {key} is expected to be a connection URL"
            );
            "postgres://writ:from-a-secret@db:5432/master".to_owned()
        } else if e["valueFrom"]["fieldRef"].is_object() {
            "pod-0".to_owned()
        } else {
            panic!("{what}: cannot read env {key}: {e}")
        };
        env.insert(key, value);
    }
    env
}

#[test]
fn every_k8s_workload_is_probed_bounded_non_root_and_covered() {
    let res = k8s_resources();
    let deployments = of_kind(&res, "Deployment");
    let images: BTreeMap<&str, (&str, u16)> = SERVICE_TARGETS
        .iter()
        .map(|(t, b, p)| (*b, (*t, *p)))
        .collect();
    assert_eq!(deployments.len(), 4, "ingress, two workers, edge");
    let mut binaries = BTreeSet::new();
    let mut registries = BTreeMap::new();
    let mut bootstraps = BTreeSet::new();
    for d in &deployments {
        let what = format!("Deployment {}", name(d));
        let pod = pod_spec(d);
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&d["spec"]["selector"]["matchLabels"], labels),
            "{what}: selector matches its pods"
        );
        assert_hardened(&what, pod);
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{what}: one container");
        let c = &containers[0];
        let image = c["image"].as_str().unwrap();
        let (_, port) = images
            .get(image)
            .unwrap_or_else(|| panic!("{what}: image {image} is not a writ service image"));
        binaries.insert(image);
        let ports = c["ports"].as_array().expect("containerPorts");
        assert_eq!(ports.len(), 1, "{what}");
        assert_eq!(ports[0]["containerPort"], *port, "{what}: the image's port");
        let port_name = ports[0]["name"].as_str().unwrap();
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let p = &c[probe]["httpGet"];
            assert_eq!(p["path"], path, "{what}: {probe}");
            assert_eq!(p["port"], port_name, "{what}: {probe} port");
        }
        // Exactly one Service and one PodDisruptionBudget select these pods.
        for kind in ["Service", "PodDisruptionBudget"] {
            let n = of_kind(&res, kind)
                .iter()
                .filter(|o| {
                    let sel = if kind == "Service" {
                        &o["spec"]["selector"]
                    } else {
                        &o["spec"]["selector"]["matchLabels"]
                    };
                    selects(sel, labels)
                })
                .count();
            assert_eq!(n, 1, "{what}: {n} {kind}s select it");
        }
        // The config comes from a generated ConfigMap, mounted where the image's CMD reads it.
        let cm = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v["configMap"]["name"].as_str())
            .unwrap_or_else(|| panic!("{what}: no config volume"));
        let config_rel = generated_config(cm);
        let args = strings(&c["args"]);
        let mounted = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["subPath"].is_string())
            .expect("a config mount");
        assert_eq!(
            args,
            ["--config", mounted["mountPath"].as_str().unwrap()],
            "{what}"
        );
        let env = k8s_env(c, &what);
        let cfg = load_config(image, &config_rel, &env, &what);
        assert_eq!(
            cfg.listen.port(),
            *port,
            "{what}: listens on its containerPort"
        );
        registries.insert(name(d).to_owned(), cfg.registry_url.clone());
        bootstraps.insert(cfg.bootstrap_servers.clone());
        if let Some(dir) = &cfg.state_dir {
            assert!(
                c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == dir.to_str().unwrap()),
                "{what}: {} holds its SQLite file and must be a volume (read-only root)",
                dir.display()
            );
        }
        if let Some(w) = &cfg.worker {
            let grace = pod["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("grace period");
            assert!(
                grace * 1000 > w.drain_timeout_ms,
                "{what}: terminationGracePeriodSeconds {grace} must exceed drain_timeout_ms"
            );
            assert!(
                env.contains_key("WRIT__MASTER__URL"),
                "{what}: master URL from a Secret"
            );
        }
    }
    assert_one_registry_setting(&registries);
    assert_eq!(bootstraps.len(), 1, "one Kafka cluster: {bootstraps:?}");
    assert_eq!(
        binaries,
        images.keys().copied().collect(),
        "every service binary is deployed"
    );
    for job in of_kind(&res, "Job") {
        assert_hardened(&format!("Job {}", name(job)), pod_spec(job));
    }
}

/// Partitions `writ topics init` gives the command and bulk topics in the k8s Job.
fn job_partitions(res: &[(String, Value)]) -> (String, u64) {
    let job = of_kind(res, "Job")
        .into_iter()
        .find(|j| name(j) == "writ-topics-init")
        .expect("the topics-init Job");
    let args = strings(&pod_spec(job)["containers"][0]["args"]);
    let flag = |f: &str| -> String {
        let i = args
            .iter()
            .position(|a| a == f)
            .unwrap_or_else(|| panic!("{f} in {args:?}"));
        args[i + 1].clone()
    };
    assert_eq!(args[..2], ["topics", "init"]);
    (flag("--domain"), flag("--partitions").parse().unwrap())
}

#[test]
fn worker_autoscaling_watches_the_group_and_topic_the_worker_consumes() {
    let res = k8s_resources();
    let (domain, partitions) = job_partitions(&res);
    let scaled = of_kind(&res, "ScaledObject");
    assert!(!scaled.is_empty(), "workers scale on consumer lag");
    for so in scaled {
        let what = format!("ScaledObject {}", name(so));
        let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
        let d = of_kind(&res, "Deployment")
            .into_iter()
            .find(|d| name(d) == target)
            .unwrap_or_else(|| panic!("{what} scales unknown Deployment {target}"));
        assert!(
            d["spec"].get("replicas").is_none(),
            "{what}: {target} must leave `replicas` to the autoscaler"
        );
        let c = &pod_spec(d)["containers"][0];
        let cm = pod_spec(d)["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v["configMap"]["name"].as_str())
            .unwrap();
        let cfg = load_worker(&generated_config(cm), &k8s_env(c, &what), &what);
        assert_eq!(
            cfg.domain, domain,
            "{what}: the Job creates this domain's topics"
        );
        assert_eq!(
            cfg.profile,
            Profile::Interactive,
            "{what}: the bulk worker's rate is per process; autoscaling it would multiply the master's load"
        );
        let layout = writ_core::TopicLayout::new(&cfg.domain).unwrap();
        let min = so["spec"]["minReplicaCount"].as_u64().unwrap();
        let max = so["spec"]["maxReplicaCount"].as_u64().unwrap();
        assert!(
            (2..=partitions).contains(&min) && (min..=partitions).contains(&max),
            "{what}: 2 <= min ({min}) <= max ({max}) <= partitions ({partitions}); a member past the partition count idles"
        );
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        let kafka = triggers
            .iter()
            .find(|t| t["type"] == "kafka")
            .expect("a kafka trigger");
        let m = &kafka["metadata"];
        assert_eq!(
            m["consumerGroup"],
            cfg.group_id(),
            "{what}: the worker's group"
        );
        assert_eq!(m["topic"], layout.commands(), "{what}: the worker's topic");
        assert_eq!(
            m["bootstrapServers"], cfg.kafka.bootstrap_servers,
            "{what}: the cluster the worker uses"
        );
    }
    // The bulk worker is not autoscaled and has a fixed, documented replica count.
    let bulk = of_kind(&res, "Deployment")
        .into_iter()
        .find(|d| name(d) == "writ-worker-bulk")
        .expect("the bulk worker");
    assert_eq!(bulk["spec"]["replicas"], 1);
    assert_eq!(
        bulk["spec"]["strategy"]["type"], "Recreate",
        "never two bulk members at once"
    );
}

// ---------------------------------------------------------------- external validators

/// The test venv's interpreter, or `None` with the reason printed.
fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("WRIT_TEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "{test}: skipped: WRIT_TEST_PYTHON is not set (tests/run.sh sets it and installs the validators)"
            );
            None
        }
    }
}

/// A program installed into the test venv by a wheel (`bin/` of a venv, or
/// `site/bin/` of the `pip --target` fallback). The venv interpreter is not
/// canonicalized: it is a symlink into the system Python.
fn venv_tool(py: &Path, tool: &str) -> PathBuf {
    let bin = py.parent().expect("venv bin/");
    [bin.join(tool), bin.join("../site/bin").join(tool)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{tool} is not installed next to {}; rerun tests/run.sh (it installs PY_PKGS)",
                py.display()
            )
        })
}

/// Runs a command; returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check_jsonschema(py: &Path, schema: &[&str], file: &Path) -> (bool, String) {
    run(Command::new(py)
        .args(["-m", "check_jsonschema"])
        .args(schema)
        .arg(file))
}

#[test]
fn compose_file_matches_the_compose_spec() {
    let Some(py) = python("compose_file_matches_the_compose_spec") else {
        return;
    };
    // check-jsonschema vendors the compose-spec schema: no network needed.
    let spec = ["--builtin-schema", "vendor.compose-spec"];
    let (ok, out) = check_jsonschema(&py, &spec, &root().join("docker-compose.yml"));
    assert!(
        ok,
        "docker-compose.yml does not match the compose spec:\n{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("compose.yml");
    std::fs::write(
        &bad,
        "services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: when_ready\n",
    )
    .unwrap();
    let (ok, out) = check_jsonschema(&py, &spec, &bad);
    assert!(
        !ok,
        "the compose validator accepted an unknown depends_on condition:\n{out}"
    );
}

#[test]
fn k8s_manifests_render_and_match_the_kubernetes_and_keda_schemas() {
    let Some(py) = python("k8s_manifests_render_and_match_the_kubernetes_and_keda_schemas") else {
        return;
    };
    let kubectl = venv_tool(&py, "kubectl");
    // `kubectl kustomize` renders offline; it also proves the generator's
    // files are inside the kustomization root (the load restrictor).
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(root().join("deploy/k8s"))
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/k8s failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).expect("UTF-8 manifests");
    let docs = yaml_docs(&rendered, "rendered kustomization");

    // Generated ConfigMaps carry a content hash, and the Deployments were rewritten to it.
    let configmaps: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(name)
        .collect();
    let generators: Vec<String> = kustomization()["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(configmaps.len(), generators.len(), "{configmaps:?}");
    for g in &generators {
        assert!(
            configmaps.iter().any(|cm| cm
                .strip_prefix(&format!("{g}-"))
                .is_some_and(|hash| hash.len() == 10)),
            "no hash-suffixed ConfigMap for generator {g}: {configmaps:?}"
        );
    }
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let cm = pod_spec(d)["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v["configMap"]["name"].as_str())
            .unwrap();
        assert!(
            configmaps.contains(cm),
            "{} mounts {cm}, which is not rendered",
            name(d)
        );
        assert_eq!(d["metadata"]["namespace"], "writ");
    }

    let dir = tempfile::tempdir().unwrap();
    let (keda, core): (Vec<&Value>, Vec<&Value>) = docs
        .iter()
        .partition(|d| d["apiVersion"] == "keda.sh/v1alpha1");
    assert!(!keda.is_empty() && core.len() > 10);

    // Everything but the CRDs, strictly (unknown fields are errors).
    let core_file = dir.path().join("core.json");
    // JSON is YAML: one document per resource.
    let mut yaml = String::new();
    for d in &core {
        yaml.push_str("---\n");
        yaml.push_str(&serde_json::to_string(d).unwrap());
        yaml.push('\n');
    }
    std::fs::write(&core_file, yaml).unwrap();
    let (ok, out) = run(Command::new(&py)
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&core_file));
    assert!(ok, "Kubernetes schema validation failed:\n{out}");
    assert!(
        !out.contains("WARN"),
        "every non-CRD manifest must have a schema:\n{out}"
    );

    // KEDA ScaledObjects: the schema in deploy/k8s/schemas (kubernetes-validate has no CRDs).
    let schema = root().join("deploy/k8s/schemas/keda-scaledobject.schema.json");
    let schema_arg = ["--schemafile", schema.to_str().unwrap()];
    for (i, so) in keda.iter().enumerate() {
        assert_eq!(so["kind"], "ScaledObject", "the only KEDA kind writ uses");
        let f = dir.path().join(format!("scaledobject-{i}.json"));
        std::fs::write(&f, serde_json::to_string(so).unwrap()).unwrap();
        let (ok, out) = check_jsonschema(&py, &schema_arg, &f);
        assert!(
            ok,
            "{} does not match the ScaledObject schema:\n{out}",
            name(so)
        );
    }

    // The validators reject what a cluster would: an unquoted number in KEDA
    // metadata, a misspelled field in a Deployment.
    let mut bad_so = keda[0].clone();
    bad_so["spec"]["triggers"][0]["metadata"]["lagThreshold"] = serde_json::json!(400);
    let f = dir.path().join("bad-scaledobject.json");
    std::fs::write(&f, bad_so.to_string()).unwrap();
    assert!(
        !check_jsonschema(&py, &schema_arg, &f).0,
        "numeric lagThreshold accepted"
    );
    let mut bad_deploy = (*core.iter().find(|d| d["kind"] == "Deployment").unwrap()).clone();
    bad_deploy["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] =
        serde_json::json!({});
    let f = dir.path().join("bad-deployment.json");
    std::fs::write(&f, bad_deploy.to_string()).unwrap();
    let (ok, out) = run(Command::new(&py)
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&f));
    assert!(!ok, "a misspelled container field was accepted:\n{out}");
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(py) = python("dockerfile_passes_hadolint") else {
        return;
    };
    let hadolint = venv_tool(&py, "hadolint");
    // Default failure threshold: any finding, info included, fails.
    let (ok, out) = run(Command::new(&hadolint).arg(root().join("Dockerfile")));
    assert!(ok, "hadolint findings in the Dockerfile:\n{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian\nRUN apt-get update && apt-get install -y curl\n",
    )
    .unwrap();
    let (ok, out) = run(Command::new(&hadolint).arg(&bad));
    assert!(
        !ok && out.contains("DL3006"),
        "hadolint accepted an untagged base image:\n{out}"
    );
}
