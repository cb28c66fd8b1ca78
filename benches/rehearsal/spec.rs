//! The bench's spec: the repository's `appliance.toml` with a second human,
//! so that the load round (issue 25, item 5) has two people whose mentions
//! the agents answer. The default spec has one, @gendo; humans are the
//! spec's admins (`[matrix].admins`), members of the rooms that name them.
//! Everything else is the repository's spec, generated the same way.

use std::fs;
use std::path::Path;

use crate::hub::assert_ok;
use crate::support::{root, run_in};

/// The second human, an admin in the same room as @gendo.
pub const SECOND_HUMAN: &str = "fuyutsuki";

/// `text` with `from` replaced by `to`, where it occurs exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "appliance.toml has `{from}` once; the bench's spec edit needs it"
    );
    text.replacen(from, to, 1)
}

/// Writes the bench's spec into `dir` and generates its tree there with
/// `appliance generate`.
pub fn write_with_second_human(dir: &Path) {
    let spec = fs::read_to_string(root().join("appliance.toml")).unwrap();
    let spec = replace_once(
        &spec,
        "admins = [\"gendo\"]",
        &format!("admins = [\"gendo\", \"{SECOND_HUMAN}\"]"),
    );
    let spec = replace_once(&spec, "\"@gendo\"]", &format!("\"@gendo\", \"@{SECOND_HUMAN}\"]"));
    fs::write(dir.join("appliance.toml"), spec).unwrap();
    assert_ok("appliance generate (the bench's spec)", &run_in(dir, &["generate"]));
}
