use icmp_guard::guard::Detach;

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
    let guard = context.open()?;
    let which = if args.all {
        Detach::All
    } else {
        Detach::Named(args.interfaces)
    };
    let report = guard.detach(&which)?;
    if !report.had_pins && args.all {
        println!(
            "icmp-guard is not attached (no pins in {}); nothing to do",
            guard.pins().root().display()
        );
    }
    if report.had_pins && args.all && report.interfaces.is_empty() && report.gone_removed.is_empty()
    {
        println!("icmp-guard is not attached; nothing to do");
    }
    for (name, detached) in &report.interfaces {
        if *detached {
            println!("detached from {name}");
        } else {
            println!("icmp-guard was not attached to {name}; nothing to do");
        }
    }
    for ifindex in &report.gone_removed {
        println!("removed the link of a deleted interface (ifindex {ifindex})");
    }
    Ok(())
}
