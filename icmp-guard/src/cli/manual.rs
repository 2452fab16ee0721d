//! The manual: icmp-guard(8) and one icmp-guard-COMMAND(8) page per command, generated from
//! the command-line definition by clap_mangen and completed with the sections an operator
//! looks for (EXIT STATUS, FILES, ENVIRONMENT, EXAMPLES, SEE ALSO); and icmp-guard.toml(5),
//! the policy file format, whose table of type names comes from the table the policy reads.

use std::{io::Write, path::Path};

use super::completions::type_names;

/// One manual page: where it goes under a `man` directory, and its roff text.
pub struct Page {
    /// e.g. `man8/icmp-guard-attach.8`.
    pub path: String,
    pub text: String,
}

/// Every page: icmp-guard(8) first, then the commands' pages, then icmp-guard.toml(5).
pub fn pages(command: clap::Command) -> Vec<Page> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    command_pages(&command, &mut pages);
    pages.push(Page {
        path: "man5/icmp-guard.toml.5".to_owned(),
        text: policy_file_page(),
    });
    pages
}

pub fn write_page(page: &Page, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(page.text.as_bytes())
}

/// Writes every page under `dir` (`dir/man8/...`, `dir/man5/...`); returns how many.
pub fn write_all(command: clap::Command, dir: &Path) -> std::io::Result<usize> {
    let pages = pages(command);
    for page in &pages {
        let path = dir.join(&page.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &page.text)?;
    }
    Ok(pages.len())
}

fn command_pages(command: &clap::Command, pages: &mut Vec<Page>) {
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned();
    let man = clap_mangen::Man::new(command.clone()).section("8");
    let mut text = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = render(&man, command, &name, &mut text);
    pages.push(Page {
        path: format!("man8/{name}.8"),
        text: without_repeated_preambles(&String::from_utf8_lossy(&text)),
    });
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        command_pages(sub, pages);
    }
}

fn render(
    man: &clap_mangen::Man,
    command: &clap::Command,
    name: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    // Our own title line: clap_mangen's leaves the date empty, which shifts the fields.
    writeln!(
        out,
        ".TH {} 8 \"\" \"icmp-guard {}\" \"System Administration\"",
        name.to_uppercase(),
        env!("CARGO_PKG_VERSION")
    )?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if command.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    let top = name == "icmp-guard";
    section(out, "EXIT STATUS", &exit_status(name))?;
    section(out, "FILES", FILES)?;
    section(out, "ENVIRONMENT", ENVIRONMENT)?;
    let examples = examples(command, top);
    if !examples.is_empty() {
        writeln!(out, ".SH EXAMPLES")?;
        for example in examples {
            writeln!(out, ".PP\n.nf\n.RS 4\n{}\n.RE\n.fi", escape(&example))?;
        }
    }
    let mut see_also = Vec::new();
    if !top {
        see_also.push("icmp-guard (8)".to_owned());
    }
    see_also.extend(
        command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .filter_map(|sub| sub.get_display_name().map(|name| format!("{name} (8)"))),
    );
    see_also.extend(
        [
            "icmp-guard.toml (5)",
            "nft (8)",
            "xdp-loader (8)",
            "bpftool (8)",
            "systemctl (1)",
        ]
        .map(str::to_owned),
    );
    writeln!(out, ".SH \"SEE ALSO\"")?;
    let references: Vec<String> = see_also
        .iter()
        .map(|reference| {
            let (page, section) = reference.split_once(' ').unwrap_or((reference, ""));
            format!(".BR {} {section}", escape(page))
        })
        .collect();
    // `.BR page (8),` on one line each; the last without a comma.
    for (index, line) in references.iter().enumerate() {
        let comma = if index + 1 < references.len() {
            ","
        } else {
            ""
        };
        writeln!(out, "{line}{comma}")?;
    }
    man.render_version_section(out)
}

/// In a `.B` line a `"` groups words and disappears; the file format needs it shown.
fn literal_quotes_in_macros(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix(".B ") {
            Some(rest) => format!(".B {}\n", rest.replace('"', "\\(dq")),
            None => format!("{line}\n"),
        })
        .collect()
}

