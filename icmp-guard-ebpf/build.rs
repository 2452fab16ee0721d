use which::which;

/// Building this crate needs the `bpf-linker` binary, which cargo cannot express as a
/// dependency; rebuild whenever the linker on `PATH` changes.
fn main() {
    match which("bpf-linker") {
        Ok(bpf_linker) => println!("cargo:rerun-if-changed={}", bpf_linker.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
