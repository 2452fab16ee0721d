use icmp_guard::policy::{Cidr, List};

use super::Context;

/// Which list a command edits.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    Allow,
    Deny,
}

impl Which {
    const fn list(self) -> List {
        match self {
            Self::Allow => List::Allow,
            Self::Deny => List::Deny,
        }
    }
}

/// Edit or show a source list. allow: the sources bypass the deny list and rate limits;
/// deny: all their ICMP is dropped. The most specific prefix wins.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add prefixes. A deny entry that covers `::`, link-local addresses, an on-link
    /// prefix of an attached interface or 0.0.0.0/0 needs --force: it would drop neighbour
    /// discovery, MLD or Path MTU Discovery.
    ///
    /// Example: icmp-guard deny add 203.0.113.0/24 2001:db8:bad::/48
    Add(AddArgs),
    /// Remove prefixes.
    ///
    /// Example: icmp-guard deny del 203.0.113.0/24
    Del(CidrArgs),
    /// Show the list.
    ///
    /// Example: icmp-guard allow list --json
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// IPv4 or IPv6 prefixes (an address alone means /32 or /128).
    #[arg(required = true, value_name = "CIDR")]
    cidrs: Vec<Cidr>,

    /// Allow deny entries that cover messages the network needs (neighbour discovery,
    /// MLD, Path MTU Discovery).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
pub struct CidrArgs {
    /// IPv4 or IPv6 prefixes (an address alone means /32 or /128).
    #[arg(required = true, value_name = "CIDR")]
    cidrs: Vec<Cidr>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn execute(which: Which, command: Command, context: &Context) -> anyhow::Result<()> {
    let list = which.list();
    let guard = context.open()?;
    match command {
        Command::Add(args) => {
            guard.edit_policy(|live| {
                live.force_lists = args.force;
                live.add_to_list(list, &args.cidrs)
            })?;
            for cidr in &args.cidrs {
                println!("{} list: added {cidr}", list.name());
            }
        }
        Command::Del(args) => {
            let missing = guard.edit_policy(|live| Ok(live.remove_from_list(list, &args.cidrs)))?;
            for cidr in &args.cidrs {
                if missing.contains(cidr) {
                    println!("{} list: {cidr} was not listed; nothing to do", list.name());
                } else {
                    println!("{} list: removed {cidr}", list.name());
                }
            }
        }
        Command::List(args) => {
            let live = guard.policy()?.policy;
            let entries = live.list(list);
            if args.json {
                println!("{}", serde_json::to_string_pretty(entries)?);
            } else {
                for cidr in entries {
                    println!("{cidr}");
                }
            }
        }
    }
    Ok(())
}
