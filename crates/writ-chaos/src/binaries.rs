//! Finds the writ binaries the harness spawns. They are looked up next to the
//! running executable, because that is where cargo puts them: `target/<profile>/`
//! for `cargo run`, and one level up from `target/<profile>/deps/` for tests.

use std::path::{Path, PathBuf};

use crate::error::ChaosError;

/// The worker binary's file name.
pub const WORKER: &str = "writ-worker";
/// The ingress binary's file name.
pub const INGRESS: &str = "writ-ingress";
/// The CLI binary's file name (`writ dlq replay`).
pub const CLI: &str = "writ";

/// Paths of every binary a run spawns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `writ-worker`.
    pub worker: PathBuf,
    /// `writ-ingress`.
    pub ingress: PathBuf,
    /// `writ`.
    pub cli: PathBuf,
}

impl Binaries {
    /// Looks in `dir` when given, else next to the current executable.
    pub fn locate(dir: Option<&Path>) -> Result<Self, ChaosError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => {
                let exe = std::env::current_exe().map_err(|e| ChaosError::Io {
                    what: "locating the current executable".into(),
                    source: e,
                })?;
                default_dir(&exe)
            }
        };
        Self::in_dir(&dir)
    }

    /// The binaries in `dir`; every missing one is named in the error.
    pub fn in_dir(dir: &Path) -> Result<Self, ChaosError> {
        let missing: Vec<&str> = [WORKER, INGRESS, CLI]
            .into_iter()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(ChaosError::BinariesMissing {
                dir: dir.to_path_buf(),
                missing: missing.join(", "),
            });
        }
        Ok(Self {
            worker: dir.join(WORKER),
            ingress: dir.join(INGRESS),
            cli: dir.join(CLI),
        })
    }
}

/// `target/<profile>/` for an executable in it or in its `deps/`.
pub fn default_dir(exe: &Path) -> PathBuf {
    let parent = exe.parent().unwrap_or_else(|| Path::new("."));
    if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().unwrap_or(parent).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_in_deps_look_one_level_up() {
        assert_eq!(
            default_dir(Path::new("/r/target/debug/deps/chaos-1234")),
            PathBuf::from("/r/target/debug")
        );
        assert_eq!(
            default_dir(Path::new("/r/target/release/writ-chaos")),
            PathBuf::from("/r/target/release")
        );
    }

    #[test]
    fn missing_binaries_are_all_named_with_the_build_hint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WORKER), b"").unwrap();
        let err = Binaries::in_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("writ-ingress, writ"), "{err}");
        assert!(err.contains("cargo build --bins"), "{err}");
        std::fs::write(dir.path().join(INGRESS), b"").unwrap();
        std::fs::write(dir.path().join(CLI), b"").unwrap();
        let found = Binaries::in_dir(dir.path()).unwrap();
        assert_eq!(found.cli, dir.path().join("writ"));
    }
}
