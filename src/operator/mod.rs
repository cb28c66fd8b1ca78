//! The command line: the operator's commands (`generate`, `build`,
//! `flash`, `gce`, `doctor`, …) and the hosts' own (`bootstrap`, `warden`,
//! `backup`, …), each a thin layer over the generator or the on-host code.

pub mod cli;
pub mod commands;
pub mod nixlog;
