use icmp_guard::host::kernel_view::KernelView;

use super::{Context, render};

/// Show where the guard is attached in this network namespace, whether each interface is
/// protected (or damaged, or waiting for a `run`), what else the pin directory holds, and
/// the kernel's own ICMP settings and counters.
///
/// With --check it prints one line per interface and exits 0 when every one is protected,
/// 1 when one is not (not attached, not running, gone, waiting), 2 when one is damaged:
/// for monitoring and configuration management.
///
/// Example: icmp-guard status --check eth0 eth1
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,

    /// Exit 0 when protected, 1 when not, 2 when damaged.
    #[arg(long)]
    check: bool,

    /// With --check: the interfaces that must be protected (default: every interface this
    /// namespace has attached).
    #[arg(value_name = "IFACE", requires = "check")]
    interfaces: Vec<String>,
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    let guard = context.open()?;
    if args.check {
        let check = guard.check(&args.interfaces)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&check)?);
        } else {
            print!("{}", render::status::check(&check));
        }
        if check.code != 0 {
            return Err(super::Exit(check.code).into());
        }
        return Ok(());
    }
    let status = guard.status()?;
    let kernel = KernelView::read();
    if args.json {
        println!("{}", render::status::json(&status, &kernel)?);
    } else {
        print!("{}", render::status::text(&status, &kernel));
    }
    Ok(())
}
