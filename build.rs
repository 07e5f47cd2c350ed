use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    // Resolve every dynamic symbol when the extension loads. With lazy binding, each fork
    // child resolves on first call the symbols only children use (PyOS_AfterFork_Child …),
    // writing the GOT: a copy-on-write page fault and a symbol lookup in every child.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
    build_tracker_program();
}

/// The resource tracker runs as its own small program (a few hundred KiB, std only), built here
/// with the same compiler and target and carried inside the extension
/// (`src/resource_tracker/mod.rs` starts it).
fn build_tracker_program() {
    let source = "src/resource_tracker/program.rs";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            "--crate-name=procstart_resource_tracker",
            "--crate-type=bin",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-D",
            "warnings",
            "--target",
            &target,
            "-o",
        ])
        .arg(out.join("procstart-resource-tracker"))
        .arg(source)
        .status()
        .expect("running rustc for the resource tracker program");
    assert!(status.success(), "building {source} failed");
}
