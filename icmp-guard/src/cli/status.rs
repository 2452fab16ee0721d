use icmp_guard::host::kernel_view::KernelView;

use super::{Context, render};

/// Show where the guard is attached and in which mode the kernel runs it, and the kernel's
/// own ICMP settings and counters in this network namespace.
///
/// Example: icmp-guard status --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    let guard = context.open()?;
    let status = guard.status()?;
    let kernel = KernelView::read();
    if args.json {
        println!("{}", render::status::json(guard.pins(), &status, &kernel)?);
    } else {
        print!("{}", render::status::text(guard.pins(), &status, &kernel));
    }
    Ok(())
}
