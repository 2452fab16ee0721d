use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the XDP object from `icmp-guard-ebpf` and leaves it in `OUT_DIR/icmp-guard`.
///
/// With `ICMP_GUARD_STUB_EBPF=1` an empty file stands in for the object, so `cargo check`
/// and clippy work where bpf-linker is absent. A binary built that way refuses to attach.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=ICMP_GUARD_STUB_EBPF");
    println!("cargo::rustc-check-cfg=cfg(icmp_guard_stub_ebpf)");
    if std::env::var_os("ICMP_GUARD_STUB_EBPF").is_some_and(|value| value == "1") {
        let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
        std::fs::write(std::path::Path::new(&out_dir).join("icmp-guard"), [])
            .context("writing the stub eBPF object")?;
        println!("cargo:rustc-cfg=icmp_guard_stub_ebpf");
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "icmp-guard-ebpf")
        .ok_or_else(|| anyhow!("icmp-guard-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("icmp-guard-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
