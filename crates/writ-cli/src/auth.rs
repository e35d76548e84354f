//! `writ auth hash-key`: the SHA-256 an ingress or edge configuration stores
//! instead of an API key, computed exactly as the services compare it.

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

/// `writ auth ...`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the hash to put in `[[auth.keys]] sha256` for an API key.
    HashKey(HashKeyArgs),
}

/// Arguments of `writ auth hash-key`.
#[derive(Debug, Args)]
pub struct HashKeyArgs {
    /// The API key, or `-` to read it from stdin (keeps it out of the shell history).
    key: String,
}

/// Runs a `writ auth` subcommand.
pub fn run(cmd: AuthCommand) -> Result<()> {
    match cmd {
        AuthCommand::HashKey(a) => {
            let key = if a.key == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the key from stdin")?;
                s
            } else {
                a.key
            };
            println!("{}", hash(&key)?);
            Ok(())
        }
    }
}

/// The hash of `key`, without the line ending a pipe or heredoc adds.
fn hash(key: &str) -> Result<String> {
    let key = key.strip_suffix('\n').unwrap_or(key);
    let key = key.strip_suffix('\r').unwrap_or(key);
    if key.is_empty() {
        bail!("the API key is empty");
    }
    Ok(writ_http::hash_api_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_newline_is_not_part_of_the_key() {
        let h = hash("s3cret").unwrap();
        assert_eq!(h, writ_http::hash_api_key("s3cret"));
        assert_eq!(hash("s3cret\n").unwrap(), h);
        assert_eq!(hash("s3cret\r\n").unwrap(), h);
        assert_ne!(
            hash(" s3cret").unwrap(),
            h,
            "other whitespace is significant"
        );
        assert!(hash("\n").is_err());
    }
}
