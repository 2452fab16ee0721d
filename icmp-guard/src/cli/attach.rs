use std::path::{Path, PathBuf};

use icmp_guard::{
    bpf::{Capacity, dispatcher, links::ModeRequest},
    guard::{AttachOptions, Recovery},
    policy,
};

use super::Context;

/// The policy file a first attach applies when `--policy` is not given and it exists.
pub const DEFAULT_POLICY_FILE: &str = "/etc/icmp-guard/policy.toml";

/// Attach the guard to interfaces; protection stays in place after this command exits.
///
/// Example: icmp-guard attach eth0 --mode auto
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interfaces to protect.
    #[arg(required = true, value_name = "IFACE")]
    interfaces: Vec<String>,

    /// XDP mode: native (driver), generic (skb), or auto (native, else generic); drv and
    /// skb are accepted as xdp-loader spells them.
    #[arg(long, value_enum, default_value_t = ModeRequest::Auto)]
    mode: ModeRequest,

    /// Count every verdict as would_drop and let every packet pass.
    #[arg(long)]
    dry_run: bool,

    /// Policy file to apply before the first packet (default: keep the live policy; on a
    /// first attach, /etc/icmp-guard/policy.toml if it exists, else the safe default
    /// profile).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Upgrade without a gap: where this pin directory already has a link on an interface,
    /// swap this binary's program into it atomically (bpf_link_update) with the same maps,
    /// counters and policy, instead of refusing with "already attached"; the link keeps its
    /// mode. Refused when the pinned maps have another layout.
    #[arg(long)]
    upgrade: bool,

    /// Idempotent, for configuration management: an interface this pin directory already
    /// guards is left as it is ("already guarded", exit 0) instead of refused; the others
    /// are attached. A damaged guard is still refused.
    #[arg(long, conflicts_with_all = ["upgrade", "replace"])]
    ensure: bool,

    /// Take the place of another XDP program already on the interface (refused without
    /// this): it is removed, then icmp-guard attached, leaving the interface without XDP for
    /// the microseconds between the two. A program held by someone's bpf_link cannot be
    /// removed this way and is refused.
    #[arg(long)]
    replace: bool,

    /// Share the interface with other XDP programs: join its libxdp dispatcher (xdp-filter,
    /// xdp-loader) as one of its programs instead of taking the interface; where it runs no
    /// XDP program, make a dispatcher holding icmp-guard that others can join. `detach`
    /// leaves the other programs running. Needs libxdp's xdp-dispatcher.o (Debian: libxdp1)
    /// and a kernel that loads program extensions.
    #[arg(long, conflicts_with_all = ["upgrade", "replace", "ensure"])]
    multiprog: bool,

    /// With --multiprog: the run priority in the dispatcher, lower runs first (xdp-filter
    /// runs at 10).
    #[arg(long, value_name = "N", requires = "multiprog",
          default_value_t = dispatcher::DEFAULT_PRIORITY)]
    priority: u32,

    /// Sampled events per second per CPU for `top` and the `run` drop log (0: off);
    /// default: keep the live setting, or 1000 on a first attach.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    events_per_sec: Option<u32>,

    /// Rate-limit buckets for sources (about 96 bytes each); first attach only.
    #[arg(long, value_name = "N", default_value_t = Capacity::default().sources,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    max_sources: u32,

    /// Rate-limit buckets for source prefixes; first attach only.
    #[arg(long, value_name = "N", default_value_t = Capacity::default().prefixes,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    max_prefixes: u32,
}

