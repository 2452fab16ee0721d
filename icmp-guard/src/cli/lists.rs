use icmp_guard::{
    loader::GuardMaps,
    policy::{self, Cidr},
};

use super::{Context, policy::edit_live};

/// Which list a command edits.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    Allow,
    Deny,
}

impl Which {
    const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Edit or show a source list. allow: the sources bypass the deny list and rate limits;
/// deny: all their ICMP is dropped. The most specific prefix wins.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add prefixes.
    ///
    /// Example: icmp-guard deny add 203.0.113.0/24 2001:db8:bad::/48
    Add(CidrArgs),
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
    match command {
        Command::Add(args) => {
            edit_live(context, |live| {
                let (list, other) = match which {
                    Which::Allow => (&mut live.allow, &live.deny),
                    Which::Deny => (&mut live.deny, &live.allow),
                };
                for cidr in &args.cidrs {
                    if other.contains(cidr) {
                        anyhow::bail!(
                            "{cidr} is already in the {} list: remove it there first",
                            match which {
                                Which::Allow => "deny",
                                Which::Deny => "allow",
                            }
                        );
                    }
                    if !list.contains(cidr) {
                        list.push(*cidr);
                    }
                }
                Ok(())
            })?;
            for cidr in &args.cidrs {
                println!("{} list: added {cidr}", which.name());
            }
        }
        Command::Del(args) => {
            let mut missing = Vec::new();
            edit_live(context, |live| {
                let list = match which {
                    Which::Allow => &mut live.allow,
                    Which::Deny => &mut live.deny,
                };
                for cidr in &args.cidrs {
                    if list.contains(cidr) {
                        list.retain(|c| c != cidr);
                    } else {
                        missing.push(*cidr);
                    }
                }
                Ok(())
            })?;
            for cidr in &args.cidrs {
                if missing.contains(cidr) {
                    println!(
                        "{} list: {cidr} was not listed; nothing to do",
                        which.name()
                    );
                } else {
                    println!("{} list: removed {cidr}", which.name());
                }
            }
        }
        Command::List(args) => {
            context.preflight()?;
            let maps = GuardMaps::open(&context.pins)?;
            let live = policy::read_live(&maps)?;
            let list = match which {
                Which::Allow => live.allow,
                Which::Deny => live.deny,
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for cidr in list {
                    println!("{cidr}");
                }
            }
        }
    }
    Ok(())
}
