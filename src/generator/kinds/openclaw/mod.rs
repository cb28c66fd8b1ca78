//! OpenClaw: a Node gateway with its Matrix plugin and a Chromium browser
//! tool. Its config is strict JSON (`config.rs`); OpenClaw 2026.9.6 itself
//! validates every generated file in tests/agents.rs.

mod config;

use anyhow::Result;

use super::{
    CHROMIUM_SANDBOX_REASON, CiInstall, Gateway, Kind, Notes, PlanEnv, Proof, SandboxNeeds, Supports, ToolLogFormat,
    Validator,
};
use crate::generator::model::Size;
use crate::generator::model::image::{
    Account, CA_BUNDLE, ImageLayout, Owner, Storage, TMP, VersionCheck, Writable, state_volume,
};
use crate::generator::model::policy::{Request, common};
use crate::generator::model::{Agent, MATRIX_TOKEN_FILE, Permissive, SECRETS_MOUNT};
use crate::generator::spec::schema::{AgentKind, Tool};

/// The release our image packages and tests/agents.rs validates against.
pub const VERSION: &str = crate::generator::pins::OPENCLAW;

pub struct OpenClaw;

static SUPPORTS: Supports = Supports {
    tools: &[Tool::Browser, Tool::WebFetch, Tool::Exec],
    default_context: 32_768,
    min_context: None,
    skills: None,
    remote_exec: false,
    gateway: Some(Gateway {
        port: config::GATEWAY_PORT,
        serves: "its control UI",
    }),
};

static SANDBOX: SandboxNeeds = SandboxNeeds {
    config_file: "openclaw.json",
    config_target: "/etc/openclaw/openclaw.json",
    memory: Size::gib(4),
    cpus: 2.0,
    // Chromium: dozens of processes, each with many threads, and every
    // guest thread is a host task (see `model::sandbox::MIN_PIDS`).
    pids: 4096,
    environment: &[
        ("OPENCLAW_CONFIG_PATH", "/etc/openclaw/openclaw.json"),
        // Its state is the volume. Unset, OpenClaw took the config file's
        // directory, read-only /etc/openclaw, and its media cleanup, cron
        // store and plugin-skill links failed there.
        ("OPENCLAW_STATE_DIR", "/home/node/.openclaw"),
        // The config is generated and read-only: no self-mutation.
        ("OPENCLAW_NIX_MODE", "1"),
        ("OPENCLAW_NO_AUTO_UPDATE", "1"),
        ("OPENCLAW_DISABLE_BONJOUR", "1"),
    ],
    // Node 24's fetch ignores the proxy variables unless asked.
    proxy_env: Some(&[("NODE_USE_ENV_PROXY", "1")]),
};

pub(crate) const IMAGE: ImageLayout = ImageLayout {
    name: "openclaw",
    repository: "agent-appliance/openclaw",
    tag: VERSION,
    purpose: "OpenClaw gateway with its Matrix plugin and Chromium (`/bin/chromium`) for its browser tool; nothing is installed at runtime",
    account: Account {
        name: "node",
        uid: 1000,
        gid: 1000,
        home: "/home/node",
    },
    writable: &[
        // OpenClaw's state (sessions, credentials, workspace) lives in
        // ~/.openclaw; the rest of HOME is Chromium's profile and caches,
        // which need not survive a restart.
        Writable {
            path: "/home/node",
            mode: 0o700,
            owner: Owner::Account,
            storage: Storage::Tmpfs { size: Size::mib(512) },
            exec: false,
        },
        state_volume("/home/node/.openclaw"),
        TMP,
    ],
    // The gateway, after removing the ownership records (agent database
    // leases, gateway locks) an earlier container left on the state volume
    // (nix/packages/openclaw-start.sh says why).
    entrypoint: &["tini", "-s", "--", "appliance-openclaw-start"],
    // OpenClaw's launcher turns Node's compile cache on under /tmp, a tmpfs
    // that is empty at every start: each start compiled and wrote ~6,000
    // cache files (~41 MiB) that nothing read again. Off, the start makes
    // 11 % fewer system calls (docs/benchmarks.md, issue 25, item 1).
    env: &[CA_BUNDLE, "NODE_DISABLE_COMPILE_CACHE=1"],
    packages: &[
        "appliance-openclaw",
        "appliance-openclaw-start",
        "chromium",
        "cacert",
        "tini",
    ],
    browser_packages: &["chromium"],
    // OpenClaw scans and loads every plugin of `dist/extensions` at each
    // start (65 in 2026.9.6); the image keeps those the generated config
    // (config.rs) uses, and no other can load: 25 % fewer system calls at
    // start, 11 plugins fewer that loaded though no config names them
    // (docs/benchmarks.md, issue 25, item 1). Each one, and what needs it:
    bundled_plugins: &[
        // The browser tool: `plugins.entries.browser` and `browser`
        // (enabled with the agent's browser tool).
        "browser",
        // The channel: `channels.matrix`, `plugins.entries.matrix` (the
        // @openclaw/matrix plugin the build bakes in under this id).
        "matrix",
        // OpenClaw's memory (the memory tools and the memory files of the
        // workspace): the default of `plugins.slots.memory`.
        "memory-core",
        // The model provider: `models.providers.ollama` (`api: "ollama"`),
        // `plugins.entries.ollama`.
        "ollama",
    ],
    version_check: VersionCheck::Exact {
        package: "appliance-openclaw",
    },
};

