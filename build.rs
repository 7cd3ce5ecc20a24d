//! Makes cargo rebuild lanboard whenever a file under `assets/` is added,
//! removed or changed. rust-embed reads the folder at compile time, but cargo
//! only knows to recompile for files it has been told about; naming the
//! folder here makes cargo watch every file beneath it.
//!
//! It also refuses to build a client that loads anything from another host
//! (the board must work on a network without internet), and records the
//! commit it is built from for `lanboard --version` (`LANBOARD_COMMIT`:
//! the short hash, `-dirty` when the checkout has changes, `unknown` outside
//! a git checkout).

use std::fs;
use std::path::Path;
use std::process::Command;

fn main() {
    record_commit();
    println!("cargo:rerun-if-changed=assets");
    let mut files = Vec::new();
    collect(Path::new("assets"), &mut files);
    for file in files {
        println!("cargo:rerun-if-changed={}", file.display());
        let Some(ext) = file.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if !matches!(ext, "html" | "js" | "css") {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap_or_default();
        for needle in [
            "src=\"http",
            "href=\"http",
            "src='http",
            "@import url(http",
            "from 'http",
            "from \"http",
        ] {
            if text.contains(needle) {
                panic!(
                    "{} loads something from another host ({needle}...); \
                     lanboard's client must work without internet",
                    file.display()
                );
            }
        }
    }
}

/// Sets `LANBOARD_COMMIT`, and asks cargo to run this again when the
/// checkout moves to another commit.
fn record_commit() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = match git(&["rev-parse", "--short=10", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|changes| !changes.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        _ => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=LANBOARD_COMMIT={commit}");
    // HEAD names the branch; the branch's ref (or packed-refs) names the
    // commit. Watching them reruns this after a commit or a checkout.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", dir.join("index").display());
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
            // Named only when it exists: cargo counts a missing file as
            // changed, and would run this (and rebuild lanboard) every time.
            // When refs are packed later, the branch's own file goes, which
            // is a change cargo sees.
            let packed = Path::new(&common).join("packed-refs");
            if packed.exists() {
                println!("cargo:rerun-if-changed={}", packed.display());
            }
        }
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or_default();
            println!(
                "cargo:rerun-if-changed={}",
                Path::new(&common).join(head).display()
            );
        }
    }
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
