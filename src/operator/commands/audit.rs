//! `appliance audit verify|tail`: check or read the warden's audit trail.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::on_host::audit;
use crate::operator::cli::{AuditCommand, AuditFileArgs, AuditTailArgs};

pub fn run(command: &AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Tail(args) => tail(args),
    }
}

fn path(args: &AuditFileArgs) -> PathBuf {
    args.file
        .clone()
        .unwrap_or_else(|| PathBuf::from(audit::default_path()))
}

fn verify(args: &AuditFileArgs) -> Result<()> {
    let path = path(args);
    match audit::verify_file(&path)? {
        Ok(head) => {
            println!(
                "audit log `{}`: {} record(s), chain intact, head sha256 {}",
                path.display(),
                head.seq,
                head.sha256
            );
            Ok(())
        }
        Err(broken) => bail!(
            "audit log `{}` is broken at line {}: {}\nhint: compare with the heads the warden posted to the ops room; records from line {} on cannot be trusted",
            path.display(),
            broken.line,
            audit::escape_for_terminal(&broken.why),
            broken.line
        ),
    }
}

fn tail(args: &AuditTailArgs) -> Result<()> {
    let path = path(&args.file);
    let bytes = std::fs::read(&path).with_context(|| format!("failed to read audit log `{}`", path.display()))?;
    for line in audit::tail(&bytes, args.lines) {
        println!("{line}");
    }
    Ok(())
}
