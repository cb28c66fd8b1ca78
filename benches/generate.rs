//! Generate time and peak memory for specs with 3, 100 and 1000 agents.
//!
//! Run with `cargo bench --bench generate`. Each size runs in its own child
//! process (this binary, re-invoked) so its peak RSS (`VmHWM`) is its own.
//! Targets: the default spec under 20 ms wall for a whole `appliance
//! generate`; 1000 agents under 1 s and 100 MB peak RSS; time linear in the
//! number of agents. Results are recorded in docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_appliance::common::diag::SourceFile;
use agent_appliance::{generator::model, generator::output, generator::render, generator::spec};

const RUNS: usize = 9;

/// A spec with `agents` agents of every kind on one GPU hub, in rooms of
/// ten agents and an admin (one room for everybody would make every
/// agent's allowlist, and so the output, grow with the square of agents).
fn synthetic_spec(agents: usize) -> String {
    let mut text = String::from(
        "[appliance]\nname = \"bench\"\n\n[hosts.hub]\ntarget = \"gce\"\n\
         gpu = { vendor = \"nvidia\", model = \"l4\", count = 8 }\n\n\
         [matrix]\nhost = \"hub\"\nserver-name = \"bench\"\nadmins = [\"admin\"]\n\n\
         [inference]\nhost = \"hub\"\nmodels = [\"a:1b\", \"b:2b\", \"c:3b\"]\n\n",
    );
    let mut members = Vec::new();
    for i in 0..agents {
        let name = format!("agent-{i}");
        match i % 3 {
            0 => writeln!(
                text,
                "[agents.{name}]\nkind = \"openclaw\"\nhost = \"hub\"\nbrowser = \"chromium\"\n"
            )
            .unwrap(),
            1 => writeln!(
                text,
                "[agents.{name}]\nkind = \"picoclaw\"\nhost = \"hub\"\nskills = [\"github\"]\n"
            )
            .unwrap(),
            _ => writeln!(
                text,
                "[agents.{name}]\nkind = \"hermes\"\nhost = \"hub\"\ntools = [\"browser\", \"crawler\", \"code\"]\n\
                 code-execution = \"docker-in-gvisor\"\n"
            )
            .unwrap(),
        }
        members.push(format!("\"{name}\""));
    }
    for (index, chunk) in members.chunks(10).enumerate() {
        writeln!(
            text,
            "[rooms.team-{index}]\nmembers = [{}, \"@admin\"]\n",
            chunk.join(", ")
        )
        .unwrap();
    }
    text
}

/// Spec text to files on disk: what `appliance generate` does after
/// reading the spec. Returns the file count and the time spent writing.
fn pipeline(text: &str, out: &Path) -> (usize, Duration) {
    let source = SourceFile {
        name: "bench.toml".into(),
        text: text.to_string(),
    };
    let parsed = spec::parse(&source).expect("bench spec parses");
    let appliance = model::build(&source, &parsed).expect("bench spec is valid");
    let tree = render::render(&appliance).expect("bench spec renders");
    let start = Instant::now();
    output::write(out, &tree, false).expect("bench tree is written");
    (tree.len(), start.elapsed())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// In the child: time the pipeline for one size and print one result line.
fn child(agents: usize) {
    let text = if agents == 0 {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance.toml")).unwrap()
    } else {
        synthetic_spec(agents)
    };
    let mut samples = Vec::new();
    let mut writes = Vec::new();
    let mut files = 0;
    for _ in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let (count, write) = pipeline(&text, &dir.path().join("generated"));
        samples.push(start.elapsed());
        writes.push(write);
        files = count;
    }
    println!(
        "{} {} {} {}",
        median(samples).as_micros(),
        peak_rss_kib(),
        files,
        median(writes).as_micros()
    );
}

fn measure(agents: usize) -> (Duration, u64, usize, Duration) {
    let output = Command::new(std::env::current_exe().unwrap())
        .env("APPLIANCE_BENCH_CHILD", agents.to_string())
        .output()
        .expect("re-run the bench binary");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    (
        Duration::from_micros(fields[0]),
        fields[1],
        fields[2] as usize,
        Duration::from_micros(fields[3]),
    )
}

/// Wall time of the whole CLI on the default spec, process start included.
fn cli_wall() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance.toml"),
        dir.path().join("appliance.toml"),
    )
    .unwrap();
    let mut samples = Vec::new();
    for run in 0..RUNS {
        let out = format!("out-{run}");
        let start = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_appliance"))
            .args(["generate", "--out", &out])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        samples.push(start.elapsed());
        assert!(status.success());
    }
    median(samples)
}

fn main() {
    if let Ok(agents) = std::env::var("APPLIANCE_BENCH_CHILD") {
        child(agents.parse().unwrap());
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test` runs benches with no
    // such flag only to check they start, so keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench generate` to measure");
        return;
    }
    println!("| spec | agents | files | generate (median of {RUNS}) | of which writing | per agent | peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for (label, agents) in [
        ("appliance.toml", 0),
        ("synthetic", 3),
        ("synthetic", 100),
        ("synthetic", 1000),
    ] {
        let (time, rss, files, write) = measure(agents);
        let count = if agents == 0 { 4 } else { agents };
        println!(
            "| {label} | {count} | {files} | {:.2} ms | {:.2} ms | {:.1} µs | {:.1} MB |",
            time.as_secs_f64() * 1e3,
            write.as_secs_f64() * 1e3,
            time.as_secs_f64() * 1e6 / count as f64,
            rss as f64 / 1024.0
        );
    }
    println!(
        "\n`appliance generate` on appliance.toml, whole process, median of {RUNS}: {:.2} ms",
        cli_wall().as_secs_f64() * 1e3
    );
}
