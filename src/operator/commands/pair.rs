//! `appliance pair` (remote host) and `appliance pair-serve` (the hub):
//! agents' credentials cross the overlay, authenticated by WireGuard
//! identity, instead of being copied by hand (docs/pairing.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::on_host::pairing::client::Client;
use crate::on_host::pairing::server::Server;
use crate::on_host::pairing::{ClientConfig, ServerConfig, load, read_private_key};
use crate::operator::cli::{PairArgs, PairServeArgs};

pub fn run(args: &PairArgs) -> Result<()> {
    let config: ClientConfig = load(&args.config)?;
    let key_file = args
        .private_key
        .clone()
        .unwrap_or_else(|| PathBuf::from(&config.private_key_file));
    let client = Client {
        hub: args.hub.unwrap_or(config.hub),
        state_dir: args
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&config.state_dir)),
        private_key: read_private_key(&key_file)?,
        config,
    };
    client.run(Duration::from_secs(args.timeout), &mut |line| {
        // A closed log is no reason to stop halfway.
        let _ = crate::common::term::println(&line);
    })?;
    crate::common::term::println(&format!(
        "paired host `{}` with the hub at {}",
        client.config.host, client.hub
    ))
}

pub fn serve(args: &PairServeArgs) -> Result<()> {
    let mut config: ServerConfig = load(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let key_file = args
        .private_key
        .clone()
        .unwrap_or_else(|| PathBuf::from(&config.private_key_file));
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&config.state_dir));
    let private_key = read_private_key(&key_file)?;
    Server::new(config, state_dir, private_key).serve(|line| {
        // A server outlives whoever reads its log.
        let _ = crate::common::term::println(&line);
    })
}
