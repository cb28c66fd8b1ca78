//! Matrix accounts: registered through Synapse's shared-secret admin API
//! with a stable device id, so the registration itself yields the token and
//! no second device ever appears.
//!
//! Passwords are not stored: each is HMAC-SHA256(master key, user id), the
//! master key being one 0400 root file. Repair (an account that exists but
//! whose token file is gone) can therefore always log in again onto the same
//! device, and a run killed between "account registered" and "password
//! saved" cannot exist.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;

use super::client::{Client, segment};
use super::secrets::{self, Owner};

/// What happened to an account on this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The stored token still belongs to the right user and device.
    Verified,
    /// The account already existed and needed nothing.
    Exists,
    Registered,
    /// The account existed but its token was missing or dead: logged in
    /// again with the derived password onto the same device id.
    Repaired,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Verified => "token verified",
            Outcome::Exists => "exists",
            Outcome::Registered => "registered",
            Outcome::Repaired => "repaired (logged in again on the same device)",
        }
    }
}

/// The password of `user_id`: HMAC-SHA256(master key, domain ‖ user id).
pub fn password(master_key: &str, user_id: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(master_key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(b"agent-appliance matrix password v1\0");
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Synapse's shared-secret MAC: HMAC-SHA1 over
/// `nonce\0user\0password\0admin|notadmin`.
fn registration_mac(shared_secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(shared_secret.as_bytes()).expect("HMAC takes keys of any length");
    for part in [nonce, user, password] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

/// One account to make sure of.
pub struct Wanted<'a> {
    pub localpart: &'a str,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub admin: bool,
}

impl Wanted<'_> {
    fn device_name(&self) -> String {
        format!("appliance bootstrap ({})", self.localpart)
    }
}

pub struct Accounts<'a> {
    pub client: &'a Client,
    pub shared_secret: String,
    pub master_key: String,
}

/// The result of a shared-secret registration.
enum Registration {
    Token(String),
    Created,
    InUse,
}

