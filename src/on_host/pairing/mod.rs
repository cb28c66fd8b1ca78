//! Pairing: a remote host's agents get their Matrix credentials from the
//! hub over the WireGuard overlay, so no secret is copied by hand and none
//! is in either image. Documented in docs/pairing.md.
//!
//! The hub's server (`appliance pair-serve`) listens on the hub's overlay
//! address only. A peer is known by two things, both bound to its
//! WireGuard private key: its overlay source address (WireGuard's
//! allowed-ips let only that key's packets carry it), and a proof that it
//! holds the key itself: an HMAC keyed with the static X25519 secret of the
//! two hosts' WireGuard keys over a fresh nonce. The second is what keeps
//! the peer's own sandboxes out: their traffic to the hub leaves the peer
//! masqueraded to its overlay address, but they cannot read its key.
//!
//! One TCP connection, one JSON object per line:
//! server `{"protocol", "nonce"}`, client `{"proof"}`, server the files or
//! `{"error"}`.

pub mod client;
use crate::schema::pairing as config;
pub mod server;

pub use config::{AgentFiles, CONFIG_SCHEMA, ClientConfig, Peer, ServerConfig, load};

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// Spoken on the wire; a client and server of different versions refuse
/// each other clearly.
pub const PROTOCOL: &str = "agent-appliance-pairing/1";
/// The files of an agent's secrets directory a peer is handed.
pub const HANDED_FILES: [&str; 2] = [
    crate::on_host::bootstrap::ENV_FILE,
    crate::on_host::bootstrap::TOKEN_FILE,
];
/// Longest line either side accepts: the handed files are small.
pub const MAX_LINE: u64 = 1 << 20;

/// The server's first line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: String,
    pub nonce: String,
}

/// The client's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProofMessage {
    pub proof: String,
}

/// Each agent's handed files: agent -> file name -> content.
pub type AgentFilesContent = BTreeMap<String, BTreeMap<String, String>>;

/// The server's last line: the files of each agent, or why not.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Handover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Agent -> file name -> content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: AgentFilesContent,
}

/// A WireGuard key (base64 of 32 bytes), private or public.
pub fn decode_key(text: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("{what} is not a WireGuard key (base64 of 32 bytes)"))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Reads this host's WireGuard private key.
pub fn read_private_key(path: &Path) -> Result<[u8; 32]> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("failed to read this host's WireGuard private key `{}`", path.display()))?;
    decode_key(&text, &format!("`{}`", path.display()))
}

/// The proof that the peer at `peer` holds the private key of its
/// WireGuard identity: HMAC-SHA256 keyed with the X25519 secret of the two
/// keys (the same on both sides), over the nonce and the peer's address.
pub fn proof(own_private: &[u8; 32], other_public: &[u8; 32], nonce: &str, peer: Ipv4Addr) -> String {
    let secret = x25519_dalek::StaticSecret::from(*own_private);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*other_public));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(shared.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(PROTOCOL.as_bytes());
    mac.update(b"\0");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(peer.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares two proofs in time independent of where they differ.
pub fn proofs_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(private: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*private)).to_bytes()
    }

    #[test]
    fn both_sides_compute_the_same_proof_and_no_one_else_can() {
        let (hub, pi, other) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let peer = Ipv4Addr::new(10, 89, 0, 2);
        let by_pi = proof(&pi, &public(&hub), "n", peer);
        assert_eq!(by_pi, proof(&hub, &public(&pi), "n", peer));
        assert_ne!(by_pi, proof(&other, &public(&hub), "n", peer));
        assert_ne!(by_pi, proof(&pi, &public(&hub), "m", peer));
        assert_ne!(by_pi, proof(&pi, &public(&hub), "n", Ipv4Addr::new(10, 89, 0, 3)));
        assert!(proofs_equal(&by_pi, &by_pi.clone()));
        assert!(!proofs_equal(&by_pi, &by_pi[1..]));
    }

    #[test]
    fn keys_decode_as_wg_prints_them() {
        // `echo AAAA...= | wg pubkey` style input: 44 base64 characters.
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(decode_key(&format!("{key}\n"), "k").unwrap(), [7u8; 32]);
        assert!(decode_key("short", "k").is_err());
    }
}
