//! PicoClaw: a static Go gateway with built-in skills (the `github` one
//! runs `gh` through its exec tool). Its config is JSON with strict keys
//! (`config.rs`). tests/agents.rs feeds every generated file to the real
//! PicoClaw v0.2.9 (`.ci/gobuild.sh` builds it), and checks it against the
//! v0.2.9 schema written down in tests/agents/picoclaw_schema.rs (the fast
//! check, stricter inside channel `settings`).

mod config;

use anyhow::Result;

use super::{CiInstall, Kind, Notes, PlanEnv, Proof, SandboxNeeds, Supports, ToolLogFormat, Validator, openai_base};
use crate::generator::model::Size;
use crate::generator::model::image::{Account, CA_BUNDLE, ImageLayout, TMP, VersionCheck, state_volume};
use crate::generator::model::policy::Request;
use crate::generator::model::{Agent, Permissive, Warning};
use crate::generator::spec::schema::{AgentKind, Tool};

/// The release our image packages (nixpkgs' `picoclaw`), CI builds
/// (.ci/gobuild.sh) and whose schema tests/agents/picoclaw_schema.rs holds.
pub const VERSION: &str = crate::generator::pins::PICOCLAW;

pub struct PicoClaw;

/// Skills shipped with PicoClaw; it takes no others.
const SKILLS: &[&str] = &[
    "agent-browser",
    "github",
    "hardware",
    "skill-creator",
    "summarize",
    "tmux",
    "weather",
];

static SUPPORTS: Supports = Supports {
    tools: &[Tool::WebFetch, Tool::Exec],
    default_context: 32_768,
    min_context: None,
    skills: Some(SKILLS),
    remote_exec: true,
    gateway: None,
};

static SANDBOX: SandboxNeeds = SandboxNeeds {
    config_file: "config.json",
    config_target: "/etc/picoclaw/config.json",
    memory: Size::mib(512),
    cpus: 1.0,
    pids: 1024,
    // PicoClaw reads everything from its config file, and its `PICOCLAW_*`
    // variables would override the file: none is set but its home and
    // config path.
    environment: &[
        ("PICOCLAW_HOME", "/var/lib/picoclaw"),
        ("PICOCLAW_CONFIG", "/etc/picoclaw/config.json"),
    ],
    // Go's `ProxyFromEnvironment` reads the standard variables.
    proxy_env: Some(&[]),
};

pub(crate) const IMAGE: ImageLayout = ImageLayout {
    name: "picoclaw",
    repository: "agent-appliance/picoclaw",
    tag: VERSION,
    purpose: "PicoClaw gateway (pure Go, static) with the gh CLI for its GitHub skill",
    account: Account {
        name: "picoclaw",
        uid: 1000,
        gid: 1000,
        home: "/var/lib/picoclaw",
    },
    writable: &[state_volume("/var/lib/picoclaw"), TMP],
    entrypoint: &["picoclaw", "gateway"],
    env: &[CA_BUNDLE],
    // A shell and core tools: PicoClaw's exec tool (and the gh skill
    // through it) runs commands with `sh -c`.
    packages: &["appliance-picoclaw", "gh", "bashInteractive", "coreutils", "cacert"],
    browser_packages: &[],
    bundled_plugins: &[],
    version_check: VersionCheck::Exact {
        package: "appliance-picoclaw",
    },
};

static PLAN: PlanEnv = PlanEnv {
    // PicoClaw's `file://` references must lie inside its config directory,
    // which holds read-only generated files; its env override of the config
    // field is the one way in.
    token_env: &["PICOCLAW_CHANNELS_MATRIX_ACCESS_TOKEN"],
    // PicoClaw never auto-joins.
    room_ids_env: &[],
    home_room_env: &[],
    generated_env: &[],
    // The reply only: its placeholder message (an edit to follow) is off
    // unless configured, and typing notices are not rate-limited.
    events_per_reply: 1,
    // Its sessions, one JSON-lines file each, under PICOCLAW_HOME's
    // workspace; assistant lines carry `tool_calls`.
    tool_log: (ToolLogFormat::PicoclawSessions, "state", "workspace/sessions"),
};

static PROOF: Proof = Proof {
    // PicoClaw's own loader, run by `picoclaw status`; the schema written
    // down in tests/agents/picoclaw_schema.rs stays as the fast check.
    validator: Validator::Installed { dir: ".ci/go/bin" },
    accepts_test: "picoclaw_accepts_every_generated_config",
    rejects_test: "picoclaw_rejects_broken_configs",
    sources_key: "picoclaw",
    package: "picoclaw",
    ci: CiInstall::Built {
        script: ".ci/gobuild.sh",
    },
};

impl Kind for PicoClaw {
    kind_facts!(AgentKind::Picoclaw, "picoclaw", "PicoClaw");

    fn policy(&self, request: &Request, tools: &[Tool]) -> Notes {
        let name = request.name;
        let mut notes = Notes::default();
        if has_github(request.skills) {
            if !(tools.contains(&Tool::Exec) && request.remote_exec) {
                notes.warnings.push(Warning {
                    code: "agent-skill-needs-exec",
                    message: format!(
                        "agent `{name}`: the `github` skill runs the `gh` CLI through PicoClaw's exec tool, \
                         which refuses commands from chat unless the agent has `tools = [\"exec\"]` and \
                         `remote-exec = true`; as written the skill can only describe what to run"
                    ),
                });
            }
            if !request.proxy_credentials.contains(&"GH_TOKEN") {
                notes.warnings.push(Warning {
                    code: "agent-skill-needs-token",
                    message: format!(
                        "agent `{name}`: the `github` skill needs a GitHub token: give it with \
                         `credentials = {{ github = \"<token file on the host>\" }}` (the egress proxy adds it, \
                         the sandbox holds a placeholder), or as `GH_TOKEN` in the agent's env file by hand"
                    ),
                });
            }
        }
        if request.remote_exec {
            let secrets = match (
                has_github(request.skills),
                request.proxy_credentials.contains(&"GH_TOKEN"),
            ) {
                (true, false) => "its Matrix token and GH_TOKEN",
                (true, true) => "its Matrix token, and GH_TOKEN's placeholder (the egress proxy adds the real token)",
                (false, _) => "its Matrix token",
            };
            notes.permissive.push(Permissive {
                setting: "tools.exec.allow_remote = true, cron.allow_command = true".into(),
                reason: format!(
                    "the spec sets `remote-exec = true`: allowlisted Matrix users (the appliance admins \
                         and the human members of the agent's rooms; never another agent) can make the agent run \
                         shell commands, now or on a schedule. They run inside the agent's gVisor sandbox \
                         (read-only root, no capabilities, no host access) with PicoClaw's deny patterns \
                         and workspace restriction on, but they see what the agent sees: its environment \
                         and /run/secrets/appliance, i.e. {secrets}"
                ),
            });
        }
        notes.permissive.push(Permissive {
            setting: "isolation.enabled = false".into(),
            reason: "PicoClaw's own subprocess isolation needs bubblewrap namespaces inside the sandbox; \
                     the gVisor sandbox is the boundary instead"
                .into(),
        });
        notes
    }

    fn operator_env(&self, skills: &[String]) -> Vec<&'static str> {
        // `gh` reads GH_TOKEN.
        if has_github(skills) {
            vec!["GH_TOKEN"]
        } else {
            Vec::new()
        }
    }

    fn config(&self, agent: &Agent, published: bool) -> Result<Vec<u8>> {
        crate::generator::formats::json(&config::config(agent, published))
    }
}

fn has_github(skills: &[String]) -> bool {
    skills.iter().any(|s| s == "github")
}
