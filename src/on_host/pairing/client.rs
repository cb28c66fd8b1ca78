//! A remote host's pairing client: fetches its agents' secret files from
//! the hub over the overlay and writes them 0400 for each agent, replacing
//! older ones (so rerunning it after a rotation on the hub is enough).

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::server::send;
use super::{
    AgentFilesContent, ClientConfig, HANDED_FILES, Handover, Hello, MAX_LINE, PROTOCOL, ProofMessage, decode_key, proof,
};
use crate::on_host::bootstrap::secrets::{self, DIR_MODE, Outcome, Owner, TRAVERSE_MODE};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    pub config: ClientConfig,
    pub hub: std::net::SocketAddrV4,
    pub state_dir: PathBuf,
    pub private_key: [u8; 32],
}

impl Client {
    /// Asks the hub until it answers with every agent's files or `timeout`
    /// passes, then writes them. `log` gets each distinct failure once and
    /// one line per agent, never a secret.
    pub fn run(&self, timeout: Duration, log: &mut dyn FnMut(String)) -> Result<()> {
        let hub_key = self.config.hub_public_key.as_deref().with_context(|| {
            format!(
                "host `{}` does not know the hub's WireGuard public key\nhint: put the hub's `wireguard-public-key` in appliance.toml, regenerate and rebuild (docs/pairing.md)",
                self.config.host
            )
        })?;
        let hub_key = decode_key(hub_key, "the hub's public key")?;
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let mut delay = Duration::from_millis(200);
        let agents = loop {
            match self.fetch(&hub_key) {
                Ok(agents) => break agents,
                Err(e) => {
                    let text = format!("{e:#}");
                    if Instant::now() + delay > deadline {
                        bail!(
                            "pairing with the hub at {} failed for {} s (last: {text})\nhint: check the overlay (`wg show`), that the hub has this host's key in its spec, and `journalctl -u appliance-pairing` on the hub",
                            self.hub,
                            timeout.as_secs()
                        );
                    }
                    if text != last {
                        log(format!("waiting for the hub at {}: {text}", self.hub));
                        last = text;
                    }
                    sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        self.write(&agents, log)
    }

    /// One exchange with the hub.
    fn fetch(&self, hub_key: &[u8; 32]) -> Result<AgentFilesContent> {
        let stream = TcpStream::connect_timeout(&SocketAddr::V4(self.hub), CONNECT_TIMEOUT)
            .with_context(|| format!("failed to connect to {}", self.hub))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        // The address the hub sees us as: ours on the overlay.
        let IpAddr::V4(own) = stream.local_addr()?.ip() else {
            bail!("connected to the hub over IPv6; the overlay is IPv4");
        };
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream.take(MAX_LINE));
        let hello: Hello = serde_json::from_str(&read_line(&mut reader)?).context("the hub sent no greeting")?;
        if hello.protocol != PROTOCOL {
            bail!(
                "the hub speaks `{}`, this `appliance` speaks `{PROTOCOL}`; update both to the same version",
                hello.protocol
            );
        }
        send(
            &mut writer,
            &ProofMessage {
                proof: proof(&self.private_key, hub_key, &hello.nonce, own),
            },
        )?;
        let handover: Handover =
            serde_json::from_str(&read_line(&mut reader)?).context("the hub's answer is not pairing JSON")?;
        if let Some(error) = handover.error {
            bail!("the hub refused: {error}");
        }
        for agent in self.config.agents.keys() {
            if !handover.agents.contains_key(agent) {
                bail!("the hub sent nothing for agent `{agent}`; are both hosts built from the same spec?");
            }
        }
        Ok(handover.agents)
    }

    /// Writes each configured agent's files (only those names), 0400 for
    /// the agent's uid in a 0700 directory.
    fn write(&self, agents: &AgentFilesContent, log: &mut dyn FnMut(String)) -> Result<()> {
        secrets::ensure_dir(&self.state_dir, TRAVERSE_MODE, Owner::ROOT)?;
        for (agent, target) in &self.config.agents {
            let owner = Owner {
                uid: target.uid,
                gid: target.gid,
            };
            let mut dir = self.state_dir.clone();
            let components: Vec<&str> = target.secrets_dir.split('/').collect();
            if components.iter().any(|c| c.is_empty() || *c == "..") {
                bail!(
                    "pairing config path `{}` must be relative, without `..`",
                    target.secrets_dir
                );
            }
            for component in &components[..components.len() - 1] {
                dir.push(component);
                secrets::ensure_dir(&dir, TRAVERSE_MODE, Owner::ROOT)?;
            }
            dir.push(components[components.len() - 1]);
            secrets::ensure_dir(&dir, DIR_MODE, owner)?;
            let mut written = Vec::new();
            for name in HANDED_FILES {
                let content = agents[agent]
                    .get(name)
                    .with_context(|| format!("the hub sent no `{name}` for agent `{agent}`"))?;
                if secrets::write(&dir.join(name), content, owner)? == Outcome::Created {
                    written.push(name);
                }
            }
            log(if written.is_empty() {
                format!("{agent}: secrets unchanged in {}", dir.display())
            } else {
                format!("{agent}: wrote {} in {}", written.join(", "), dir.display())
            });
        }
        Ok(())
    }
}

fn read_line(reader: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).context("failed to read from the hub")?;
    if n == 0 {
        bail!("the hub closed the connection");
    }
    Ok(line)
}
