//! The guests' initramfs: a static busybox, the static `prog` test binary, the static
//! `icmp-guard` binary, the [`PAYLOAD`] script and an `/init` that mounts proc, sysfs,
//! devtmpfs and bpffs, runs the payload once with the words given after `--` on the
//! kernel command line, and powers off.
//!
//! Written directly in the `newc` cpio format the kernel unpacks (uncompressed, every
//! timestamp and owner zero), so no cpio tool is needed and `/dev/console` can be a device
//! node without mknod or root.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};

/// What runs on each kernel, in a guest after [`INIT`] or on the host under
/// `unshare --net`: the `prog` suite as `cargo test` runs it, then the static CLI attached
/// to `lo` in generic mode. Pings from 127.0.0.1 are martian, so the guard drops them:
/// answered before attach, unanswered while attached, answered again after detach. Then the
/// same with `attach --multiprog`, in a libxdp dispatcher made from libxdp's
/// `xdp-dispatcher.o` (at [`DISPATCHER_PATH`] in a guest).
///
/// `$BB` is busybox, `$PROG` and `$ICMP_GUARD` the two binaries, `$TEST_THREADS` the
/// suite's threads (one in a guest); the first argument
/// `negative-control` loads the broken program instead and leaves the CLI out, and
/// `only=NAME` runs only the tests whose names contain NAME.
pub const PAYLOAD: &str = r#"exec 2>&1
bb="$BB"
echo "MATRIX-KERNEL $($bb uname -r)"
export ICMP_GUARD_REQUIRE_PRIVILEGED=1
only=
case "$1" in
    negative-control) export ICMP_GUARD_NEGATIVE_CONTROL=1 ;;
    only=*) only="${1#only=}" ;;
esac
"$PROG" --test-threads="${TEST_THREADS:-1}" --color=never ${only:+"$only"}
echo "MATRIX-PROG-EXIT $?"
[ "$1" = negative-control ] && exit 0
$bb ip link set lo up
cli_ping() {
    echo "MATRIX-CLI-PING $1 $($bb ping -c 2 -w 3 127.0.0.1 2>&1 | $bb grep 'packets transmitted')"
}
cli_ping before
"$ICMP_GUARD" attach lo --mode generic 2>&1
echo "MATRIX-CLI-ATTACH-EXIT $?"
cli_ping attached
"$ICMP_GUARD" stats 2>&1
"$ICMP_GUARD" detach lo 2>&1
echo "MATRIX-CLI-DETACH-EXIT $?"
cli_ping detached
# The same, as one program of a libxdp dispatcher (attach --multiprog): made for it, then
# removed with its detach. The host may refuse program extensions; then nothing changes.
"$ICMP_GUARD" attach lo --multiprog --mode generic 2>&1
echo "MATRIX-CLI-MULTIPROG-ATTACH-EXIT $?"
cli_ping multiprog
"$ICMP_GUARD" status 2>&1 | $bb grep -A1 ' multiprog '
# Its row in `stats` (the exporter's rows are the same report): the interface, marked
# multiprog, with the dropped pings counted.
# `trace` cannot swap a program inside a dispatcher: it says so and changes nothing.
"$ICMP_GUARD" trace lo --seconds 1 2>&1
echo "MATRIX-CLI-MULTIPROG-TRACE-EXIT $?"
echo "MATRIX-CLI-MULTIPROG-STATS {$("$ICMP_GUARD" stats --json 2>&1 | $bb tr -d ' \n' | $bb grep -o '"interfaces":\[[^]]*\]')}"
"$ICMP_GUARD" detach lo 2>&1
echo "MATRIX-CLI-MULTIPROG-DETACH-EXIT $?"
cli_ping multiprog-detached
# The service the same way: `run --multiprog` joins (makes) a dispatcher and filters from
# it, and its SIGTERM detaches it. Where the kernel refuses extensions it refuses at start.
# run_service LOG ARGS...: starts `run ARGS`, its output in LOG, and waits (15 s at most)
# until it protects or has ended; $run_pid is its pid.
run_service() {
    log="$1"
    shift
    "$ICMP_GUARD" run "$@" >"$log" 2>&1 &
    run_pid=$!
    for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
        $bb grep -q protecting "$log" 2>/dev/null && break
        kill -0 $run_pid 2>/dev/null || break
        $bb sleep 1
    done
}
run_service /run-multiprog.log lo --multiprog --mode generic --drop-log 0
cli_ping run-multiprog
kill -TERM $run_pid 2>/dev/null
wait $run_pid
echo "MATRIX-CLI-RUN-MULTIPROG-EXIT $?"
$bb cat /run-multiprog.log
cli_ping run-multiprog-stopped
# A guard that `attach --multiprog` left in a dispatcher is adopted as it runs, and left
# there when the service stops.
"$ICMP_GUARD" attach lo --multiprog --mode generic >/dev/null 2>&1
run_service /run-adopt.log lo --multiprog --drop-log 0
kill -TERM $run_pid 2>/dev/null
wait $run_pid
echo "MATRIX-CLI-RUN-ADOPT-EXIT $?"
$bb cat /run-adopt.log
cli_ping run-adopted-stopped
"$ICMP_GUARD" detach lo >/dev/null 2>&1
# Beside xdp-filter: it loads (in libxdp's dispatcher where the kernel lets libxdp make
# one) with a rule that drops TCP to port 9999, icmp-guard joins at priority 20, both drop
# (the pings; the connection attempts, counted by xdp-filter), and after icmp-guard's
# detach xdp-filter runs alone and still drops.
if [ -x /usr/sbin/xdp-filter ]; then
    hits() { xdp-filter status 2>/dev/null | $bb awk '$1 == "9999" { print $3 }'; }
    connect() { for i in 1 2; do $bb nc -w1 127.0.0.1 9999 </dev/null >/dev/null 2>&1; done; }
    xdp-filter load -m skb lo 2>&1 && xdp-filter port 9999 -p tcp 2>&1
    echo "MATRIX-SHARED-XDP-FILTER-EXIT $?"
    "$ICMP_GUARD" attach lo --multiprog --priority 20 --mode generic 2>&1
    echo "MATRIX-SHARED-ATTACH-EXIT $?"
    xdp-loader status lo 2>&1 | $bb grep -E '=>|lo '
    cli_ping shared
    connect
    echo "MATRIX-SHARED-HITS attached $(hits)"
    "$ICMP_GUARD" detach lo 2>&1
    echo "MATRIX-SHARED-DETACH-EXIT $?"
    cli_ping shared-detached
    connect
    echo "MATRIX-SHARED-HITS detached $(hits)"
    echo "MATRIX-SHARED-XDP-FILTER-STAYS $(xdp-loader status lo 2>&1 | $bb grep -c xdpfilt)"
    xdp-filter unload lo 2>&1
