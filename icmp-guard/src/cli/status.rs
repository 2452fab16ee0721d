use icmp_guard::{
    kernel_view::KernelView,
    loader::{self, GuardMaps},
    stats,
};

use super::Context;

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
    context.preflight()?;
    let links = loader::links(&context.pins)?;
    let mode = if context.pins.has_maps() {
        Some(stats::mode_name(GuardMaps::open(&context.pins)?.mode()?))
    } else {
        None
    };
    let tracked = if context.pins.has_maps() {
        Some(loader::tracked(&context.pins)?)
    } else {
        None
    };
    let kernel = KernelView::read();
    if args.json {
        let document = serde_json::json!({
            "attached": !links.is_empty(),
            "pin_dir": context.pins.root(),
            "mode": mode,
            "interfaces": links,
            "tracked": tracked,
            "kernel": kernel,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    if links.is_empty() {
        println!("not attached (pin dir {})", context.pins.root().display());
        print!("{}", kernel.render_text());
        return Ok(());
    }
    println!(
        "mode: {}    pin dir: {}",
        mode.unwrap_or("unknown"),
        context.pins.root().display()
    );
    if let Some(tracked) = tracked {
        println!(
            "rate-limit buckets (estimated): {} of {} sources, {} of {} prefixes",
            tracked.sources, tracked.sources_capacity, tracked.prefixes, tracked.prefixes_capacity
        );
    }
    for link in links {
        let name = link.name.as_deref().unwrap_or("<gone>");
        let xdp = link
            .mode
            .map_or("not running (interface gone or program replaced)", |m| {
                m.as_str()
            });
        println!(
            "{name:<16} ifindex {:<5} {xdp:<8} program {} link {}",
            link.ifindex, link.program_id, link.link_id
        );
    }
    print!("{}", kernel.render_text());
    Ok(())
}
