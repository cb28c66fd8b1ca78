//! What every part uses, wherever it runs: the terminal's escaping,
//! diagnostics at file:line:column, and the egress rules shared by the
//! generator and the warden (host names a grant may name, grant files),
//! and quoting a word for a shell.

pub mod diag;
pub mod grants;
pub mod hostnames;
pub mod shell;
pub mod term;