static PLAN: PlanEnv = PlanEnv {
    // OpenClaw reads the token file through a SecretRef;
    // MATRIX_ACCESS_TOKEN is only its documented fallback, kept for the env
    // file's contract.
    token_env: &["MATRIX_ACCESS_TOKEN"],
    // OpenClaw resolves room aliases itself.
    room_ids_env: &[],
    home_room_env: &[],
    // The gateway's auth token, which its config reads through a SecretRef.
    generated_env: &[("OPENCLAW_GATEWAY_TOKEN", 32)],
    // The reply and its 👀 acknowledgement of a mention
    // (`messages.ackReaction`, kept after the reply).
    events_per_reply: 2,
    // The main agent's SQLite store on the state volume: its transcript's
    // events, the assistant's `toolCall` content among them.
    tool_log: (
        ToolLogFormat::OpenclawTranscript,
        "state",
        "agents/main/agent/openclaw-agent.sqlite",
    ),
};

static PROOF: Proof = Proof {
    validator: Validator::Installed { dir: ".ci/openclaw" },
    accepts_test: "openclaw_accepts_every_generated_config",
    rejects_test: "openclaw_rejects_unknown_keys_in_core_and_matrix_plugin",
    sources_key: "openclaw",
    package: "openclaw",
    ci: CiInstall::Pinned {
        var: "OPENCLAW_VERSION",
    },
};

impl Kind for OpenClaw {
    kind_facts!(AgentKind::Openclaw, "openclaw", "OpenClaw");

    fn policy(&self, request: &Request, tools: &[Tool]) -> Notes {
        let browser = tools.contains(&Tool::Browser);
        let mut permissive = Vec::new();
        if browser {
            permissive.push(Permissive {
                setting: "browser.noSandbox = true".into(),
                reason: CHROMIUM_SANDBOX_REASON.into(),
            });
        }
        permissive.push(Permissive {
            setting: "agents.defaults.sandbox.mode = \"off\"".into(),
            reason: "OpenClaw's own tool sandbox needs the host's Docker socket, which no agent gets; \
                     the agent's whole gateway runs in gVisor instead"
                .into(),
        });
        permissive.extend(common::code_network(request));
        if browser && request.egress_proxy {
            permissive.push(Permissive {
                setting: "browser.ssrfPolicy.dangerouslyAllowPrivateNetwork = true".into(),
                reason: "OpenClaw refuses to route its browser through a proxy while its own SSRF check is on, \
                         since it cannot see what the proxy resolves. The egress proxy outside the sandbox \
                         refuses private, loopback, link-local, CGNAT, multicast and metadata addresses by \
                         resolved address instead, and the host firewall drops any direct connection"
                    .into(),
            });
        }
        permissive.extend(common::published(request));
        permissive.push(Permissive {
            setting: "channels.matrix.network.dangerouslyAllowPrivateNetwork = true".into(),
            reason: "OpenClaw's Matrix client refuses homeservers on private addresses (SSRF guard); \
                     the appliance's Synapse is only reachable on its private network, never on a \
                     public address. It applies to the Matrix account alone; web_fetch keeps \
                     OpenClaw's default private-network block, and the host firewall lets the sandbox \
                     reach no private address but Synapse's and Ollama's ports"
                .into(),
        });
        Notes {
            permissive,
            warnings: Vec::new(),
        }
    }

    fn config(&self, agent: &Agent, published: bool) -> Result<Vec<u8>> {
        crate::generator::formats::json(&config::config(agent, published))
    }
}
