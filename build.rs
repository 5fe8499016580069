//! Build-time probes for the integration tests: whether this machine has
//! what some of them need, told to the compiler as `cfg`s, so that a test
//! that cannot run here is marked `ignored` with its reason where
//! `cargo test` prints its result, instead of passing without having run.
//!
//! For each need missing here, `no_<need>` is set, and the tests that need
//! it carry `#[cfg_attr(no_<need>, ignore = "why")]`:
//!
//! | cfg | set when |
//! |---|---|
//! | `no_systemd_socket_activate` | `systemd-socket-activate` is not on `PATH` |
//! | `no_systemd_analyze` | `systemd-analyze` is not on `PATH` |
//! | `no_ipv6_loopback` | `[::1]:0` cannot be bound |
//! | `no_prometheus` | `prometheus` or `promtool` is not on `PATH` |
//! | `no_haproxy` | `haproxy` is not on `PATH` |
//!
//! With `CI=true` (as `.ci/run` sets it, after installing the tools) none is
//! ever set: there every test runs, and one whose need is missing fails.
//!
//! The answers are kept until this script runs again, which Cargo does when
//! `PATH` or `CI` changes or this file does. After installing a tool
//! without changing `PATH`, `touch build.rs` to look again. The daemon does
//! not read these `cfg`s.

use std::env;
use std::net::TcpListener;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    let in_ci = env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    let needs = [
        (
            "systemd_socket_activate",
            on_path("systemd-socket-activate"),
        ),
        ("systemd_analyze", on_path("systemd-analyze")),
        ("ipv6_loopback", TcpListener::bind("[::1]:0").is_ok()),
        ("prometheus", on_path("prometheus") && on_path("promtool")),
        ("haproxy", on_path("haproxy")),
    ];
    for (need, present) in needs {
        println!("cargo::rustc-check-cfg=cfg(no_{need})");
        if !present && !in_ci {
            println!("cargo::rustc-cfg=no_{need}");
        }
    }
}

/// Whether an executable file named `tool` is in one of `PATH`'s directories.
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}
