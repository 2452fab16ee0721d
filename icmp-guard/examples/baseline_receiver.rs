//! The flood benchmark's baseline receivers (`cargo xtask bench`): attaches one of the
//! minimal per-source limiters of the eBPF object (`icmp_guard_common::baseline`) to an
//! interface of the current network namespace in native mode, with the default profile's
//! numbers (100/s per source, burst 200; the new-source budget 1,000/s, burst 2,000) and a
//! table as large as the guard's (65,536 sources), prints `attached`, and keeps it attached
//! until it is killed (the BPF link closes with the process).
//!
//! ```text
//! sudo nsenter --net=/run/netns/NS target/release/examples/baseline_receiver IFNAME [--budget]
//! ```

use std::io::Write as _;

use aya::{
    EbpfLoader,
    programs::{Xdp, XdpMode},
};
use icmp_guard_common::{baseline, limit::RATE_SOURCES, maps};

fn main() {
    let mut args = std::env::args().skip(1);
    let ifname = args
        .next()
        .expect("usage: baseline_receiver IFNAME [--budget]");
    let name = match args.next().as_deref() {
        None => baseline::MINIMAL_LIMITER,
        Some("--budget") => baseline::MINIMAL_LIMITER_WITH_BUDGET,
        Some(other) => panic!("unknown argument {other}"),
    };
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::BASELINE_SOURCES, RATE_SOURCES)
        .load(icmp_guard::ebpf_object())
        .expect("load the eBPF object (run as root)");
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("{name} is not in the object"))
        .try_into()
        .expect("an XDP program");
    program.load().expect("the verifier accepts the baseline");
    program
        .attach(&ifname, XdpMode::Driver)
        .unwrap_or_else(|err| panic!("attaching {name} to {ifname} in native mode: {err}"));
    println!("attached {name} to {ifname}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
