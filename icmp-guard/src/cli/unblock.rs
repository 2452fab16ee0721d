use icmp_guard::policy::Cidr;

use super::Context;

/// Lift block-time blocks (see `policy set ... --block`): the sources inside the given
/// prefixes, or every one with --all, get their ICMP judged by the policy again at once.
///
/// Unblocking a source that is not blocked is not an error: it says "nothing to do" and
/// exits 0, as `detach` does.
///
/// Example: icmp-guard unblock 192.0.2.7 2001:db8::/32
#[derive(Debug, clap::Args)]
pub struct Args {
    /// IPv4 or IPv6 prefixes (an address alone means /32 or /128).
    #[arg(
        value_name = "CIDR",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    cidrs: Vec<Cidr>,

    /// Lift every block.
    #[arg(long)]
    all: bool,
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    let guard = context.open()?;
    let lifted = guard.unblock(if args.all { None } else { Some(&args.cidrs) })?;
    if lifted.sources.is_empty() && lifted.sweeps.is_empty() {
        let what = if args.all {
            "no source is blocked".to_owned()
        } else {
            let cidrs: Vec<String> = args.cidrs.iter().map(ToString::to_string).collect();
            format!("no blocked source in {}", cidrs.join(" "))
        };
        say!("{what}; nothing to do");
    }
    for source in lifted.sources {
        say!("unblocked {source}");
    }
    for network in lifted.sweeps {
        say!("unblocked {network} (flagged as sweeping; its count starts again)");
    }
    Ok(())
}
