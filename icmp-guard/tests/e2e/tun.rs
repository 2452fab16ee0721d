//! A layer-3 interface end to end: a tun device in a namespace, guarded for real. The test
//! plays the far side of the tunnel: it writes IP packets into the tun's file descriptor
//! (the kernel receives them on the interface, where XDP sees the IP header first) and
//! reads the kernel's answers back from it.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use icmp_guard_lab::process::netns_path;

use crate::lab::{Lab, icmp_row};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

const GUARD: [u8; 4] = [198, 51, 100, 1];
const FAR_END: [u8; 4] = [198, 51, 100, 2];

/// The lab's guard namespace with a tun device in it (removed with the namespace).
fn add_tun(lab: &Lab) -> String {
    let dev = lab.guard_if.replace('g', "u");
    lab.ip(
        &lab.guard_ns,
        &["tuntap", "add", "dev", &dev, "mode", "tun"],
    );
    lab.ip(
        &lab.guard_ns,
        &["addr", "add", "198.51.100.1/24", "dev", &dev],
    );
    lab.ip(&lab.guard_ns, &["link", "set", &dev, "up"]);
    dev
}

/// Opens the tun device from inside its namespace: the far end of the tunnel.
fn far_end(ns: &str, dev: &str) -> File {
    let ns = netns_path(ns);
    let dev = dev.to_owned();
    // setns changes only the calling thread's namespace: do it on a thread of its own.
    std::thread::spawn(move || {
        let netns = File::open(&ns).expect("open the namespace");
        // SAFETY: a valid namespace fd; affects this thread only.
        let joined = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        // struct ifreq: the name, then the flags.
        let mut request = [0u8; 40];
        request[..dev.len()].copy_from_slice(dev.as_bytes());
        request[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads a struct ifreq, which the 40 bytes hold.
        let attached = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, request.as_ptr()) };
        assert_eq!(
            attached,
            0,
            "TUNSETIFF: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: O_NONBLOCK on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        tun
    })
    .join()
    .expect("the far end opens")
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum::<u32>();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet of the far end to the guarded host: an ICMP message of `icmp_type` with
/// an echo body numbered `sequence`.
fn ipv4_icmp(icmp_type: u8, sequence: u16) -> Vec<u8> {
    let mut message = vec![icmp_type, 0, 0, 0, 0x12, 0x34];
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(b"icmp-guard tun test");
    let sum = checksum(&message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let total = u16::try_from(20 + message.len()).expect("a small packet");
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    // Identification, don't fragment, TTL 64, ICMP, checksum (filled in below).
    packet.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    packet.extend_from_slice(&FAR_END);
    packet.extend_from_slice(&GUARD);
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(&message);
    packet
}

/// Sends `count` echo requests through the tunnel and counts the echo replies that come
/// back within a second of the last.
fn echo_round_trip(tun: &mut File, count: u16) -> u32 {
    for sequence in 0..count {
        tun.write_all(&ipv4_icmp(8, sequence))
            .expect("write to the tun");
    }
    let mut replies = 0;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buffer = [0u8; 2048];
    while Instant::now() < deadline {
        match tun.read(&mut buffer) {
            Ok(read) if read >= 21 && buffer[0] >> 4 == 4 && buffer[9] == 1 => {
                let header = usize::from(buffer[0] & 0x0f) * 4;
                if buffer.get(header) == Some(&0) && buffer[16..20] == FAR_END {
                    replies += 1;
                }
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("reading the tun: {err}"),
        }
    }
    replies
}

#[test]
fn a_tun_interface_is_guarded_from_its_ip_header() {
    let lab = lab_or_skip!("a_tun_interface_is_guarded_from_its_ip_header");
    let dev = add_tun(&lab);
    let mut tun = far_end(&lab.guard_ns, &dev);
    // Opening the far end raises the carrier; give the stack a moment.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        echo_round_trip(&mut tun, 3),
        3,
        "the tunnel works unguarded"
    );

    lab.cli_ok(&["attach", &dev]);
    let status = lab.json(&["status", "--json"]);
    assert!(
        status.to_string().contains(&dev),
        "status lists the tun: {status}"
    );
    // The default profile limits echo requests: a few pass.
    assert_eq!(
        echo_round_trip(&mut tun, 3),
        3,
        "echo is limited, not blocked"
    );
    lab.cli_ok(&["policy", "set", "--family", "v4", "echo-request", "drop"]);
    assert_eq!(
        echo_round_trip(&mut tun, 5),
        0,
        "a dropped type is dropped on a layer-3 interface"
    );
    let stats = lab.json(&["stats", "--json"]);
    let echo = icmp_row(&stats, "v4", 8).expect("echo requests were classified as ICMP");
    assert_eq!(echo["packets"], 8, "{echo}");
    assert_eq!(echo["dropped"]["policy"], 5, "{echo}");
    assert_eq!(
        stats["totals"]["non_icmp_passed"], 0,
        "no ICMP was mistaken for something else: {stats}"
    );
    let interface = &stats["interfaces"][0];
    assert_eq!(interface["counters"]["dropped"], 5, "{interface}");

    lab.cli_ok(&["detach", &dev]);
    assert_eq!(
        echo_round_trip(&mut tun, 2),
        2,
        "detached, the tunnel answers again"
    );
}
