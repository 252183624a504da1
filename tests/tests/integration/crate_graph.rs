//! The crate graph keeps its shape (issue: cores and adapters): a function
//! is a thin adapter over the core crates, so no function crate depends on
//! another, and neither the CLI nor any library crate depends on a function.
//! Only this test crate may (it runs them). Read from `cargo metadata`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What `cargo ARGS` prints, run in the workspace root; its failure is the
/// test's, with cargo's own words.
fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// Every workspace package by name, with its directory relative to the
/// workspace root and the names of the workspace packages it depends on
/// (normal, build and dev dependencies alike).
fn workspace() -> BTreeMap<String, (String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let metadata: Value = serde_json::from_str(&cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]))
    .unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let dir = manifest.parent().unwrap().strip_prefix(root).unwrap();
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| names.contains(&d.as_str()))
                .collect();
            let name = p["name"].as_str().unwrap().to_owned();
            (name, (dir.to_string_lossy().into_owned(), deps))
        })
        .collect()
}

#[test]
fn no_crate_but_the_tests_depends_on_a_function() {
    let packages = workspace();
    let functions: Vec<&String> = packages
        .iter()
        .filter(|(_, (dir, _))| dir.starts_with("functions/"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(functions.len(), 5, "{functions:?}");
    let mut edges = Vec::new();
    for (name, (dir, deps)) in &packages {
        if dir == "tests" {
            continue;
        }
        for dep in deps.iter().filter(|dep| functions.contains(dep)) {
            edges.push(format!("{name} ({dir}) -> {dep}"));
        }
    }
    assert!(
        edges.is_empty(),
        "a function is an adapter, not a library; move what is shared into crates/: {edges:?}"
    );
}

#[test]
fn the_cli_and_the_core_crates_are_where_the_layout_says() {
    let packages = workspace();
    let dir_of = |name: &str| packages[name].0.clone();
    assert_eq!(dir_of("geoprov-cli"), "cli");
    for core in [
        "geoprov-device-rules",
        "geoprov-failover",
        "geoprov-canary",
        "route53-answer",
    ] {
        assert!(dir_of(core).starts_with("crates/"), "{core}");
    }
    // The pure cores name no AWS SDK client among their own dependencies
    // (device-rules reaches the SDK's types only through geoprov-shared's
    // device model).
    for pure in ["geoprov-device-rules", "route53-answer"] {
        let tree = cargo(&[
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--depth",
            "1",
            "-p",
            pure,
        ]);
        assert!(
            !tree.lines().any(|line| line.starts_with("aws-sdk-")),
            "{pure} depends on an AWS SDK client:\n{tree}"
        );
    }
}

/// The five Lambda functions, in the order sam build builds them.
const FUNCTIONS: [&str; 5] = [
    "pre-provisioning-hook",
    "device-activation",
    "region-canary",
    "cert-issuer",
    "endpoint-failover",
];

/// The packages `cargo lambda build --release --bin <function>` (what sam
/// build runs, one function at a time) compiles, each with the features that
/// build resolves: `package version|features`, one line each.
fn lambda_build_units(function: &str) -> std::collections::BTreeSet<String> {
    cargo(&[
        "tree",
        "--offline",
        "--target",
        "x86_64-unknown-linux-gnu",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--format",
        "{p}|{f}",
        "-p",
        function,
    ])
    .lines()
    .filter(|line| !line.contains(" (*)"))
    .map(|line| line.replace(" (proc-macro)", ""))
    .filter(|line| !line.contains("(/"))
    .collect()
}

/// sam build compiles a dependency once for all five functions only when
/// every function resolves it with the same features; one that differs is
/// recompiled, and everything above it (a different `syn` rebuilt every
/// derive, then the whole SDK). crates/lambda-deps names the union; this
/// keeps it complete.
#[test]
fn the_five_lambda_builds_resolve_every_shared_dependency_alike() {
    let functions = FUNCTIONS;
    // package version -> features -> the functions that build it so.
    let mut seen: BTreeMap<String, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
    for function in functions {
        for unit in lambda_build_units(function) {
            let (package, features) = unit.split_once('|').unwrap();
            seen.entry(package.to_owned())
                .or_default()
                .entry(features.to_owned())
                .or_default()
                .push(function);
        }
    }
    let differing: Vec<String> = seen
        .iter()
        .filter(|(_, builds)| builds.len() > 1)
        .map(|(package, builds)| format!("{package}: {builds:?}"))
        .collect();
    assert!(
        differing.is_empty(),
        "add the union of these features to crates/lambda-deps/Cargo.toml:\n{}",
        differing.join("\n")
    );
}

/// A dependency whose library is also a cdylib or staticlib makes Cargo
/// build everything below it as object code as well as bitcode (for fat
/// LTO), which changes their hashes; so such a crate is in all five
/// functions' builds or in none (crates/lambda-deps names it).
#[test]
fn a_crate_that_is_also_a_c_library_is_in_every_lambda_build_or_in_none() {
    let metadata: Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--offline"])).unwrap();
    let c_libraries: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["targets"].as_array().unwrap().iter().any(|t| {
                t["crate_types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| ["cdylib", "staticlib", "dylib"].contains(&c.as_str().unwrap()))
            })
        })
        .map(|p| {
            format!(
                "{} v{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    let functions = FUNCTIONS;
    let builds: Vec<std::collections::BTreeSet<String>> = functions
        .iter()
        .map(|f| {
            lambda_build_units(f)
                .into_iter()
                .filter_map(|unit| unit.split_once('|').map(|(p, _)| p.to_owned()))
                .collect()
        })
        .collect();
    for library in &c_libraries {
        let with: Vec<&str> = functions
            .iter()
            .zip(&builds)
            .filter(|(_, units)| units.contains(library))
            .map(|(f, _)| *f)
            .collect();
        assert!(
            with.is_empty() || with.len() == functions.len(),
            "{library} is a C library in {with:?} only: add it to crates/lambda-deps/Cargo.toml"
        );
    }
}