/// The policy file to apply: the one given, else on a first attach (`fresh`) the default
/// file when it exists, else none.
fn policy_file(explicit: Option<&Path>, fresh: bool, default: &Path) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_path_buf()),
        None if fresh && default.is_file() => Some(default.to_path_buf()),
        None => None,
    }
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    let guard = context.open_mounting()?;
    let first = guard.is_first_attach();
    let file = policy_file(
        args.policy.as_deref(),
        first,
        Path::new(DEFAULT_POLICY_FILE),
    );
    let policy = file
        .as_deref()
        .map(|path| {
            policy::file::read(path).map_err(|err| {
                if args.policy.is_some() {
                    anyhow::anyhow!(err)
                } else {
                    anyhow::anyhow!(
                        "{err} (the default policy file: fix it, or pass --policy FILE)"
                    )
                }
            })
        })
        .transpose()?;
    let (policy, first_policy) = if args.policy.is_some() {
        (policy, None)
    } else {
        (None, policy)
    };
    let options = AttachOptions {
        mode: args.mode,
        dry_run: args.dry_run,
        policy,
        first_policy,
        ensure: args.ensure,
        capacity: Capacity {
            sources: args.max_sources,
            prefixes: args.max_prefixes,
        },
        upgrade: args.upgrade,
        replace: args.replace,
        events_per_sec: args.events_per_sec,
        multiprog: args.multiprog.then_some(args.priority),
    };
    let attachment = guard.attach(&args.interfaces, &options)?;
    let pin_dir = guard.pins().root().display();
    match attachment.recovered {
        Some(Recovery::Rebuilt) => println!(
            "an earlier attach was interrupted before it finished: rebuilt the pinned maps in {pin_dir}"
        ),
        Some(Recovery::Completed) => println!(
            "an earlier attach was interrupted before it finished: completed the pinned maps in {pin_dir} with {}",
            file.as_deref().map_or_else(
                || "the safe default profile".to_owned(),
                |path| path.display().to_string()
            )
        ),
        None => {}
    }
    if let (Some(path), true) = (&file, attachment.policy_applied) {
        println!("applied policy {}", path.display());
    }
    for interface in attachment.interfaces {
        let mode = interface.mode.map_or("unknown", |mode| mode.as_str());
        let (name, ifindex) = (&interface.name, interface.ifindex);
        if interface.already {
            println!(
                "{name} (ifindex {ifindex}) is already guarded in {mode} mode (program {}, link {}): nothing to do",
                interface.program_id, interface.link_id
            );
            continue;
        }
        if let Some(joined) = &interface.multiprog {
            let dispatcher = match joined.replaced {
                Some(old) => format!(
                    "libxdp dispatcher {} (which replaced dispatcher {old})",
                    joined.dispatcher_id
                ),
                None => format!("a new libxdp dispatcher, {}", joined.dispatcher_id),
            };
            println!(
                "attached to {name} (ifindex {ifindex}) in {mode} mode as program {} of {} in {dispatcher}: priority {}, program {}",
                joined.position + 1,
                joined.programs,
                args.priority,
                joined.program_id,
            );
            continue;
        }
        match (interface.upgraded_from, interface.fallback) {
            (Some(old), _) => println!(
                "upgraded {name} (ifindex {ifindex}) in {mode} mode: program {old} replaced by {} in link {} without a gap",
                interface.program_id, interface.link_id
            ),
            (None, Some(reason)) => println!(
                "attached to {name} (ifindex {ifindex}) in {mode} mode: native XDP was refused ({reason})"
            ),
            (None, None) => println!("attached to {name} (ifindex {ifindex}) in {mode} mode"),
        }
        if let Some(other) = interface.replaced {
            println!("{name}: replaced the XDP program that was there (id {other})");
        }
    }
    if args.dry_run {
        println!("dry-run: verdicts are counted as would_drop, every packet passes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_xdp_loader_spells_them() {
        use clap::Parser as _;
        for (typed, mode) in [
            ("skb", ModeRequest::Generic),
            ("generic", ModeRequest::Generic),
            ("drv", ModeRequest::Native),
            ("native", ModeRequest::Native),
            ("unspecified", ModeRequest::Auto),
            ("auto", ModeRequest::Auto),
        ] {
            let cli = crate::Cli::try_parse_from(["icmp-guard", "attach", "eth0", "--mode", typed])
                .unwrap_or_else(|err| panic!("--mode {typed}: {err}"));
            match cli.command {
                crate::cli::Command::Attach(args) => assert_eq!(args.mode, mode, "{typed}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(
            crate::Cli::try_parse_from(["icmp-guard", "attach", "eth0", "--mode", "hw"]).is_err()
        );
    }

    #[test]
    fn the_default_policy_file_applies_only_to_a_first_attach_without_policy() {
        let dir = std::env::temp_dir().join(format!("icmp-guard-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let default = dir.join("policy.toml");
        let explicit = dir.join("mine.toml");
        let missing = dir.join("missing.toml");
        std::fs::write(&default, "mode = \"enforce\"\n").expect("write");

        assert_eq!(policy_file(None, true, &default), Some(default.clone()));
        assert_eq!(policy_file(None, false, &default), None, "live policy kept");
        assert_eq!(
            policy_file(None, true, &missing),
            None,
            "safe default profile"
        );
        assert_eq!(
            policy_file(None, true, &dir),
            None,
            "a directory is no file"
        );
        for fresh in [true, false] {
            assert_eq!(
                policy_file(Some(&explicit), fresh, &default),
                Some(explicit.clone()),
                "--policy wins"
            );
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
