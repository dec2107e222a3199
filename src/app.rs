//! Wiring: the data plane, the session manager and the control servers, started together and
//! stopped together on SIGINT/SIGTERM.

use crate::config::Config;
use crate::dataplane::DataPlane;

pub fn run(config: Config) -> anyhow::Result<()> {
    let dataplane = DataPlane::start(&config)?;
    tracing::info!(
        interface = %config.interface.local,
        advertised = %config.interface.advertised,
        ports = format!("{}-{}", config.port_min, config.port_max),
        threads = config.num_threads,
        engine = dataplane.engine().name(),
        "rtpanchor media relay started"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("rtpanchor-ctl")
        .build()?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        drop(dataplane);
        anyhow::Ok(())
    })
}
