//! The CLI as users drive it: exit codes, messages, files written.

use crate::common::{run_in, stderr, stdout};

#[test]
fn help_lists_every_subcommand() {
    let output = run_in(&crate::common::root(), &["--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for command in ["init", "check", "generate", "inspect", "completions"] {
        assert!(help.contains(command), "--help lacks `{command}`:\n{help}");
    }
}

#[test]
fn check_accepts_the_default_spec() {
    let output = run_in(&crate::common::root(), &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("appliance `magi` is valid"));
}
