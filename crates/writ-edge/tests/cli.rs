//! The `writ-edge` binary: `--check` accepts the shipped deployment config
//! and refuses bad ones with the reason; `reconcile` explains what it needs.

use std::process::Command;

fn edge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_writ-edge"));
    // The environment layer must not leak into these runs.
    for (k, _) in std::env::vars() {
        if k.starts_with("WRIT__") || k == "WRIT_CONFIG" {
            c.env_remove(k);
        }
    }
    c
}

fn config(body: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, body.as_bytes()).unwrap();
    f
}

const MINIMAL: &str = r#"
domain = "customers"
[kafka]
bootstrap_servers = "127.0.0.1:9"
[collections.customers]
command_type = "customer.upsert.v1"
key_field = "customer_id"
"#;

#[test]
fn check_accepts_the_shipped_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/config/edge.toml");
    let out = edge().args(["--config", path, "--check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration ok"), "{stdout}");
}

#[test]
fn check_refuses_bad_configs_with_the_reason() {
    for (body, expected) in [
        (format!("{MINIMAL}\nlisen = \"x\"\n"), "lisen"),
        (
            MINIMAL.replace("customer.upsert.v1", "customer.upsert.v9"),
            "customer.upsert.v9",
        ),
        (
            format!("{MINIMAL}\nconflict = \"master-wins\"\n"),
            "[master]",
        ),
    ] {
        let f = config(&body);
        let out = edge()
            .args(["--config", f.path().to_str().unwrap(), "--check"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    let out = edge()
        .args(["--config", "/no/such/edge.toml", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn environment_variables_override_the_file() {
    let f = config(MINIMAL);
    let out = edge()
        .args(["--config", f.path().to_str().unwrap(), "--check"])
        .env("WRIT__COLLECTIONS__CUSTOMERS__CONFLICT", "sideways")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sideways"));
}

#[test]
fn reconcile_needs_a_master() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{MINIMAL}\n[store]\nurl = \"sqlite://{}?mode=rwc\"\n",
        dir.path().join("edge.db").display()
    );
    let f = config(&body);
    let out = edge()
        .args([
            "--config",
            f.path().to_str().unwrap(),
            "reconcile",
            "--collection",
            "customers",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[master]"), "{stderr}");
    let out = edge()
        .args([
            "--config",
            f.path().to_str().unwrap(),
            "reconcile",
            "--collection",
            "orders",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("orders"));
}
