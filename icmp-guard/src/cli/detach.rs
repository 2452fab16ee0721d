use icmp_guard::{error::Error, loader, system};

use super::Context;

/// Detach the guard; the last detach removes the pinned maps too.
///
/// Links whose interface was deleted are removed by every detach. Detaching what is not
/// attached is not an error: it says "nothing to do" and exits 0.
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
    // Resolve every name before touching anything.
    let named: Vec<(String, u32)> = args
        .interfaces
        .iter()
        .map(|name| {
            system::ifindex(name)
                .map(|ifindex| (name.clone(), ifindex))
                .map_err(|_| Error::DetachUnknownInterface { name: name.clone() })
        })
        .collect::<Result<_, Error>>()?;
    // Serialised with attach, other detaches and policy edits.
    let Some(_lock) = pins.lock()? else {
        if args.all {
            println!(
                "icmp-guard is not attached (no pins in {}); nothing to do",
                pins.root().display()
            );
        }
        for (name, _) in &named {
            println!("icmp-guard was not attached to {name}; nothing to do");
        }
        return Ok(());
    };

    // A broken pin must not block the way out: without statuses every pin is a target.
    let links = loader::links(pins).unwrap_or_default();
    let gone: Vec<u32> = links
        .iter()
        .filter(|link| link.interface_gone)
        .map(|link| link.ifindex)
        .collect();
    let targets: Vec<(String, u32)> = if args.all {
        pins.linked_ifindexes()?
            .into_iter()
            .filter(|ifindex| !gone.contains(ifindex))
            .map(|ifindex| {
                let name = links
                    .iter()
                    .find(|link| link.ifindex == ifindex)
                    .and_then(|link| link.name.clone())
                    .or_else(|| system::ifname(ifindex))
                    .unwrap_or_else(|| format!("ifindex {ifindex}"));
                (name, ifindex)
            })
            .collect()
    } else {
        named
    };
    if args.all && targets.is_empty() && gone.is_empty() {
        println!("icmp-guard is not attached; nothing to do");
    }
    for (name, ifindex) in targets {
        if loader::detach(pins, ifindex)? {
            println!("detached from {name}");
        } else {
            println!("icmp-guard was not attached to {name}; nothing to do");
        }
    }
    // A link whose interface was deleted protects nothing: its pin goes with any detach.
    for ifindex in gone {
        if loader::detach(pins, ifindex)? {
            println!("removed the link of a deleted interface (ifindex {ifindex})");
        }
    }
    pins.remove_if_unused()?;
    Ok(())
}
