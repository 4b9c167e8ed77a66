use clap::Parser as _;
use lab_cli::{
    cli::Cli,
    commands,
    kernel::{cri, interrupt},
    lab::names,
    output::{
        exit::{self, ExitCode},
        width,
    },
};
use tracing_subscriber::EnvFilter;

/// The name a CNI configuration gives as `type` when labctl is installed
/// in a CNI bin directory (a link or copy of labctl).
const CNI_PLUGIN_NAME: &str = "labctl-cni";

fn main() -> std::process::ExitCode {
    // Called by a container runtime as /opt/cni/bin/labctl-cni: no
    // arguments, the CNI contract in the environment and on stdin.
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_owned()));
    if invoked_as.is_some_and(|n| n == CNI_PLUGIN_NAME) {
        init_logging(0);
        if let Err(e) = interrupt::install() {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
        return commands::cni::plugin_main().into();
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Some(socket) = cli.cri_socket {
        cri::set_socket(socket);
    }
    names::set_warning_printer(|message| eprintln!("{}", width::fill(message, "warning: ", "  ")));
    if let Err(e) = interrupt::install() {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
    match commands::dispatch(cli.command) {
        Ok(outcome) => outcome.into(),
        Err(err) if exit::is_broken_pipe(&err) => ExitCode::Success.into(),
        Err(err) => {
            exit::report(&err);
            exit::classify(&err).into()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
