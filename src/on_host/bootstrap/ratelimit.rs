//! Per-agent message rate limits: Synapse's admin API
//! (`/_synapse/admin/v1/users/<user>/override_ratelimit`) with the plan's
//! values. Read first and written only when different, so a rerun sends
//! one GET per agent and changes nothing.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::client::{Client, segment};
use super::plan::RateLimit;

/// What a run did to one account's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Set,
}

fn path(user_id: &str) -> String {
    format!("/_synapse/admin/v1/users/{}/override_ratelimit", segment(user_id))
}

/// The override Synapse holds now; `None` when there is none (`{}`).
fn current(body: &Value) -> Option<RateLimit> {
    let number = |field: &str| {
        body.get(field)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    Some(RateLimit {
        messages_per_second: number("messages_per_second")?,
        burst_count: number("burst_count")?,
    })
}

/// Makes `user_id`'s override equal to `wanted`, with the bootstrap
/// account's (server admin) token.
pub fn ensure(client: &Client, admin_token: &str, user_id: &str, wanted: RateLimit) -> Result<Outcome> {
    let reply = client.get(&path(user_id), Some(admin_token))?;
    if !reply.ok() {
        bail!("could not read the rate limit of `{user_id}`: {}", reply.describe());
    }
    if current(&reply.body) == Some(wanted) {
        return Ok(Outcome::Kept);
    }
    let body = json!({
        "messages_per_second": wanted.messages_per_second,
        "burst_count": wanted.burst_count,
    });
    let reply = client.post(&path(user_id), Some(admin_token), &body)?;
    if !reply.ok() {
        bail!("could not set the rate limit of `{user_id}`: {}", reply.describe());
    }
    Ok(Outcome::Set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_override_is_none_and_a_full_one_is_read() {
        assert_eq!(current(&json!({})), None);
        assert_eq!(
            current(&json!({"messages_per_second": 2, "burst_count": 30})),
            Some(RateLimit {
                messages_per_second: 2,
                burst_count: 30
            })
        );
        // Half an override is not ours: it gets rewritten.
        assert_eq!(current(&json!({"messages_per_second": 2})), None);
    }

    #[test]
    fn user_ids_are_escaped_in_the_path() {
        assert_eq!(
            path("@casper:magi"),
            "/_synapse/admin/v1/users/%40casper%3Amagi/override_ratelimit"
        );
    }
}
