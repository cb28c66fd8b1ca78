//! The hub's pairing server: hands each remote host exactly its own
//! agents' secret files, and nothing to anyone else.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{
    AgentFilesContent, HANDED_FILES, Handover, Hello, MAX_LINE, PROTOCOL, ProofMessage, ServerConfig, decode_key,
    proof, proofs_equal,
};
use crate::on_host::bootstrap::secrets;

/// How long one connection may take per message: a stalled peer must not
/// hold a thread forever.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    config: ServerConfig,
    state_dir: PathBuf,
    private_key: [u8; 32],
}

impl Server {
    pub fn new(config: ServerConfig, state_dir: PathBuf, private_key: [u8; 32]) -> Server {
        Server {
            config,
            state_dir,
            private_key,
        }
    }

    /// Listens and serves until killed; `log` gets one line per connection
    /// (who, what was handed or why not), never a secret.
    pub fn serve(self, log: impl Fn(String) + Send + Sync + 'static) -> Result<()> {
        let listener = TcpListener::bind(self.config.listen).with_context(|| {
            format!(
                "failed to listen on `{}`\nhint: the address is the hub's overlay address; is the WireGuard interface up?",
                self.config.listen
            )
        })?;
        log(format!("pairing server listening on {}", self.config.listen));
        let server = Arc::new(self);
        let log = Arc::new(log);
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (server, log) = (Arc::clone(&server), Arc::clone(&log));
            std::thread::spawn(move || {
                let peer = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                match server.handle(stream) {
                    Ok(line) => log(format!("{peer}: {line}")),
                    Err(e) => log(format!("{peer}: {e:#}")),
                }
            });
        }
        Ok(())
    }

    /// One connection: hello, proof, then the files or a refusal. Returns
    /// what to log.
    fn handle(&self, stream: TcpStream) -> Result<String> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let nonce = secrets::random_hex(32)?;
        let mut writer = stream.try_clone()?;
        send(
            &mut writer,
            &Hello {
                protocol: PROTOCOL.to_string(),
                nonce: nonce.clone(),
            },
        )?;
        let mut reader = BufReader::new(stream.take(MAX_LINE));
        let mut line = String::new();
        reader.read_line(&mut line).context("failed to read the proof")?;
        let answer: ProofMessage = serde_json::from_str(&line).context("the client sent no proof")?;
        let peer = match writer.peer_addr()?.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        let handover = match self.handover(peer, &nonce, &answer.proof) {
            Ok((host, agents)) => {
                let names: Vec<&str> = agents.keys().map(String::as_str).collect();
                let logged = format!("host `{host}`: handed {}", names.join(", "));
                send(
                    &mut writer,
                    &Handover {
                        error: None,
                        host: Some(host),
                        agents,
                    },
                )?;
                return Ok(logged);
            }
            Err(refusal) => refusal,
        };
        let logged = format!("refused: {}", handover.logged);
        send(
            &mut writer,
            &Handover {
                error: Some(handover.told),
                ..Handover::default()
            },
        )?;
        Ok(logged)
    }

    /// The files for the peer at `peer`, when its proof holds.
    fn handover(&self, peer: Ipv4Addr, nonce: &str, given: &str) -> Result<(String, AgentFilesContent), Refusal> {
        let Some(entry) = self.config.peers.get(&peer) else {
            return Err(Refusal::same(format!(
                "no host of this appliance has the overlay address {peer}"
            )));
        };
        let Some(key) = &entry.public_key else {
            return Err(Refusal::same(format!(
                "host `{}` is not paired: the spec has no `wireguard-public-key` for it (docs/pairing.md)",
                entry.host
            )));
        };
        let key = decode_key(key, "the peer's public key").map_err(|e| Refusal::same(format!("{e:#}")))?;
        if !proofs_equal(&proof(&self.private_key, &key, nonce, peer), given) {
            return Err(Refusal {
                told: "the proof does not match the WireGuard key of this overlay address".into(),
                logged: format!(
                    "the proof does not match host `{}`'s WireGuard key (someone without its private key, e.g. one of its sandboxes)",
                    entry.host
                ),
            });
        }
        let mut agents = BTreeMap::new();
        for (agent, dir) in &entry.agents {
            let files = read_agent_files(&self.state_dir.join(dir)).map_err(|e| {
                Refusal::same(format!(
                    "agent `{agent}`'s secrets are not ready on the hub ({e:#}); `appliance bootstrap` makes them, retry"
                ))
            })?;
            agents.insert(agent.clone(), files);
        }
        Ok((entry.host.clone(), agents))
    }
}

/// Why a peer got nothing: what it is told and what the hub's log says.
struct Refusal {
    told: String,
    logged: String,
}

impl Refusal {
    fn same(text: String) -> Refusal {
        Refusal {
            told: text.clone(),
            logged: text,
        }
    }
}

/// The handed files of one agent's directory, byte for byte.
fn read_agent_files(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for name in HANDED_FILES {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("`{}` is missing", path.display()))?;
        if text.trim().is_empty() {
            bail!("`{}` is empty", path.display());
        }
        files.insert(name.to_string(), text);
    }
    Ok(files)
}

/// One JSON line.
pub(super) fn send<T: serde::Serialize>(writer: &mut impl Write, message: &T) -> Result<()> {
    let mut line = serde_json::to_string(message)?;
    line.push('\n');
    writer.write_all(line.as_bytes()).context("failed to send")?;
    writer.flush().context("failed to send")
}
