//! placeholder
use anyhow::Result;
pub fn run(_args: &crate::cli::GceArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
