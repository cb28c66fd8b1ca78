//! `[lints] allow = { code = "reason" }`: which lints the operator accepts.
//! Only known codes, each with a written reason.

use std::collections::BTreeMap;

use super::build::Builder;

pub(super) fn resolve(b: &mut Builder) -> BTreeMap<String, String> {
    let mut allow = BTreeMap::new();
    let Some(lints) = &b.spec.lints else {
        return allow;
    };
    let entries: Vec<_> = lints
        .allow
        .iter()
        .map(|(code, reason)| (code.clone(), reason.clone()))
        .collect();
    for (code, reason) in entries {
        if crate::generator::lint::find(code.get_ref()).is_none() {
            let known: Vec<&str> = crate::generator::lint::LINTS.iter().map(|l| l.code).collect();
            b.error(
                code.span(),
                format!("unknown lint `{}`", code.get_ref()),
                format!("lint codes are: {}", known.join(", ")),
            );
            continue;
        }
        if reason.get_ref().trim().len() < 10 {
            b.error(
                reason.span(),
                format!("lint `{}` is allowed without a reason", code.get_ref()),
                "write why this appliance accepts it, in a sentence",
            );
            continue;
        }
        if let Some(problem) = crate::generator::model::names::text_problem(reason.get_ref()) {
            b.error(
                reason.span(),
                format!("the reason for lint `{}` {problem}", code.get_ref()),
                "write the reason as one line of printable text",
            );
            continue;
        }
        allow.insert(code.get_ref().clone(), reason.get_ref().trim().to_string());
    }
    allow
}
