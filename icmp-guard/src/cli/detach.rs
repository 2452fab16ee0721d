use icmp_guard::{loader, system};

use super::Context;

/// Detach the guard; the last detach removes the pinned maps too.
///
/// Example: icmp-guard detach eth0
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interfaces to stop protecting.
    #[arg(
        value_name = "IFACE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    interfaces: Vec<String>,

    /// Detach from every interface and remove all pinned state.
    #[arg(long)]
    all: bool,
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    context.preflight()?;
    let pins = &context.pins;
    let targets: Vec<(String, u32)> = if args.all {
        pins.linked_ifindexes()?
            .into_iter()
            .map(|ifindex| {
                let name = system::ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
                (name, ifindex)
            })
            .collect()
    } else {
        // Resolve every name before touching anything.
        args.interfaces
            .iter()
            .map(|name| Ok((name.clone(), system::ifindex(name)?)))
            .collect::<Result<_, icmp_guard::error::Error>>()?
    };
    for (name, ifindex) in targets {
        if loader::detach(pins, ifindex)? {
            println!("detached from {name}");
        } else {
            println!("icmp-guard was not attached to {name}; nothing to do");
        }
    }
    pins.remove_if_unused()?;
    Ok(())
}