/// clap_mangen starts every section it renders with the same two-line string definition;
/// one at the top is enough.
fn without_repeated_preambles(text: &str) -> String {
    const PREAMBLE: [&str; 2] = [".ie \\n(.g .ds Aq \\(aq", ".el .ds Aq '"];
    let mut out = format!("{}\n{}\n", PREAMBLE[0], PREAMBLE[1]);
    for line in text.lines().filter(|line| !PREAMBLE.contains(line)) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A section of paragraphs; a paragraph starting with `TP ` is a tagged paragraph whose tag
/// runs to the first newline.
fn section(out: &mut dyn Write, title: &str, paragraphs: &[&str]) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")?;
    for paragraph in paragraphs {
        match paragraph.strip_prefix("TP ") {
            Some(tagged) => {
                let (tag, body) = tagged.split_once('\n').unwrap_or((tagged, ""));
                writeln!(out, ".TP\n.B {}\n{}", escape(tag), escape(body))?;
            }
            None => writeln!(out, ".PP\n{}", escape(paragraph))?,
        }
    }
    Ok(())
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a
/// request.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .lines()
        .map(|line| {
            let line = line.replace('-', "\\-");
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn exit_status(name: &str) -> Vec<&'static str> {
    let mut paragraphs = vec![
        "TP 0\nThe command did what it was asked, or found nothing to do (detaching what is not attached).",
        "TP 1\nThe command failed and changed nothing; one sentence on standard error says what went wrong and what to do (run with sudo, name an existing interface, mount bpffs, ...). A refused policy change leaves the running policy untouched.",
        "TP 2\nThe command line could not be parsed (an unknown option, a missing argument); the usage is printed.",
    ];
    match name {
        "icmp-guard-policy-check" => paragraphs.push(
            "For policy check, 0 means the file is valid and 1 that it is not: each reason is printed with the line and column of the value at fault.",
        ),
        "icmp-guard-run" => paragraphs.push(
            "run exits 0 after SIGTERM or SIGINT, and 1 when it cannot start (an interface that does not exist, a first attach refused). An interface deleted later is waited for, not a reason to exit; while attaching keeps failing it stops reporting WATCHDOG=1, so that systemd restarts it.",
        ),
        "icmp-guard-trace" => paragraphs.push(
            "trace exits 0 when it stops at --count, at --seconds or at SIGINT or SIGTERM, each time after swapping the production program back. Killed (SIGKILL), it leaves the trace build in the link, which still guards and stops reporting at the deadline; the next icmp-guard command, or run's watchdog, swaps the production program back.",
        ),
        "icmp-guard-status" => paragraphs.push(
            "With --check: 0 when every interface asked about (or every one attached in this network namespace) is protected, 1 when one is not (not attached, not running, gone, waiting for a run), 2 when one is damaged (its program runs with maps that are not the pinned ones, or without its slot: icmp-guard repair mends it).",
        ),
        _ => {}
    }
    paragraphs
}

const FILES: &[&str] = &[
    "TP /etc/icmp-guard/policy.toml\nThe policy file: rules on top of the safe default profile, the allow and deny lists, the smurf defences (see icmp-guard.toml(5)). attach reads it on a first attach when it exists and no --policy is given; the systemd unit runs run with --policy on it, which applies every edit within a second.",
    "TP /etc/default/icmp-guard\nSettings of the systemd unit icmp-guard.service: INTERFACES (the interfaces to protect; the service does not start while it is empty), POLICY, METRICS and EXTRA (more run flags).",
    "TP /sys/fs/bpf/icmp-guard\nThe pin directory on bpffs (every directory 0700; a path another user owns or may write is refused): maps/NAME for every map, links/NETNS/IFINDEX for every XDP link under the inode of its network namespace, and services/NETNS/PID/NAME for the interfaces a run guards. Protection outlives the command because these pins hold it; detach of the last interface removes them. Change it with --pin-dir or ICMP_GUARD_PIN_DIR.",
    "TP /lib/systemd/system/icmp-guard.service\nThe unit that runs icmp-guard run before the network comes up (Type=notify, with a watchdog).",
];

const ENVIRONMENT: &[&str] = &[
    "TP ICMP_GUARD_PIN_DIR\nThe pin directory, as --pin-dir (default /sys/fs/bpf/icmp-guard).",
    "TP ICMP_GUARD_LOCK_TIMEOUT\nSeconds a command waits for another one's lock on the pin directory before it gives up and names the holder (default 10).",
    "TP NO_COLOR\nWhen set and not empty, tables are printed without colour or bold even on a terminal.",
    "TP NOTIFY_SOCKET, WATCHDOG_USEC\nSet by systemd for a Type=notify service: run reports READY=1 once every interface runs the guard and the policy is applied, and WATCHDOG=1 after each of its once-a-second checks that found every interface protected.",
];

/// The `Example:` lines of the command and of its subcommands, plus a tour on the top page.
fn examples(command: &clap::Command, top: bool) -> Vec<String> {
    let mut found = Vec::new();
    if top {
        found.extend(
            [
                "sudo icmp-guard attach eth0",
                "sudo icmp-guard attach eth0 --policy /etc/icmp-guard/policy.toml --dry-run",
                "sudo icmp-guard stats --watch 1",
                "sudo icmp-guard policy set echo-request limit --rate 50/s --burst 100 --per source",
                "icmp-guard policy check /etc/icmp-guard/policy.toml",
                "sudo icmp-guard deny add 203.0.113.0/24",
                "sudo icmp-guard detach --all",
            ]
            .map(str::to_owned),
        );
    }
    let mut collect = |command: &clap::Command| {
        let about = command
            .get_long_about()
            .or_else(|| command.get_about())
            .map(ToString::to_string)
            .unwrap_or_default();
        for line in about.lines() {
            if let Some(example) = line.trim().strip_prefix("Example: ") {
                let example = example.to_owned();
                if !found.contains(&example) {
                    found.push(example);
                }
            }
        }
    };
    if !top {
        collect(command);
        for sub in command.get_subcommands() {
            collect(sub);
        }
    }
    found
}

/// icmp-guard.toml(5).
fn policy_file_page() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut page = format!(
        ".TH ICMP-GUARD.TOML 5 \"\" \"icmp-guard {version}\" \"File Formats\"\n{}",
        literal_quotes_in_macros(POLICY_FILE_BODY)
    );
    page.push_str(".SH \"TYPE NAMES\"\n.PP\nThe names type accepts, with the types they stand for in each family. Aliases as ping, nft and tcpdump spell them are accepted too (echo, ping, dest\\-unreachable, nd\\-neighbor\\-solicit, ...), in any case, with _ for \\-.\n");
    for (name, numbers) in type_names() {
        page.push_str(&format!(".TP\n.B {}\n{}\n", escape(name), numbers));
    }
    page.push_str(POLICY_FILE_TAIL);
    page
}

const POLICY_FILE_BODY: &str = r#".SH NAME
icmp-guard.toml \- icmp\-guard's policy file
.SH SYNOPSIS
.B /etc/icmp\-guard/policy.toml
.SH DESCRIPTION
.PP
A TOML document that says what the XDP program does with each ICMP and ICMPv6 message:
a base profile, then rules applied in file order on top of it, the allow and deny lists of
sources, and the smurf and reflection defences.
.B icmp\-guard policy check
validates a file (every error names the line and column of the value at fault),
.B icmp\-guard policy apply
swaps it in atomically, and
.B icmp\-guard run \-\-policy
watches it and applies every edit within a second. A file that does not validate is never
applied, not even in part.
.SH "TOP-LEVEL KEYS"
.TP
.B mode = "enforce" | "dry\-run"
enforce (the default) drops what the policy says to drop; dry\-run counts it as would_drop
and lets every packet pass, the safe way to try a policy on a live host.
.TP
.B base = "default" | "pass\-all"
default is the safe profile built on RFC 4890, RFC 1122, RFC 1191 and RFC 6918: the errors
the network needs (destination unreachable, time exceeded, parameter problem, IPv6 packet
too big), neighbour discovery and MLD pass; echo requests are rate limited; redirects,
source quench, router discovery, timestamps, deprecated and unassigned types are dropped.
pass\-all passes every type, for an operator who only wants counters.
.SH "[[rule]] TABLES"
.PP
Each rule sets the action for one type, or for some codes of it. A later rule for the same
type replaces an earlier one, and a rule for a whole type clears that type's per\-code rules:
put per\-code rules after the rule for their type.
.TP
.B type
A name (see TYPE NAMES) or a number from 0 to 255. A name applies to every family that has
it unless family narrows it; a number needs family.
.TP
.B family = "v4" | "v6" | "both"
The IP version the rule is for.
.TP
.B codes = [N | "NAME", ...]
Per\-code rules instead of one for the whole type. A code is a number or a name as nft or
iptables spell it (frag\-needed, port\-unreachable, admin\-prohibited, no\-route,
addr\-unreachable, policy\-fail, fragmentation\-needed, ...); a name means the matching code
in each family of the rule, and without family applies in the families whose type has it.
.TP
.B action = "pass" | "drop" | "limit"
limit admits packets under a token bucket and drops the rest as rate_limit.
.TP
.B rate = N | "N/UNIT", burst = N
limit only: packets per second, and the bucket depth in packets. As a string, nft's units:
"10/second", "600/minute", "36000/hour", "864000/day" (iptables' abbreviations too), which
must come to whole packets per second.
.TP
.B per = "source" | "prefix" | "global"
limit only: who shares a bucket: each source address, each source prefix, or everybody.
.TP
.B prefix_v4 = 1..32, prefix_v6 = 1..128
per = "prefix" only: how sources are grouped (24 and 64 unless set).
.TP
.B new_source_rate = N, new_source_burst = N
limit per source or prefix only: the budget shared by sources that have no bucket yet
(10 times rate and burst unless set). This budget is what caps a flood from spoofed
random sources.
.TP
.B block = "DURATION"
limit per source or prefix only: a source whose bucket refuses it is blocked this long
("60s", "5m", "1h30m", 500ms; at most 1d): all its ICMP is dropped as blocked, never its
TCP or UDP, and never its IPv4 3/4, IPv6 packet too big or neighbour discovery. The block
holds the source address (also for per = "prefix"). icmp\-guard unblock lifts it early.
.TP
.B bytes = "RATE", bytes_burst = "SIZE"
limit only: a byte rate besides the packet rate, in the same scope, counting the bytes of
the IP packet: nft's and tc's units ("1MiB/s", "8Mbit/s", "10 mbytes/second",
"600MB/minute"). bytes_burst is the byte bucket's depth ("2MiB"; one second's worth and at
least 64KiB unless set; at least 1500). Packets over it are dropped as rate_limit.
.TP
.B max_size = N
pass and limit only: the largest IP packet admitted, 28 to 65535 bytes (the IPv4 total
length, or 40 plus the IPv6 payload length); larger ones are dropped as oversize. A
fragmented datagram is judged by its first fragment; the rest meet the fragment budget.
.TP
.B force = true
Required to drop or rate\-limit a message the network needs: IPv4 3/4 (fragmentation
needed, RFC 1191), IPv6 packet too big (RFC 8201) and neighbour discovery (RFC 4861).
Without it such a rule is refused with the RFC it would break.
.SH "[lists] TABLE"
.TP
.B allow = ["CIDR", ...]
Sources that bypass the deny list and every rate limit: your monitoring hosts.
.TP
.B deny = ["CIDR", ...]
Sources whose ICMP is always dropped. A prefix may not be on both lists. One policy holds
at most 8192 prefixes per family.
.TP
.B force = true
Required for deny entries that cover ::, link\-local addresses, an on\-link IPv6 prefix of
an attached interface (neighbour discovery, MLD: RFC 4861, RFC 3810) or 0.0.0.0/0 (Path
MTU Discovery: RFC 1191).
.SH "[smurf] TABLE"
.TP
.B broadcast_echo = true
Drop IPv4 echo and timestamp requests sent to a broadcast or multicast destination (the
broadcast MAC, multicast MACs, 255.255.255.255, 224.0.0.0/4, and the directed broadcasts of
the attached interfaces' subnets).
.TP
.B multicast_echo_v6 = true
Drop ICMPv6 echo requests to multicast groups beyond link\-local scope.
.TP
.B martian_sources = true
Drop ICMP from sources no packet may carry (0/8, 127/8, 224/4, 240/4, IPv6 multicast,
::1) as invalid.
.TP
.B reply_ceiling = N, reply_ceiling_burst = N
Echo replies per second (and burst) admitted from sources without a bucket: the ceiling a
reflection flood runs into. Replies over it count as smurf.
"#;

const POLICY_FILE_TAIL: &str = r#".SH EXAMPLES
.PP
.nf
.RS 4
mode = "enforce"
base = "default"

# Monitoring still probes with ICMP timestamps.
[[rule]]
type = "timestamp\-request"
family = "v4"
action = "pass"

# Answer 50 pings a second per source, bursts of 100.
[[rule]]
type = "echo\-request"
action = "limit"
rate = 50
burst = 100
per = "source"

[lists]
allow = ["192.0.2.10/32", "2001:db8::10/128"]
deny = ["203.0.113.0/24"]
.RE
.fi
.PP
Check it, then apply it:
.PP
.nf
.RS 4
icmp\-guard policy check /etc/icmp\-guard/policy.toml
sudo icmp\-guard policy apply /etc/icmp\-guard/policy.toml
.RE
.fi
.SH FILES
.TP
.B /etc/icmp\-guard/policy.toml
The policy the systemd unit applies and watches.
.TP
.B /usr/share/doc/icmp\-guard/examples/policy.toml
A commented starting point.
.SH "SEE ALSO"
.BR icmp\-guard (8),
.BR icmp\-guard\-policy (8),
.BR nft (8),
.BR xdp\-loader (8)
"#;

#[cfg(test)]
mod tests {
    use icmp_guard::bpf::pins::DEFAULT_PIN_DIR;

    use super::*;

    fn page(all: &[Page], path: &str) -> String {
        all.iter()
            .find(|page| page.path == path)
            .unwrap_or_else(|| panic!("no {path}"))
            .text
            .clone()
    }

    #[test]
    fn every_command_has_a_section_8_page_with_the_operator_sections() {
        let all = pages(super::super::completions::command());
        for path in [
            "man8/icmp-guard.8",
            "man8/icmp-guard-attach.8",
            "man8/icmp-guard-run.8",
            "man8/icmp-guard-policy.8",
            "man8/icmp-guard-policy-check.8",
            "man5/icmp-guard.toml.5",
        ] {
            assert!(all.iter().any(|page| page.path == path), "no {path}");
        }
        let top = page(&all, "man8/icmp-guard.8");
        assert!(
            top.lines()
                .nth(2)
                .is_some_and(|line| line.starts_with(".TH ICMP-GUARD 8 \"\" \"icmp-guard ")),
            "{top}"
        );
        assert_eq!(top.matches(".ds Aq").count(), 2, "one preamble:\n{top}");
        for wanted in [
            ".SH \"EXIT STATUS\"",
            ".SH \"FILES\"",
            "/etc/icmp\\-guard/policy.toml",
            "/etc/default/icmp\\-guard",
            "/sys/fs/bpf/icmp\\-guard",
            ".SH \"ENVIRONMENT\"",
            "ICMP_GUARD_PIN_DIR",
            "NO_COLOR",
            ".SH EXAMPLES",
            ".SH \"SEE ALSO\"",
            ".BR nft (8)",
            ".BR xdp\\-loader (8)",
            ".BR bpftool (8)",
            ".BR icmp\\-guard.toml (5)",
        ] {
            assert!(top.contains(wanted), "icmp-guard.8 lacks {wanted}:\n{top}");
        }
        let attach = page(&all, "man8/icmp-guard-attach.8");
        assert!(attach.contains("icmp\\-guard attach eth0"), "{attach}");
        assert!(attach.contains(".BR icmp\\-guard (8)"), "{attach}");
        assert!(
            page(&all, "man8/icmp-guard-policy-check.8").contains("line and column"),
            "policy check documents its exit status"
        );
        assert!(
            DEFAULT_PIN_DIR == "/sys/fs/bpf/icmp-guard",
            "FILES names the pin dir"
        );
    }

    #[test]
    fn the_policy_file_page_lists_every_type_name() {
        let all = pages(super::super::completions::command());
        let toml = page(&all, "man5/icmp-guard.toml.5");
        assert!(toml.starts_with(".TH ICMP-GUARD.TOML 5"), "{toml}");
        for (name, _) in type_names() {
            assert!(
                toml.contains(&escape(name)),
                "icmp-guard.toml.5 lacks {name}"
            );
        }
        for key in [
            "new_source_rate",
            "reply_ceiling",
            "martian_sources",
            "force = true",
        ] {
            assert!(toml.contains(key), "icmp-guard.toml.5 lacks {key}");
        }
    }
}
