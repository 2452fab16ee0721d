//! Real frames, made by tools no one here wrote (ping, tracepath, hping3, ndisc6, rdisc6;
//! captured with tcpdump, see `tests/corpus/README.md`), replayed through the XDP program
//! under the default profile. Each frame must get the verdict and the counter that the
//! `.expect` table next to its capture gives, the reference model must agree, and every
//! frame the program passes must come back byte for byte.

//!
//! The captures are compiled into the test binary, so the kernel matrix replays them in
//! its guests too, where the source tree is not.

use std::{fs, net::Ipv4Addr, path::Path};

use icmp_guard::policy::Policy;
use icmp_guard_common::{DropReason, FAMILY_V4, FAMILY_V6, SLOT_PASSED, drop_slot, global};

use crate::{
    harness::skip,
    model::{
        self, Verdict, Where,
        xdp::{Tracked, action_of},
    },
};

/// The guarded interface's directed broadcast in the captures (192.0.2.1/24).
const BROADCASTS: [Ipv4Addr; 1] = [Ipv4Addr::new(192, 0, 2, 255)];

/// One capture and its table, as compiled in.
struct Capture {
    name: &'static str,
    pcap: &'static [u8],
    expect: &'static str,
}

macro_rules! capture {
    ($name:literal) => {
        Capture {
            name: $name,
            pcap: include_bytes!(concat!("../corpus/", $name, ".pcap")),
            expect: include_str!(concat!("../corpus/", $name, ".expect")),
        }
    };
}

/// Every capture of `tests/corpus`, in name order.
const CAPTURES: [Capture; 8] = [
    capture!("broadcast"),
    capture!("fragments"),
    capture!("hping3"),
    capture!("ndisc6"),
    capture!("options"),
    capture!("ping"),
    capture!("ping6"),
    capture!("tracepath"),
];

/// The frames of a pcap file (the classic format tcpdump writes: a 24-byte global header,
/// then a 16-byte header before each frame), checked to be Ethernet.
fn read_pcap(name: &str, data: &[u8]) -> Vec<Vec<u8>> {
    let magic = &data[..4];
    let word: fn([u8; 4]) -> u32 = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => u32::from_le_bytes,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => u32::from_be_bytes,
        _ => panic!("{name}: not a pcap file (magic {magic:02x?})"),
    };
    let at = |offset: usize| word(data[offset..offset + 4].try_into().expect("4 bytes"));
    assert_eq!(at(20), 1, "{name}: link type is not Ethernet");
    let mut frames = Vec::new();
    let mut offset = 24;
    while offset < data.len() {
        let captured = at(offset + 8) as usize;
        let original = at(offset + 12) as usize;
        assert_eq!(
            captured, original,
            "{name}: a frame was cut by the snap length"
        );
        let start = offset + 16;
        frames.push(data[start..start + captured].to_vec());
        offset = start + captured;
    }
    frames
}

/// One row of a `.expect` table.
struct Expected {
    frame: usize,
    verdict: Verdict,
    reason: Option<DropReason>,
    counted: Where,
    what: String,
}

fn reason_named(name: &str) -> DropReason {
    DropReason::ALL
        .into_iter()
        .find(|reason| reason.name() == name)
        .unwrap_or_else(|| panic!("unknown drop reason {name}"))
}