impl Accounts<'_> {
    fn register(&self, who: &Wanted, login: bool) -> Result<Registration> {
        let path = "/_synapse/admin/v1/register";
        let nonce = self.client.get(path, None)?;
        let nonce = match nonce.str("nonce") {
            Some(n) if nonce.ok() => n.to_string(),
            _ => bail!(
                "the homeserver refused shared-secret registration ({})\nhint: the registration shared secret must be configured in Synapse (`registration_shared_secret_path`)",
                nonce.describe()
            ),
        };
        let password = password(&self.master_key, who.user_id);
        let mut body = json!({
            "nonce": nonce,
            "username": who.localpart,
            "password": password,
            "admin": who.admin,
            "mac": registration_mac(&self.shared_secret, &nonce, who.localpart, &password, who.admin),
        });
        if login {
            body["device_id"] = json!(who.device_id);
            body["initial_device_display_name"] = json!(who.device_name());
        } else {
            body["inhibit_login"] = json!(true);
        }
        let reply = self.client.post(path, None, &body)?;
        if reply.ok() {
            if !login {
                return Ok(Registration::Created);
            }
            let token = reply
                .str("access_token")
                .context("registration answered without `access_token`")?;
            if reply.str("device_id") != Some(who.device_id) {
                bail!(
                    "the homeserver registered `{}` on another device than `{}`",
                    who.user_id,
                    who.device_id
                );
            }
            return Ok(Registration::Token(token.to_string()));
        }
        if reply.errcode() == Some("M_USER_IN_USE") {
            return Ok(Registration::InUse);
        }
        if reply.status == 403 {
            bail!(
                "the homeserver refused to register `{}` ({})\nhint: the registration shared secret Synapse reads differs from the one in the state directory; restart Synapse after `appliance bootstrap --secrets-only`",
                who.user_id,
                reply.describe()
            );
        }
        bail!("failed to register `{}` ({})", who.user_id, reply.describe())
    }

    /// Whether `token` is a live token of `who` on its device.
    fn token_valid(&self, who: &Wanted, token: &str) -> Result<bool> {
        let reply = self.client.get("/_matrix/client/v3/account/whoami", Some(token))?;
        if reply.ok() {
            return Ok(reply.str("user_id") == Some(who.user_id) && reply.str("device_id") == Some(who.device_id));
        }
        if reply.status == 401 {
            return Ok(false);
        }
        bail!("failed to check the token of `{}` ({})", who.user_id, reply.describe())
    }

    fn login(&self, who: &Wanted) -> Result<Option<String>> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": who.localpart },
            "password": password(&self.master_key, who.user_id),
            "device_id": who.device_id,
            "initial_device_display_name": who.device_name(),
        });
        let reply = self.client.post("/_matrix/client/v3/login", None, &body)?;
        if reply.ok() {
            let token = reply
                .str("access_token")
                .context("login answered without `access_token`")?;
            return Ok(Some(token.to_string()));
        }
        if reply.status == 403 {
            return Ok(None);
        }
        bail!("failed to log in `{}` ({})", who.user_id, reply.describe())
    }

    /// Sets the derived password again through the admin API (someone
    /// changed it), keeping the account's devices.
    fn reset_password(&self, who: &Wanted, admin_token: &str) -> Result<()> {
        let path = format!("/_synapse/admin/v2/users/{}", segment(who.user_id));
        let body = json!({ "password": password(&self.master_key, who.user_id), "logout_devices": false });
        let reply = self.client.put(&path, Some(admin_token), &body)?;
        if !reply.ok() {
            bail!(
                "failed to reset the password of `{}` ({})",
                who.user_id,
                reply.describe()
            );
        }
        Ok(())
    }

    /// Makes sure `who` exists and `token_file` holds a live token for its
    /// device. A valid stored token is never replaced, so reruns rotate
    /// nothing. Returns the token.
    pub fn ensure_token(
        &self,
        who: &Wanted,
        token_file: &Path,
        owner: Owner,
        admin_token: Option<&str>,
    ) -> Result<(String, Outcome)> {
        if let Some(token) = secrets::read(token_file)?
            && self.token_valid(who, &token)?
        {
            secrets::write(token_file, &token, owner)?;
            return Ok((token, Outcome::Verified));
        }
        let (token, outcome) = match self.register(who, true)? {
            Registration::Token(token) => (token, Outcome::Registered),
            Registration::Created => unreachable!("registration with login returns a token"),
            Registration::InUse => {
                // Logging in with the same device id reuses the device. A
                // token issued to a run that was killed before saving it
                // stays valid, but it was never written anywhere.
                let token = match self.login(who)? {
                    Some(token) => token,
                    None => {
                        let admin_token = admin_token.with_context(|| {
                            format!(
                                "`{}` exists but its password is not the one bootstrap derives\nhint: reset it with Synapse's admin API, or delete the account",
                                who.user_id
                            )
                        })?;
                        self.reset_password(who, admin_token)?;
                        self.login(who)?.with_context(|| {
                            format!("failed to log in `{}` after resetting its password", who.user_id)
                        })?
                    }
                };
                (token, Outcome::Repaired)
            }
        };
        secrets::write(token_file, &token, owner)?;
        Ok((token, outcome))
    }

    /// Makes sure a human's account exists, without logging it in: humans
    /// log in themselves, with the initial password bootstrap wrote for the
    /// operator.
    pub fn ensure_human(&self, who: &Wanted, admin_token: &str) -> Result<Outcome> {
        let path = format!("/_synapse/admin/v2/users/{}", segment(who.user_id));
        let reply = self.client.get(&path, Some(admin_token))?;
        if reply.ok() {
            return Ok(Outcome::Exists);
        }
        if reply.status != 404 {
            bail!("failed to look up `{}` ({})", who.user_id, reply.describe());
        }
        match self.register(who, false)? {
            Registration::InUse => Ok(Outcome::Exists),
            _ => Ok(Outcome::Registered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_mac_matches_synapse_docs_construction() {
        // Computed with Python: hmac.new(b"secret", b"n\0u\0p\0notadmin", hashlib.sha1).hexdigest()
        assert_eq!(
            registration_mac("secret", "n", "u", "p", false),
            "0f2b4751fa14a68d6a6878c313b752580706c394"
        );
    }

    #[test]
    fn passwords_differ_per_user_and_key() {
        let a = password("k", "@a:x");
        assert_eq!(a.len(), 64);
        assert_eq!(a, password("k", "@a:x"));
        assert_ne!(a, password("k", "@b:x"));
        assert_ne!(a, password("k2", "@a:x"));
    }
}
