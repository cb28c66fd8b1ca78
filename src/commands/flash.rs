//! placeholder
use anyhow::Result;
pub fn run(_args: &crate::cli::FlashArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
