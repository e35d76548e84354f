//! The confirmation step in front of every command that writes or deletes
//! (replay, purge): `--yes` skips it; otherwise a person at a terminal must
//! type `y`. Without a terminal there is nobody to ask, so the command stops
//! rather than guessing.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};

/// Asks `question` on the terminal unless `yes`; Ok(false) when declined.
pub fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question}\nrefusing without confirmation: stdin is not a terminal; pass --yes to proceed");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_yes_confirms() {
        assert!(is_yes("y\n") && is_yes(" YES ") && is_yes("Yes"));
        assert!(!is_yes("") && !is_yes("n") && !is_yes("yes please"));
        assert!(confirm("anything", true).unwrap());
    }
}
