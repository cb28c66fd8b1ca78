use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::generator::model::Appliance;
use crate::generator::output;
use crate::generator::render;
use crate::operator::cli::GenerateArgs;

/// Returned when `--check` finds drift, so `main` exits 1 quietly.
#[derive(Debug)]
pub struct DriftFound;

impl std::fmt::Display for DriftFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("error: the generated tree is not up to date\nhint: run `appliance generate` and commit the result")
    }
}

impl std::error::Error for DriftFound {}

/// `generated/` beside the spec, unless `--out` says otherwise.
pub fn output_dir(spec: &Path, out: Option<&Path>) -> PathBuf {
    match out {
        Some(out) => out.to_path_buf(),
        None => spec.parent().unwrap_or(Path::new("")).join("generated"),
    }
}

/// How the tree at `out` differs from what `appliance` generates, and how
/// many files the generated tree has (manifest included). `generate --check`
/// and `build` share it.
pub fn drift(appliance: &Appliance, out: &Path) -> Result<(output::Drift, usize)> {
    let tree = render::render(appliance)?;
    Ok((output::drift(out, &tree)?, tree.len() + 1))
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let (appliance, findings) = super::load_linted(&args.spec.spec)?;
    super::report_lints(&args.spec.spec, &findings)?;
    let out = output_dir(&args.spec.spec, args.out.as_deref());
    if args.check {
        let (drift, files) = drift(&appliance, &out)?;
        if drift.is_clean() {
            crate::common::term::println(&format!("{}: up to date ({files} files)", out.display()))?;
            return Ok(());
        }
        for path in &drift.differing {
            crate::common::term::unless_closed(crate::common::term::println(&format!(
                "differs: {}",
                out.join(path).display()
            )))?;
        }
        for path in &drift.missing {
            crate::common::term::unless_closed(crate::common::term::println(&format!(
                "missing: {}",
                out.join(path).display()
            )))?;
        }
        for path in &drift.extra {
            crate::common::term::unless_closed(crate::common::term::println(&format!(
                "extra:   {}",
                out.join(path).display()
            )))?;
        }
        return Err(DriftFound.into());
    }
    let tree = render::render(&appliance)?;
    let report = output::write(&out, &tree, args.force)?;
    if report.written.is_empty() && report.removed.is_empty() {
        crate::common::term::println(&format!("{}: up to date ({} files)", out.display(), report.unchanged))?;
    } else {
        crate::common::term::println(&format!(
            "{}: {} written, {} removed, {} unchanged",
            out.display(),
            report.written.len(),
            report.removed.len(),
            report.unchanged
        ))?;
    }
    for path in &report.kept {
        // A foreign file's name is not ours: it may hold anything.
        let path = crate::common::term::inert(&out.join(path).display().to_string());
        crate::common::term::println(&format!("kept (not generated): {path}"))?;
    }
    Ok(())
}
