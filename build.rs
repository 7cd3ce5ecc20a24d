//! Makes cargo rebuild lanboard whenever a file under `assets/` is added,
//! removed or changed. rust-embed reads the folder at compile time, but cargo
//! only knows to recompile for files it has been told about; naming the
//! folder here makes cargo watch every file beneath it.
//!
//! It also refuses to build a client that loads anything from another host:
//! the board must work on a network without internet.

use std::fs;
use std::path::Path;

fn main() {
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
