//! Test helpers that keep docs/configuration.md true, shared by the
//! configuration tests of omega-node and omega-braind (each includes this
//! file with `#[path]`): the reference's defaults block must parse to the
//! built-in defaults, and every key of the defaults must have a table row
//! and a line in that block; every flag and environment variable of a
//! binary must have a table row.

// Each includer uses part of this file.
#![allow(dead_code)]

/// docs/configuration.md, the operators' reference.
pub const REFERENCE: &str = include_str!("configuration.md");

/// The first TOML block after `marker` in the reference.
pub fn defaults_block(marker: &str) -> &'static str {
    let rest = &REFERENCE[REFERENCE
        .find(marker)
        .expect("the marker is in the reference")..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = rest[start..].find("```").expect("the block's end");
    &rest[start..start + len]
}

/// The dotted paths of every key of `defaults` (serialized), maps named in
/// `opaque` taken as one key (their keys are data, not settings).
pub fn key_paths(defaults: &serde_json::Value, opaque: &[&str]) -> Vec<String> {
    fn walk(value: &serde_json::Value, prefix: &str, opaque: &[&str], out: &mut Vec<String>) {
        let Some(map) = value.as_object() else { return };
        for (k, v) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_object() && !opaque.contains(&path.as_str()) {
                walk(v, &path, opaque, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(defaults, "", opaque, &mut out);
    out
}

/// Panics naming the first key without a table row in the reference or a
/// line (set or commented out) in `block`.
pub fn assert_documented(keys: &[String], block: &str) {
    assert!(keys.len() > 20, "too few keys: {keys:?}");
    for key in keys {
        assert!(
            REFERENCE.contains(&format!("| `{key}` |")),
            "docs/configuration.md has no table row for `{key}`"
        );
        let leaf = key.rsplit('.').next().expect("a name");
        assert!(
            block.lines().any(|l| l
                .trim_start_matches("# ")
                .starts_with(&format!("{leaf} = "))),
            "the defaults block of docs/configuration.md has no line for `{key}`"
        );
    }
}

/// Panics naming the first flag or environment variable of `cli` (and its
/// subcommands) without a table row in the reference; returns the number of
/// flags checked.
pub fn assert_cli_documented(cli: &clap::Command) -> usize {
    let mut flags = 0;
    for cmd in std::iter::once(cli).chain(cli.get_subcommands()) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) {
                assert!(
                    REFERENCE.contains(&format!("| `--{long}` |")),
                    "docs/configuration.md has no row for --{long}"
                );
                flags += 1;
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    REFERENCE.contains(&format!("| `{env}` |")),
                    "docs/configuration.md has no row for {env}"
                );
            }
        }
    }
    flags
}