/// Rows `FRAME pass|drop:REASON COUNTER WHAT...`, where COUNTER is `v4/TYPE`, `v6/TYPE`,
/// `non-icmp`, `fragment` or `unclassified`; `#` starts a comment line.
fn read_expect(text: &str) -> Vec<Expected> {
    let mut rows = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut next = || fields.next().unwrap_or_else(|| panic!("short row: {line}"));
        let frame = next()
            .parse()
            .unwrap_or_else(|_| panic!("bad frame number: {line}"));
        let verdict_text = next();
        let reason = verdict_text.strip_prefix("drop:").map(reason_named);
        let verdict = if reason.is_some() {
            Verdict::Drop
        } else {
            assert_eq!(verdict_text, "pass", "bad verdict: {line}");
            Verdict::Pass
        };
        let counted = match next() {
            "non-icmp" => Where::Global(global::NON_ICMP_PASSED),
            "fragment" => Where::Global(global::ICMP_FRAGMENT_PASSED),
            "unclassified" if reason == Some(DropReason::Malformed) => {
                Where::Global(global::MALFORMED_DROPPED)
            }
            "unclassified" => Where::Global(global::INVALID_DROPPED),
            icmp => {
                let (family, icmp_type) = icmp
                    .split_once('/')
                    .unwrap_or_else(|| panic!("bad counter: {line}"));
                Where::Icmp {
                    family: if family == "v4" { FAMILY_V4 } else { FAMILY_V6 },
                    icmp_type: icmp_type.parse().expect("a type number"),
                    slot: reason.map_or(SLOT_PASSED, drop_slot),
                }
            }
        };
        let what = fields.collect::<Vec<_>>().join(" ");
        rows.push(Expected {
            frame,
            verdict,
            reason,
            counted,
            what,
        });
    }
    rows
}

#[test]
fn real_frames_get_the_verdicts_their_tables_give() {
    root_or_skip!("real_frames_get_the_verdicts_their_tables_give");
    // The default profile with its real limits: the captures hold a few echoes per source,
    // far below any burst, so the model's "limit admits" holds here too.
    let policy = Policy::default_profile();
    let mut guard = Tracked::load(&policy, &BROADCASTS);
    let mut failures = Vec::new();
    let mut replayed = 0;
    for capture in &CAPTURES {
        let name = format!("{}.pcap", capture.name);
        let frames = read_pcap(&name, capture.pcap);
        let table = read_expect(capture.expect);
        let numbers: Vec<usize> = table.iter().map(|row| row.frame).collect();
        assert_eq!(
            numbers,
            (1..=frames.len()).collect::<Vec<_>>(),
            "{name}: the table must list each of its {} frames once, in order",
            frames.len()
        );
        for row in &table {
            let frame = &frames[row.frame - 1];
            let label = format!("{name} frame {} ({})", row.frame, row.what);
            let kernel = guard.run(frame, row.counted);
            if kernel.action != action_of(row.verdict)
                || kernel.counted != [row.counted]
                || kernel.modified
            {
                failures.push(format!(
                    "{label}: the program says {kernel}, the table {:?} counted as {}",
                    row.verdict, row.counted
                ));
            }
            let model = model::verdict(frame, &policy, &BROADCASTS);
            if model.verdict != row.verdict
                || model.reason != row.reason
                || model.counted != row.counted
            {
                failures.push(format!("{label}: the model says {model}"));
            }
            replayed += 1;
        }
    }
    for (at, kernel, shadow) in guard.audit() {
        failures.push(format!(
            "counter {at} is {kernel:?}, the tables add up to {shadow:?}"
        ));
    }
    println!(
        "corpus: {replayed} real frames from {} captures",
        CAPTURES.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_capture_of_the_corpus_directory_is_compiled_in() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    if !dir.is_dir() {
        skip(
            "every_capture_of_the_corpus_directory_is_compiled_in",
            "the source tree is not on this machine (a kernel-matrix guest); the compiled-in \
             captures are replayed all the same",
        );
        return;
    }
    let mut on_disk: Vec<String> = fs::read_dir(&dir)
        .expect("the corpus directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pcap"))
        .map(|path| {
            let stem = path.file_stem().expect("a name");
            stem.to_string_lossy().into_owned()
        })
        .collect();
    on_disk.sort();
    let compiled: Vec<&str> = CAPTURES.iter().map(|capture| capture.name).collect();
    assert_eq!(on_disk, compiled, "add every new capture to CAPTURES");
}
