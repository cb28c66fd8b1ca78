//! A minimal blocking Matrix client: JSON in, status and JSON out. Plain
//! HTTP only: bootstrap talks to the Synapse on its own host, over loopback.
//! Access tokens travel in headers and are never part of an error message.

use std::cell::Cell;
use std::fmt::Write as _;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// Waiting (for the homeserver, for rate limits) stops here.
    deadline: Instant,
    timeout: Duration,
    requests: Cell<u32>,
    rate_limited: Cell<u32>,
}

/// A homeserver answer: status and body (`Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn errcode(&self) -> Option<&str> {
        self.body.get("errcode").and_then(Value::as_str)
    }

    pub fn str(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }

    /// "403 M_FORBIDDEN: You are not invited", for error messages. Only
    /// used on failures, whose bodies carry no secrets.
    pub fn describe(&self) -> String {
        let mut out = self.status.to_string();
        if let Some(code) = self.errcode() {
            let _ = write!(out, " {code}");
        }
        if let Some(error) = self.str("error") {
            let _ = write!(out, ": {error}");
        }
        out
    }
}

#[derive(Clone, Copy)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// A text message that mentions `user_id` the way Element does: the id
/// in the body, a matrix.to pill in the formatted body, and Matrix 1.7's
/// `m.mentions`, so every agent's mention check sees it.
pub fn mention(user_id: &str, text: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("{user_id}: {text}"),
        "format": "org.matrix.custom.html",
        "formatted_body": format!("<a href=\"https://matrix.to/#/{user_id}\">{user_id}</a>: {text}"),
        "m.mentions": {"user_ids": [user_id]},
    })
}

/// Percent-encodes one path segment (user ids, room ids and aliases carry
/// `@`, `!`, `#` and `:`).
pub fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

impl Client {
    pub fn new(base: &str, deadline: Instant, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(5)))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            base: base.trim_end_matches('/').to_string(),
            deadline,
            timeout,
            requests: Cell::new(0),
            rate_limited: Cell::new(0),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Requests sent so far, for the summary and the benchmark.
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// Answers that were `429 M_LIMIT_EXCEEDED` (each then waited out).
    pub fn rate_limited(&self) -> u32 {
        self.rate_limited.get()
    }

    fn send_once(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, ureq::Error> {
        let url = format!("{}{path}", self.base);
        let bearer = token.map(|t| format!("Bearer {t}"));
        self.requests.set(self.requests.get() + 1);
        let payload = body.map_or_else(|| "{}".to_string(), Value::to_string);
        let response = match method {
            Method::Get => {
                let mut request = self.agent.get(&url);
                if let Some(b) = &bearer {
                    request = request.header("Authorization", b);
                }
                request.call()?
            }
            Method::Delete => {
                let mut request = self.agent.delete(&url);
                if let Some(b) = &bearer {
                    request = request.header("Authorization", b);
                }
                request.call()?
            }
            Method::Post | Method::Put => {
                let mut request = if matches!(method, Method::Post) {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                if let Some(b) = &bearer {
                    request = request.header("Authorization", b);
                }
                request.header("Content-Type", "application/json").send(payload)?
            }
        };
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// Sends one request; waits out rate limits (429) until the deadline.
    pub fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Result<Reply> {
        loop {
            let reply = self
                .send_once(method, path, token, body)
                .with_context(|| format!("request to the homeserver at `{}` failed (`{path}`)", self.base))?;
            if reply.status != 429 {
                return Ok(reply);
            }
            self.rate_limited.set(self.rate_limited.get() + 1);
            let wait = Duration::from_millis(reply.body.get("retry_after_ms").and_then(Value::as_u64).unwrap_or(1000));
            if Instant::now() + wait > self.deadline {
                bail!(
                    "the homeserver at `{}` rate-limited `{path}` beyond the timeout ({})\nhint: raise `--timeout`, or relax Synapse's `rc_*` limits",
                    self.base,
                    reply.describe()
                );
            }
            sleep(wait);
        }
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Result<Reply> {
        self.call(Method::Get, path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Reply> {
        self.call(Method::Post, path, token, Some(body))
    }

    pub fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Reply> {
        self.call(Method::Put, path, token, Some(body))
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Result<Reply> {
        self.call(Method::Delete, path, token, None)
    }

    /// Waits until the homeserver answers `/versions`, retrying with
    /// exponential backoff (100 ms doubling to 2 s) until the deadline;
    /// `on_wait` is called once when the first attempt fails.
    pub fn wait_until_up(&self, on_wait: impl FnOnce(&str)) -> Result<()> {
        let mut on_wait = Some(on_wait);
        let mut delay = Duration::from_millis(100);
        loop {
            let last = match self.send_once(Method::Get, "/_matrix/client/versions", None, None) {
                Ok(reply) if reply.ok() && reply.body.get("versions").is_some() => return Ok(()),
                Ok(reply) => format!("answered {}", reply.describe()),
                Err(e) => e.to_string(),
            };
            if let Some(f) = on_wait.take() {
                f(&last);
            }
            let now = Instant::now();
            if now >= self.deadline {
                bail!(
                    "the homeserver at `{}` did not answer within {} s (last attempt: {last})\nhint: is Synapse running (`systemctl status matrix-synapse`)? Point `--homeserver URL` at it, or raise `--timeout`",
                    self.base,
                    self.timeout.as_secs()
                );
            }
            sleep(delay.min(self.deadline - now));
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("#magi:magi"), "%23magi%3Amagi");
        assert_eq!(segment("@a-b_c.d:x"), "%40a-b_c.d%3Ax");
        assert_eq!(segment("!x/y"), "%21x%2Fy");
    }
}
