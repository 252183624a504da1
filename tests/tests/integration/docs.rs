//! The docs that a test can hold to the code: `docs/configuration.md` lists
//! exactly the environment variables each function's template sets, in one
//! place.

use std::collections::{BTreeMap, BTreeSet};

use geoprov_tests::{template_facts, workspace_root};

/// Each function's logical id in its template, and its binary (the key of
/// the template facts).
const FUNCTIONS: [(&str, &str); 5] = [
    ("PreProvisioningHookFunction", "pre-provisioning-hook"),
    ("DeviceActivationFunction", "device-activation"),
    ("RegionCanaryFunction", "region-canary"),
    ("CertIssuerFunction", "cert-issuer"),
    ("EndpointFailoverFunction", "endpoint-failover"),
];

/// The variables in the table under each `## <heading>` of the page: the
/// first column's name in backticks.
fn documented(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in page.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            current = Some(heading.trim().to_owned());
            sections.entry(heading.trim().to_owned()).or_default();
        } else if let (Some(section), Some(cell)) = (&current, line.strip_prefix("| `")) {
            let name = cell.split('`').next().unwrap_or_default();
            sections.get_mut(section).unwrap().insert(name.to_owned());
        }
    }
    sections
}

#[test]
fn the_configuration_page_lists_exactly_what_each_template_sets() {
    let page = std::fs::read_to_string(workspace_root().join("docs/configuration.md")).unwrap();
    let documented = documented(&page);
    let facts = template_facts();
    let headings: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = FUNCTIONS.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        headings, expected,
        "one `## <LogicalId>` section per function"
    );
    for (logical_id, binary) in FUNCTIONS {
        let set: BTreeSet<String> = facts["environment"][binary]
            .as_array()
            .unwrap_or_else(|| panic!("no environment for {binary} in the templates"))
            .iter()
            .map(|name| name.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            documented[logical_id], set,
            "docs/configuration.md, {logical_id}: documented vs set by the template"
        );
    }
}

/// The plan table in `docs/operations.md` is what `geoprov plan` prints for
/// `docs/examples/`: a figure with its command, kept true.
#[test]
fn the_plan_in_operations_md_is_what_geoprov_plan_prints_for_the_example() {
    let root = geoprov_tests::workspace_root();
    let out = std::process::Command::new(geoprov_tests::workspace_binary("geoprov"))
        .args([
            "plan",
            "--config",
            "docs/examples/plan-failover.json",
            "--fleet",
            "docs/examples/plan-fleet.json",
            "--target-minutes",
            "30",
        ])
        .current_dir(&root)
        .output()
        .expect("run geoprov plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    for line in table.lines().take_while(|l| !l.starts_with("to meet")) {
        assert!(doc.contains(line), "docs/operations.md lacks {line:?}");
    }
}
