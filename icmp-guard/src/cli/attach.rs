use icmp_guard::{
    loader::{self, AttachOptions, Capacity, ModeRequest},
    policy, system,
};

use super::Context;

/// Attach the guard to interfaces; protection stays in place after this command exits.
///
/// Example: icmp-guard attach eth0 --mode auto
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interfaces to protect.
    #[arg(required = true, value_name = "IFACE")]
    interfaces: Vec<String>,

    /// XDP mode: native (driver), generic (skb), or auto (native, else generic).
    #[arg(long, value_enum, default_value_t = ModeRequest::Auto)]
    mode: ModeRequest,

    /// Count every verdict as would_drop and let every packet pass.
    #[arg(long)]
    dry_run: bool,

    /// Policy file to apply before the first packet (default: keep the live policy, or
    /// the safe default profile on a first attach).
    #[arg(long, value_name = "FILE")]
    policy: Option<std::path::PathBuf>,

    /// Rate-limit buckets for sources (about 96 bytes each); first attach only.
    #[arg(long, value_name = "N", default_value_t = Capacity::default().sources,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    max_sources: u32,

    /// Rate-limit buckets for source prefixes; first attach only.
    #[arg(long, value_name = "N", default_value_t = Capacity::default().prefixes,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    max_prefixes: u32,
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    system::require_privileges()?;
    if system::ensure_bpffs(context.pins.root())? {
        println!("mounted bpffs at {}", system::BPFFS_ROOT);
    }
    let policy = args
        .policy
        .as_deref()
        .map(|path| {
            policy::file::parse_file(path)
                .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
        })
        .transpose()?;
    context.preflight()?;
    let options = AttachOptions {
        mode: args.mode,
        dry_run: args.dry_run,
        policy,
        capacity: Capacity {
            sources: args.max_sources,
            prefixes: args.max_prefixes,
        },
    };
    let attached = loader::attach(&context.pins, &args.interfaces, &options)?;
    for interface in attached {
        let mode = interface.mode.map_or("unknown", |mode| mode.as_str());
        match interface.fallback {
            Some(reason) => println!(
                "attached to {} (ifindex {}) in {mode} mode: native XDP was refused ({reason})",
                interface.name, interface.ifindex
            ),
            None => println!(
                "attached to {} (ifindex {}) in {mode} mode",
                interface.name, interface.ifindex
            ),
        }
    }
    if args.dry_run {
        println!("dry-run: verdicts are counted as would_drop, every packet passes");
    }
    Ok(())
}
