//! Builds the in-kernel fast path (src/dataplane/kernel/forward.bpf.c) with clang when it is
//! installed. Without clang the relay still builds; it then relays all media in user space
//! and says why at start (`kernel forwarding unavailable`).

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/dataplane/kernel/forward.bpf.c";

fn main() {
    println!("cargo:rustc-check-cfg=cfg(rtpanchor_bpf)");
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("forward.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The kernel's UAPI headers sit under the multiarch directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", SOURCE, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo:rustc-cfg=rtpanchor_bpf");
            println!("cargo:rustc-env=RTPANCHOR_BPF_OBJECT={}", out.display());
        }
        Ok(s) => println!("cargo:warning=in-kernel fast path not built: {clang} failed ({s})"),
        Err(e) => println!("cargo:warning=in-kernel fast path not built: {clang}: {e}"),
    }
}
