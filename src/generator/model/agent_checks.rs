//! Per-agent checks and defaults: the model each agent uses, the tools its
//! kind supports (`crate::generator::kinds`), its limits and skills. Called by `build`
//! for every agent; problems go to the same [`Builder`], so all are
//! reported at once.

use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;

use super::build::Builder;
use super::names::name_problem;
use super::sandbox;
use super::size::Size;
use crate::generator::kinds;
use crate::generator::spec::schema::{AgentKind, AgentSpec, CodeExecution, Tool};

fn span<T>(value: &Spanned<T>) -> Range<usize> {
    value.span()
}

pub(super) fn resolve_model(
    b: &mut Builder,
    name: &Spanned<String>,
    agent: &AgentSpec,
    has_inference: bool,
    models: &BTreeSet<String>,
) -> Option<String> {
    match &agent.model {
        Some(model) if !has_inference => {
            b.error(
                span(model),
                format!(
                    "agent `{}` uses model `{}`, but the spec has no `[inference]`",
                    name.get_ref(),
                    model.get_ref()
                ),
                "add an `[inference]` table that serves this model",
            );
            None
        }
        Some(model) if !models.contains(model.get_ref()) => {
            let served: Vec<String> = models.iter().map(|m| format!("`{m}`")).collect();
            b.error(
                span(model),
                format!("model `{}` is not served by `[inference]`", model.get_ref()),
                format!("add it to `[inference].models`, or use one of {}", served.join(", ")),
            );
            None
        }
        Some(model) => Some(model.get_ref().clone()),
        // The first model as written, not the first in sorted order.
        None if has_inference => b
            .spec
            .inference
            .as_ref()
            .and_then(|i| i.get_ref().models.first())
            .map(|m| m.get_ref().clone()),
        None => {
            b.error(
                span(name),
                format!("agent `{}` has no model to use", name.get_ref()),
                "add an `[inference]` table with at least one model",
            );
            None
        }
    }
}

fn tool_name(tool: Tool) -> &'static str {
    match tool {
        Tool::Browser => "browser",
        Tool::Crawler => "crawler",
        Tool::Code => "code",
        Tool::WebFetch => "web-fetch",
        Tool::Exec => "exec",
    }
}

pub(super) fn resolve_tools(
    b: &mut Builder,
    name: &Spanned<String>,
    agent: &AgentSpec,
) -> (
    Vec<Tool>,
    Option<crate::generator::spec::schema::Browser>,
    Option<CodeExecution>,
) {
    let kind = kinds::of(*agent.kind.get_ref());
    let supported = kind.supports().tools;
    let mut tools = BTreeSet::new();
    for tool in &agent.tools {
        if !tools.insert(*tool.get_ref()) {
            b.error(
                span(tool),
                format!("tool `{}` is listed twice", tool_name(*tool.get_ref())),
                "remove the duplicate",
            );
        }
        if !supported.contains(tool.get_ref()) {
            let names: Vec<&str> = supported.iter().map(|t| tool_name(*t)).collect();
            b.error(
                span(tool),
                format!(
                    "{} agents cannot use the `{}` tool",
                    kind.name(),
                    tool_name(*tool.get_ref())
                ),
                format!("{} agents support: {}", kind.name(), names.join(", ")),
            );
        }
    }
    let browser = match &agent.browser {
        Some(browser) => {
            if !supported.contains(&Tool::Browser) {
                b.error(
                    span(browser),
                    format!("{} agents have no browser tool", kind.name()),
                    "remove `browser`",
                );
            }
            tools.insert(Tool::Browser);
            Some(*browser.get_ref())
        }
        None => tools
            .contains(&Tool::Browser)
            .then_some(crate::generator::spec::schema::Browser::Chromium),
    };
    let code_execution = match &agent.code_execution {
        Some(code) => {
            if !supported.contains(&Tool::Code) {
                let wired = kinds::names_where(|k| k.supports().tools.contains(&Tool::Code));
                b.error(
                    span(code),
                    format!(
                        "code execution through Docker-in-gVisor is wired for {wired} agents only, not {}",
                        kind.name()
                    ),
                    format!("remove `code-execution`, or use a {wired} agent"),
                );
            }
            tools.insert(Tool::Code);
            Some(*code.get_ref())
        }
        None => {
            if let Some(code) = agent.tools.iter().find(|t| *t.get_ref() == Tool::Code) {
                b.error(
                    span(code),
                    format!(
                        "agent `{}` has the `code` tool but no sandbox to run code in",
                        name.get_ref()
                    ),
                    "add `code-execution = \"docker-in-gvisor\"` to the agent",
                );
            }
            None
        }
    };
    (tools.into_iter().collect(), browser, code_execution)
}

/// Docker refuses containers with less memory than this.
const MIN_MEMORY_BYTES: u64 = 6 << 20;

/// The spec's sizes for an agent's sandboxes, each parsed once here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// `memory`: its own sandbox's; none: the kind's default.
    pub memory: Option<Size>,
    /// `code_storage`: its code sandbox's Docker storage; none: 4g.
    pub code_storage: Option<Size>,
}

/// Checks the agent's limits; returns the sizes that parse.
pub(super) fn check_limits(b: &mut Builder, agent: &AgentSpec) -> Limits {
    let mut size = |text: &Option<Spanned<String>>| {
        let text = text.as_ref()?;
        let message = format!("`{}` is not a size", text.get_ref());
        b.size(text, message, "write a number and a unit, e.g. \"512m\" or \"4g\"")
    };
    let limits = Limits {
        memory: size(&agent.memory),
        code_storage: size(&agent.code_storage),
    };
    if let (Some(memory), Some(text)) = (limits.memory, &agent.memory)
        && memory.bytes() < MIN_MEMORY_BYTES
    {
        b.error(
            span(text),
            format!("`memory = \"{memory}\"` is below Docker's minimum of 6m"),
            "give the agent at least \"256m\"",
        );
    }
    if let Some(cpus) = &agent.cpus {
        let value = *cpus.get_ref();
        // Docker's CPU quota has a resolution of 0.01 CPU; less would
        // round to 0, which means no limit at all.
        if !(0.01..=1024.0).contains(&value) {
            b.error(
                span(cpus),
                format!("`cpus = {value}` is out of range"),
                "give a number of CPUs from 0.01 to 1024, e.g. 2 or 0.5",
            );
        }
    }
    if let Some(pids) = &agent.pids
        && *pids.get_ref() < sandbox::MIN_PIDS
    {
        b.error(
            span(pids),
            format!("`pids = {}` is too low to start the agent", pids.get_ref()),
            format!(
                "use at least {}: under gVisor the limit counts the sandbox's host threads, not the agent's processes",
                sandbox::MIN_PIDS
            ),
        );
    }
    limits
}

/// A skill name: safe as a directory name, and one the kind ships with
/// when it takes no others.
pub(super) fn check_skill(b: &mut Builder, kind: AgentKind, skill: &Spanned<String>) {
    if let Some(problem) = name_problem(skill.get_ref()) {
        b.error(
            span(skill),
            format!("skill name `{}` {problem}", skill.get_ref()),
            "use the skill's directory name",
        );
        return;
    }
    let kind = kinds::of(kind);
    if let Some(shipped) = kind.supports().skills
        && !shipped.contains(&skill.get_ref().as_str())
    {
        b.error(
            span(skill),
            format!("{} has no built-in skill `{}`", kind.label(), skill.get_ref()),
            format!("use one of: {}", shipped.join(", ")),
        );
    }
}
