//! The end-to-end benchmark's command line and plan (`benches/e2e/plan.rs`),
//! tested here because cargo runs no tests of a `harness = false`
//! benchmark. The module needs only `lexopt` and `echod-kit`, both
//! echo-bench's dependencies too; it is compiled in, not copied.

#[path = "../../../benches/e2e/plan.rs"]
#[allow(dead_code)] // The benchmark uses all of it; these tests, most.
mod plan;

use plan::{Command, Options};

fn parse(args: &[&str]) -> Result<Options, String> {
    match plan::parse_args(args.iter().copied()) {
        Ok(Command::Run(options)) => Ok(options),
        Ok(Command::Help) => Err("help".into()),
        Err(err) => Err(err.0),
    }
}

#[test]
fn help_lists_every_option_with_its_default() {
    // As `cargo bench --bench e2e -- --help` passes it, and alone.
    for args in [&["--help", "--bench"][..], &["-h"]] {
        assert!(
            matches!(plan::parse_args(args.iter().copied()), Ok(Command::Help)),
            "{args:?}"
        );
    }
    let usage = plan::usage();
    for option in [
        "--only NAME",
        "--runs N",
        "--secs S",
        "--idle-conns N",
        "--no-counts",
        "--json FILE",
        "--test",
        "--bench",
        "--help",
    ] {
        assert!(usage.contains(option), "{option} in\n{usage}");
    }
    for default in ["(default: 5)", "(default: 3)", "(default: 10000)"] {
        assert!(usage.contains(default), "{default} in\n{usage}");
    }
    for part in plan::part_names() {
        assert!(usage.contains(part), "{part} in\n{usage}");
    }
    let widest = usage.lines().map(|line| line.chars().count()).max();
    assert!(widest <= Some(80), "fits 80 columns:\n{usage}");
    // Each option the help names is one the parser takes.
    let options = parse(&["--runs", "2", "--secs", "1.5", "--idle-conns", "30"])
        .expect("documented options parse");
    assert_eq!(
        (options.runs, options.secs, options.idle_conns),
        (2, 1.5, 30)
    );
    let options = parse(&["--no-counts", "--json", "out.json", "--test"]).expect("parse");
    assert!(!options.counts && options.test && options.json.is_some());
}

#[test]
fn an_unknown_part_is_an_error_that_lists_the_parts() {
    let err = parse(&["--only", "nosuchload"]).expect_err("no such part");
    assert!(err.contains("'nosuchload'"), "{err}");
    for part in plan::part_names() {
        assert!(err.contains(part), "{part} in {err}");
    }
    let err = parse(&["--only", "counts", "--no-counts"]).expect_err("nothing left");
    assert!(err.contains("nothing to run"), "{err}");
    // A bare NAME comes from `cargo bench NAME`, which passes it to every
    // benchmark: matching nothing here is not an error.
    let options = parse(&["scan", "--bench"]).expect("a filter for another benchmark");
    assert!(options.parts().is_empty());
}

#[test]
fn only_selects_one_part_by_name_or_several_by_part_of_a_name() {
    let options = parse(&["--only", "pingpong-10"]).expect("parse");
    assert_eq!(options.parts(), ["pingpong-10"]);
    let options = parse(&["--only", "pingpong"]).expect("parse");
    assert_eq!(
        options.parts(),
        ["pingpong-1", "pingpong-10", "pingpong-100", "pingpong-1000"]
    );
    let options = parse(&["--no-counts"]).expect("parse");
    assert!(!options.parts().contains(&plan::COUNTS));
    assert_eq!(options.parts().len(), plan::WORKLOADS.len() + 3);
    assert!(options.parts().contains(&plan::CHURN) && options.parts().contains(&plan::NOISY));
}

#[test]
fn the_counts_heading_says_what_was_measured() {
    let test = parse(&["--test"]).expect("parse").counts_shape();
    assert_eq!(
        plan::counts_heading(test),
        "## counts: 10 connections, ping-pong, 64 B lines"
    );
    let full = parse(&[]).expect("parse").counts_shape();
    assert_eq!(
        plan::counts_heading(full),
        "## counts: 100 connections, ping-pong, 64 B lines"
    );
}

#[test]
fn the_plan_is_announced_with_how_long_it_takes() {
    let peers = 5;
    let everything = parse(&["--bench"]).expect("parse");
    let minutes = everything.estimate(peers).as_secs_f64() / 60.0;
    assert!((15.0..30.0).contains(&minutes), "{minutes} minutes");
    let said = everything.announcement(peers);
    assert!(
        said.contains("pingpong-1,") && said.contains("idle-10000"),
        "{said}"
    );
    assert!(
        said.contains("minutes") && said.contains("--help"),
        "{said}"
    );

    let smoke = parse(&["--test"]).expect("parse");
    let secs = smoke.estimate(peers).as_secs_f64();
    assert!((20.0..90.0).contains(&secs), "--test in {secs} s");
    let said = smoke.announcement(peers);
    assert!(said.contains("1 run of 0.2 s warm-up + 0.3 s"), "{said}");
    assert!(said.contains("counts: 10 connections x 20 lines"), "{said}");

    let one = parse(&["--only", "pingpong-100"]).expect("parse");
    let said = one.announcement(peers);
    assert!(said.starts_with("e2e: about "), "{said}");
    assert!(
        said.contains("\n  pingpong-100: 5 peers x 5 runs of 1 s warm-up + 3 s each\n"),
        "{said}"
    );
    assert!(!said.contains("counts"), "{said}");
    for line in everything.announcement(peers).lines() {
        assert!(line.chars().count() <= 100, "{line}");
    }
}
