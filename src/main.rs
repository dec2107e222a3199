//! `rtpanchor`: parse flags, load the config, start the data plane and the control servers.

use clap::Parser;
use mimalloc::MiMalloc;

use rtpanchor::config::{Cli, Config, Subcommand};
use rtpanchor::lifecycle::Lifecycle;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

// mimalloc 2.x (the crate's `v2` feature), not 3.x: with 10,000 calls held, 3.x kept the
// freed ng set-up replies resident (2.4-2.7 KB per call once the reply cache had expired)
// where 2.x gives them back (1.3-1.5 KB); BENCHMARKS.md § Memory.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    // `rtpanchor ctl ...`: the control tool, same binary.
    if std::env::args().nth(1).as_deref() == Some("ctl") {
        std::process::exit(rtpanchor::ctl::main(std::env::args().skip(2)));
    }
    let cli = Cli::parse();
    if let Some(Subcommand::Passwd { user, realm }) = &cli.command {
        // The password comes from stdin (one line), never from the command line, where
        // other users could see it.
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        let password = password.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "no password on stdin");
        println!(
            "{}",
            rtpanchor::sip::auth::passwd_line(user, realm, password)
        );
        return Ok(());
    }
    let config = Config::load(&cli)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| anyhow::anyhow!("bad --log-level {:?}: {e}", config.log_level))?;
    // The filter sits behind a reload handle: `ctl set log-level` and SIGHUP change it live.
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour only on a terminal: journald and log files get plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let lifecycle = Lifecycle::new();
    lifecycle.set_log_level_setter(Box::new(move |level| {
        let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        reload.reload(f).map_err(|e| e.to_string())
    }));
    // A worker reports at most one contained panic a second (the counters have them all).
    rtpanchor::dataplane::panic_hook::install();
    rtpanchor::app::run_with(config, lifecycle, Some(cli))
}