fi
"#;

/// The binaries' and the payload's places in the guest.
const PROG_PATH: &str = "prog";
const ICMP_GUARD_PATH: &str = "icmp-guard";
const PAYLOAD_PATH: &str = "payload.sh";
/// libxdp's dispatcher object in the guest, where `attach --multiprog` looks for it.
pub const DISPATCHER_PATH: &str = "usr/lib/bpf/xdp-dispatcher.o";

const INIT: &str = r#"#!/bin/busybox sh
# icmp-guard kernel matrix: run the payload once, power off.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev 2>/dev/null
$bb mount -t bpf bpf /sys/fs/bpf || echo "init: could not mount bpffs"
$bb mount -t tmpfs tmpfs /run
BB=$bb PROG=/prog ICMP_GUARD=/icmp-guard $bb sh /payload.sh "$@"
$bb sync
$bb poweroff -f
"#;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes the initramfs to `path`.
pub fn write(
    path: &Path,
    busybox: &Path,
    prog: &Path,
    icmp_guard: &Path,
    dispatcher: &Path,
    xdp_tools: &[(String, std::path::PathBuf)],
) -> Result<()> {
    let read = |path: &Path| fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut archive = Archive::default();
    for dir in [
        "bin",
        "dev",
        "proc",
        "run",
        "sys",
        "tmp",
        "usr",
        "usr/lib",
        "usr/lib/bpf",
    ] {
        archive.entry(dir, S_IFDIR | 0o755, &[], (0, 0));
    }
    archive.entry("dev/console", S_IFCHR | 0o600, &[], (5, 1));
    archive.entry("bin/busybox", S_IFREG | 0o755, &read(busybox)?, (0, 0));
    archive.entry(PROG_PATH, S_IFREG | 0o755, &read(prog)?, (0, 0));
    archive.entry(ICMP_GUARD_PATH, S_IFREG | 0o755, &read(icmp_guard)?, (0, 0));
    archive.entry(DISPATCHER_PATH, S_IFREG | 0o644, &read(dispatcher)?, (0, 0));
    let mut dirs: Vec<String> = Vec::new();
    for (guest, host) in xdp_tools {
        let mut parent = String::new();
        for component in guest
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, dirs)| dirs)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            if !dirs.contains(&parent)
                && !["usr", "usr/lib", "usr/lib/bpf"].contains(&parent.as_str())
            {
                dirs.push(parent.clone());
                archive.entry(&parent, S_IFDIR | 0o755, &[], (0, 0));
            }
        }
        // Through symbolic links: the guest gets the file under the name the tools use.
        let data = read(
            &fs::canonicalize(host).with_context(|| format!("resolving {}", host.display()))?,
        )?;
        archive.entry(guest, S_IFREG | 0o755, &data, (0, 0));
    }
    archive.entry(PAYLOAD_PATH, S_IFREG | 0o644, PAYLOAD.as_bytes(), (0, 0));
    archive.entry("init", S_IFREG | 0o755, INIT.as_bytes(), (0, 0));
    archive.entry("TRAILER!!!", 0, &[], (0, 0));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, archive.bytes).with_context(|| format!("writing {}", path.display()))
}

#[derive(Default)]
struct Archive {
    bytes: Vec<u8>,
    inode: u32,
}

impl Archive {
    /// One `newc` entry: a 110-byte ASCII header, the name with its NUL, the data, each
    /// padded to 4 bytes.
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], (major, minor): (u32, u32)) {
        self.inode += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("initramfs files are smaller than 4 GiB"),
            0, // dev major
            0, // dev minor
            major,
            minor,
            u32::try_from(name.len() + 1).expect("short names"),
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_well_formed() {
        let mut archive = Archive::default();
        archive.entry("init", S_IFREG | 0o755, b"#!/bin/sh\n", (0, 0));
        archive.entry("dev/console", S_IFCHR | 0o600, &[], (5, 1));
        archive.entry("TRAILER!!!", 0, &[], (0, 0));
        assert_eq!(archive.bytes.len() % 4, 0);
        assert!(archive.bytes.starts_with(b"070701"));
        let header = std::str::from_utf8(&archive.bytes[..110]).expect("ASCII header");
        // mode, then filesize and namesize at their offsets.
        assert_eq!(&header[14..22], format!("{:08x}", S_IFREG | 0o755));
        assert_eq!(&header[54..62], "0000000a");
        assert_eq!(&header[94..102], "00000005");
        assert_eq!(&archive.bytes[110..115], b"init\0");
    }
}
