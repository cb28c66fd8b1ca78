//! Start-to-exit latency of `docker run --rm IMAGE true` in the sandbox lab
//! (tests/support/lab.rs): the strict runtime against bare runsc (same
//! binary, only the `--network=none` this machine needs) and runc, plus
//! strict with a sandbox's full generated run options. `BENCH_RUNS` runs
//! each (default 30), interleaved; round 0 is a warm-up. Run with
//! `scripts/bench-sandbox.sh` (root, runsc, dockerd, busybox, gcc), or
//! `cargo bench --bench sandbox`. Target (issue 3): strict / bare <= 1.10.

use std::time::Instant;

#[path = "../tests/support/mod.rs"]
mod support;

use support::lab::{Lab, machine_args};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (the
    // suite) runs benches without it only to check they start: measure
    // nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench sandbox` to measure");
        return;
    }
    let Some(lab) = Lab::start(&[("bench-bare-runsc", &["--network=none"])]) else {
        return;
    };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let balthasar = lab.sandbox("balthasar").clone();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "runsc (strict, generated)",
            vec!["--runtime=runsc".into(), "--network=none".into()],
        ),
        (
            "bench-bare-runsc",
            vec!["--runtime=bench-bare-runsc".into(), "--network=none".into()],
        ),
        ("runc", vec!["--runtime=runc".into(), "--network=none".into()]),
        (
            "runsc + balthasar's run options",
            machine_args(&balthasar, &lab.paths, &[]),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..=runs {
        for (i, (_, args)) in cases.iter().enumerate() {
            let start = Instant::now();
            let output = lab.run(args, "true");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            // Round 0 warms caches and is not counted.
            if round > 0 {
                times[i].push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        (v[n / 2] + v[(n - 1) / 2]) / 2.0
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!("docker run --rm IMAGE true, {runs} runs each, interleaved (ms):");
    for (i, (name, _)) in cases.iter().enumerate() {
        let v = &times[i];
        println!(
            "  {name:<34} median {:7.1}  p10 {:7.1}  p90 {:7.1}",
            medians[i],
            v[v.len() / 10],
            v[v.len() * 9 / 10]
        );
    }
    println!(
        "  ratio strict / bare runsc: {:.3} (target <= 1.10)",
        medians[0] / medians[1]
    );
}
