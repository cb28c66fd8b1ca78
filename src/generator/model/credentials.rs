//! Credentials the egress proxy adds for an agent (`credentials` in the
//! spec; SECURITY.md, "Credentials at the proxy"): the agent's sandbox
//! holds a placeholder, never the real value; the proxy terminates TLS for
//! the service's hosts only, from that sandbox's address only, and
//! replaces the placeholder with the credential read from a file on the
//! host. Every other host stays a plain `CONNECT` tunnel.

use serde::Serialize;

use crate::generator::spec::schema::CredentialService;

/// The appliance CA's public directory on the host: `ca.pem` and its
/// OpenSSL hash link, made at first boot (modules/egress.nix). Bound
/// read-only into the sandboxes with a credential, and only those.
pub const CA_DIR: &str = "/var/lib/appliance/egress-ca";
/// The CA certificate in it.
pub const CA_CERT: &str = "/var/lib/appliance/egress-ca/ca.pem";
/// The CA's private key: the proxy's alone (root and the proxy's group),
/// never bound into a sandbox, never in the Nix store. In the proxy's own
/// directory, not under `secrets/`, where each agent's directory is named
/// after it (an agent could be called anything there).
pub const CA_KEY: &str = "/var/lib/appliance/egress-proxy/ca.key";
/// Where a sandbox with a credential sees [`CA_DIR`].
pub const CA_MOUNT: &str = "/run/appliance/egress-ca";
/// The proxy's files holding the real credentials (one squid `include`
/// each), written from the token files each time the proxy starts.
pub const INJECTION_DIR: &str = "/var/lib/appliance/egress-proxy";
/// security_file_certgen's certificate database (squid's `sslcrtd_program`).
pub const SSL_DB: &str = "/var/cache/squid/ssl_db";

/// What the appliance knows of a service: where its credential goes.
pub struct ServiceFacts {
    /// The variable the agent's tools read the credential from.
    pub variable: &'static str,
    /// The hosts the proxy adds it on (never any other).
    pub hosts: &'static [&'static str],
    /// The `Authorization` scheme the tools send and the proxy writes.
    pub scheme: &'static str,
}

/// `gh` sends `Authorization: token <GH_TOKEN>` to the REST and GraphQL
/// API and to the release uploads host. Not `github.com`: git over HTTPS
/// sends the token as a Basic password, which the proxy does not rewrite
/// (docs/agents.md).
const GITHUB: ServiceFacts = ServiceFacts {
    variable: "GH_TOKEN",
    hosts: &["api.github.com", "uploads.github.com"],
    scheme: "token",
};

pub fn facts(service: CredentialService) -> &'static ServiceFacts {
    match service {
        CredentialService::Github => &GITHUB,
    }
}

/// One credential of one agent, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credential {
    pub service: CredentialService,
    /// The variable set to [`Credential::placeholder`] in the sandbox.
    pub variable: String,
    /// What the sandbox holds instead of the credential.
    pub placeholder: String,
    /// The hosts the proxy adds it on: the service's hosts the agent's
    /// `egress` allows.
    pub hosts: Vec<String>,
    /// The file on the agent's host holding the real credential (the spec's).
    pub token_file: String,
}

impl Credential {
    /// The proxy's include file for this credential (in [`INJECTION_DIR`]).
    pub fn injection_file(&self, agent: &str) -> String {
        format!("{INJECTION_DIR}/{agent}-{}.conf", self.service)
    }
}

/// The placeholder an agent's sandbox holds for a service's credential:
/// not secret, the same at every boot, never a valid credential.
pub fn placeholder(agent: &str, service: CredentialService) -> String {
    format!("appliance-placeholder-{agent}-{service}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::model::BindSource;
    use crate::test_support::shipped;

    /// Only a sandbox with a credential binds the CA directory, and it
    /// holds each credential's placeholder; no sandbox binds the CA key's
    /// directory or a token file.
    #[test]
    fn only_a_credentials_sandbox_trusts_the_ca_and_none_holds_a_token() {
        let mut seen = 0;
        for appliance in shipped() {
            for host in appliance.hosts.values() {
                for sandbox in &host.sandboxes {
                    let hosts: Vec<&str> = sandbox
                        .binds
                        .iter()
                        .filter_map(|b| match &b.source {
                            BindSource::Host(path) => Some(path.as_str()),
                            BindSource::Generated(_) => None,
                        })
                        .collect();
                    assert_eq!(
                        hosts.contains(&CA_DIR),
                        !sandbox.credentials.is_empty(),
                        "{}",
                        sandbox.name
                    );
                    for path in &hosts {
                        assert!(!CA_KEY.starts_with(path) && !path.starts_with(INJECTION_DIR), "{path}");
                    }
                    for credential in &sandbox.credentials {
                        seen += 1;
                        assert!(
                            !hosts.iter().any(|p| credential.token_file.starts_with(p)),
                            "{}",
                            sandbox.name
                        );
                        assert_eq!(sandbox.environment[&credential.variable], credential.placeholder);
                        assert_eq!(sandbox.environment["SSL_CERT_DIR"], CA_MOUNT);
                    }
                }
            }
        }
        assert!(seen > 0);
    }
}
