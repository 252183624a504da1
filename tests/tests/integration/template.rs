//! The templates against the code, the regional stack (template.yaml) and the
//! global stack (global.yaml): the provisioning template bodies are valid JSON
//! and reference only what they declare, the hook's parameterOverrides are
//! declared in the fleet template, every function gets exactly the
//! environment variables its configuration reads, health checks and alarms
//! take their logical ids from region names only, every policy statement
//! has a resource under every combination of conditions, things fit their
//! thing type, every thing group a template names exists, and the table's
//! grants keep each function to its item families (the audit log
//! append-only). (`make
//! lint-template` runs `sam validate --lint`, cfn-lint and checkov on the same
//! files.)

use std::collections::BTreeSet;

use geoprov_shared::config::Env;
use geoprov_tests::{iam, template_facts, workspace_root};
use serde_json::{Value, json};

fn facts() -> Value {
    template_facts()
}

/// Every `{"Ref": name}` in a provisioning template body.
fn refs(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("Ref") {
                found.insert(name.clone());
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

fn declared(body: &Value, section: &str) -> BTreeSet<String> {
    body[section]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn provisioning_templates_are_json_and_reference_only_what_they_declare() {
    let facts = facts();
    let templates = facts["provisioningTemplates"].as_object().unwrap();
    assert_eq!(
        templates.keys().collect::<Vec<_>>(),
        ["FleetProvisioningTemplate"],
        "no JITP template: it would activate whatever the CA signed"
    );
    for (name, text) in templates {
        let body: Value = serde_json::from_str(text.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        let known: BTreeSet<String> = declared(&body, "Parameters")
            .union(&declared(&body, "Resources"))
            .cloned()
            .collect();
        let mut used = BTreeSet::new();
        refs(&body["Resources"], &mut used);
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{name} references undeclared {unknown:?}"
        );
        for resource in ["thing", "certificate", "policy"] {
            assert!(
                body["Resources"][resource].is_object(),
                "{name}: no {resource}"
            );
        }
        assert_eq!(
            body["Resources"]["certificate"]["Properties"]["Status"],
            "ACTIVE"
        );
    }
}

/// A comma-separated list of the hook's environment in the template.
fn hook_list(facts: &Value, variable: &str) -> BTreeSet<String> {
    facts["environmentValues"]["pre-provisioning-hook"][variable]
        .as_str()
        .unwrap_or_else(|| panic!("the template sets no literal {variable} for the hook"))
        .split(',')
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn every_fleet_template_parameter_is_overridden_by_the_hook_or_set_by_the_device() {
    let facts = facts();
    let fleet: Value = serde_json::from_str(
        facts["provisioningTemplates"]["FleetProvisioningTemplate"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut declared = declared(&fleet, "Parameters");
    // IoT sets this one itself, and the hook checks it is the certificate's.
    assert!(declared.remove("AWS::IoT::Certificate::Id"));

    let settable = hook_list(&facts, "DEVICE_SETTABLE_PARAMETERS");
    let attributes = hook_list(&facts, "THING_ATTRIBUTE_PARAMETERS");
    assert_eq!(settable, BTreeSet::from(["SerialNumber".to_owned()]));
    // What the hook answers to the sample allow: its overrides.
    let expected: Value = serde_json::from_slice(
        &std::fs::read(workspace_root().join("tests/fixtures/pre-provisioning-hook/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let overridden: BTreeSet<String> =
        expected["events"]["allow.json"]["response"]["parameterOverrides"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
    let mut hook_sets = BTreeSet::from(["Region".to_owned(), "ThingGroupName".to_owned()]);
    hook_sets.extend(attributes);
    assert_eq!(overridden, hook_sets, "the sample allow's overrides");
    assert!(
        overridden.is_disjoint(&settable),
        "a parameter both overridden and device-settable"
    );
    let covered: BTreeSet<String> = overridden.union(&settable).cloned().collect();
    assert_eq!(
        declared, covered,
        "each fleet template parameter must be overridden by the hook or settable by the device"
    );
}

fn names(facts: &Value, binary: &str) -> BTreeSet<String> {
    facts["environment"][binary]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// What a configuration reads, less what Lambda sets itself.
fn read_by(env: &Env) -> BTreeSet<String> {
    let mut read = env.names_read();
    read.remove("AWS_REGION");
    read
}

#[test]
fn every_function_gets_exactly_the_environment_it_reads() {
    let facts = facts();
    let failover_config = serde_json::json!({
        "hostedZoneId": "Z1", "recordName": "global.iot.example.com", "ttl": 60,
        "regions": {"eu-west-1": {"endpoint": "a-ats.iot.eu-west-1.amazonaws.com", "healthCheckId": "h", "alarmName": "geoprov-health-eu-west-1"}},
        "locations": [{"setIdentifier": "Default", "geoLocation": {"CountryCode": "*"}, "preference": ["eu-west-1"]}],
        "failAfter": 2, "recoverAfter": 3, "minChangeIntervalSeconds": 60
    })
    .to_string();
    let pca = "arn:aws:acm-pca:eu-central-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";
    let all = [
        ("AWS_REGION", "eu-west-1"),
        ("TABLE_NAME", "geoprov"),
        ("HOOK_DEADLINE_MS", "3000"),
        ("LAMBDA_TIMEOUT_MS", "4000"),
        ("PROVISIONING_CLIENT_ID_PREFIX", "prov-"),
        ("REQUIRE_FACTORY_KEY", "true"),
        ("DEFAULT_MAX_PROVISIONS", "3"),
        ("DEFAULT_THING_GROUP", "geoprov-devices"),
        ("THING_GROUP_PREFIX", "geoprov-"),
        ("DEVICE_SETTABLE_PARAMETERS", "SerialNumber"),
        ("THING_ATTRIBUTE_PARAMETERS", "model,firmware"),
        ("TRUSTED_CLAIM_CERTIFICATE_IDS", "abc"),
        ("ALLOW_EMPTY_CLAIM_TRUST", "false"),
        ("FAILOVER_CONFIG", failover_config.as_str()),
        ("CONFIG_BUCKET_OWNER", "123456789012"),
        ("INSYNC_TIMEOUT_SECONDS", "60"),
        ("LOCK_WAIT_SECONDS", "30"),
        ("PCA_ARN", pca),
        ("PCA_REGION", "eu-central-1"),
        ("MAX_VALIDITY_DAYS", "365"),
        ("DEFAULT_VALIDITY_DAYS", "365"),
        ("ISSUE_CONCURRENCY", "8"),
        ("ISSUE_DEADLINE_MS", "20000"),
        ("DEFAULT_MAX_CERTIFICATES", "5"),
        ("DEVICE_POLICY_NAME", "geoprov-DevicePolicy"),
        ("THING_TYPE_NAME", "geoprov-device"),
        (
            "FLEET_CA_CERTIFICATE_IDS",
            "4810b18d69b82a05d630d511f510d8a6f4a858209783fd2b140588c66354cea0",
        ),
    ];

    let env = Env::from_pairs(all);
    pre_provisioning_hook::HookConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "pre-provisioning-hook"));

    let env = Env::from_pairs(all);
    geoprov_failover::config::FunctionConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "endpoint-failover"));

    let env = Env::from_pairs(all);
    cert_issuer::config::IssuerConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "cert-issuer"));

    let env = Env::from_pairs(all);
    device_activation::config::ActivationConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "device-activation"));

    let canary = [
        ("AWS_REGION", "eu-west-1"),
        ("CANARY_SERVER_NAME", "global.iot.example.com"),
        ("CANARY_ENDPOINT", "a-ats.iot.eu-west-1.amazonaws.com"),
        ("CANARY_PARAMETER_PATH", "/geoprov/canary/eu-west-1"),
        ("CANARY_BUDGET_MS", "20000"),
        ("CANARY_PROVISIONING", "true"),
        ("CANARY_TEMPLATE_NAME", "geoprov-fleet"),
        ("CANARY_SERIAL", "geoprov-canary-eu-west-1-probe"),
        ("PROVISIONING_CLIENT_ID_PREFIX", "prov-"),
        ("TABLE_NAME", "geoprov"),
        ("CANARY_WINDOW", "5"),
    ];
    let env = Env::from_pairs(canary);
    geoprov_canary::config::CanaryConfig::from_env(&env).unwrap();
    assert_eq!(read_by(&env), names(&facts, "region-canary"));
}

/// The canary's budget and cleanup end inside its Lambda timeout, and it
/// uses the hook's template and serial.
#[test]
fn the_canary_finishes_inside_its_timeout_and_probes_the_serial_the_hook_reserves() {
    let facts = facts();
    let values = &facts["environmentValues"]["region-canary"];
    let budget_ms: u64 = values["CANARY_BUDGET_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let timeout_s = facts["timeouts"]["region-canary"].as_u64().unwrap();
    let cleanup_ms = geoprov_canary::probe::CLEANUP_LIMIT.as_millis() as u64;
    let window_ms = geoprov_canary::canary::WINDOW_LIMIT.as_millis() as u64;
    assert!(
        budget_ms + cleanup_ms + window_ms + 5_000 <= timeout_s * 1000,
        "budget {budget_ms} ms + cleanup {cleanup_ms} ms + window {window_ms} ms + 5 s margin > timeout {timeout_s} s"
    );
    assert_eq!(values["CANARY_TEMPLATE_NAME"], "geoprov-fleet");
    // The hook's CANARY_SERIAL is an Fn::If; both name the same serial.
    let template = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    let serial = "geoprov-canary-${AWS::Region}-probe";
    assert_eq!(
        template.matches(serial).count(),
        3,
        "the hook's and the canary's CANARY_SERIAL, and the canary's cleanup grant"
    );
    assert_eq!(
        geoprov_canary::provisioning_serial("eu-west-1"),
        serial.replace("${AWS::Region}", "eu-west-1")
    );
}

/// The health path: the canary's `CanaryFailuresInWindow` by Region -> the
/// region's alarm, 1 of 1 (missing data breaching) -> the global stack's
/// CLOUDWATCH_METRIC health check on that alarm, by region and name
/// (insufficient data unhealthy) -> its id as an output, which the
/// failover's configuration gives the records. For every HealthAlarmWindow
/// the alarm passes the rules `geoprov failover check-health` applies
/// (Route 53's and geoprov's), and the canary's window, through Route 53's
/// evaluation, fails after M bad minutes and recovers after N - M + 1 good.
#[test]
fn each_region_s_canary_alarm_feeds_its_route53_health_check() {
    use route53_answer::health::{self, HealthStatus, InsufficientData, MetricAlarm};
    let facts = facts();
    let alarm = &facts["alarms"]["RegionHealthAlarm"];
    assert_eq!(alarm["Namespace"], "geoprov");
    assert_eq!(alarm["MetricName"], "CanaryFailuresInWindow");
    assert_eq!(
        alarm["Dimensions"],
        json!([{"Name": "Region", "Value": {"Ref": "AWS::Region"}}]),
        "the canary's metric line has the Region dimension alone"
    );
    assert_eq!(
        alarm["AlarmName"],
        json!({"Fn::Sub": "geoprov-health-${AWS::Region}"})
    );
    // The canary's metric line is what the alarm names.
    let mut report = geoprov_canary::probe::Report::new("eu-west-1", "r");
    report.window = Some(geoprov_canary::probe::WindowReading {
        minute: 1,
        size: 5,
        failures: 3,
        error: None,
    });
    let line = report.metric_line().render(0);
    assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "geoprov");
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Region"]])
    );
    assert_eq!(line["CanaryFailuresInWindow"], 3.0);

    let windows = facts["mappings"]["template.yaml"]["HealthAlarmWindows"]
        .as_object()
        .unwrap();
    let allowed = &facts["parameterDefinitions"]["template.yaml"]["HealthAlarmWindow"];
    assert_eq!(
        allowed["AllowedValues"].as_array().unwrap().len(),
        windows.len()
    );
    // The canary's window and the alarm's threshold come from one choice.
    let canary_env = facts["environment"]["region-canary"].as_array().unwrap();
    assert!(
        canary_env.contains(&json!("CANARY_WINDOW")) && canary_env.contains(&json!("TABLE_NAME"))
    );
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    assert!(text.contains(
        "CANARY_WINDOW: !FindInMap [HealthAlarmWindows, !Ref HealthAlarmWindow, Minutes]"
    ));
    assert_eq!(
        alarm["Threshold"],
        json!({"Fn::FindInMap": ["HealthAlarmWindows", {"Ref": "HealthAlarmWindow"}, "Failures"]})
    );
    let int = |v: &Value| v.as_u64().map(|n| n as u32);
    for (name, window) in windows {
        let m = window["Failures"].as_u64().unwrap();
        let n = window["Minutes"].as_u64().unwrap();
        assert_eq!(name, &format!("{m}-of-{n}"));
        assert!(
            n - m + 1 > m,
            "{name}: recovers after {} good minutes",
            n - m + 1
        );
        assert!(
            allowed["AllowedValues"]
                .as_array()
                .unwrap()
                .contains(&json!(name))
        );
        // The alarm as this window deploys it, through the validator's rules.
        let deployed = MetricAlarm {
            name: "geoprov-health-eu-west-1".into(),
            region: "eu-west-1".into(),
            namespace: alarm["Namespace"].as_str().map(str::to_owned),
            metric_name: alarm["MetricName"].as_str().map(str::to_owned),
            dimensions: vec![("Region".into(), "eu-west-1".into())],
            statistic: alarm["Statistic"].as_str().map(str::to_owned),
            extended_statistic: alarm["ExtendedStatistic"].as_str().map(str::to_owned),
            period: int(&alarm["Period"]),
            evaluation_periods: int(&alarm["EvaluationPeriods"]),
            datapoints_to_alarm: int(&alarm["DatapointsToAlarm"]),
            threshold: Some(m as f64),
            comparison_operator: alarm["ComparisonOperator"].as_str().map(str::to_owned),
            treat_missing_data: alarm["TreatMissingData"].as_str().map(str::to_owned),
            metric_math: alarm.get("Metrics").is_some(),
            threshold_metric_id: alarm["ThresholdMetricId"].as_str().map(str::to_owned),
        };
        assert_eq!(health::check_alarm(&deployed), vec![], "{name}");
        // The canary's window through Route 53's evaluation: good minutes,
        // then bad ones until the check fails, then good ones until it
        // recovers.
        let config = deployed.configuration().unwrap();
        let (m, n) = (m as u32, n as u32);
        let mut window = geoprov_canary::window::Window::default();
        let mut points = Vec::new();
        let mut minute = 1_000;
        let mut run = |ok: bool| {
            window.record(minute, ok, n);
            points.push(health::Datapoint {
                at: minute * 60,
                value: f64::from(window.failures(minute, n)),
            });
            minute += 1;
            // Evaluated once the minute's period has ended.
            health::health_status(
                &config,
                InsufficientData::Unhealthy,
                &points,
                minute * 60,
                None,
            )
        };
        for _ in 0..n {
            run(true);
        }
        assert_eq!(run(true), HealthStatus::Healthy, "{name}");
        let to_fail = (1..=n).find(|_| run(false) == HealthStatus::Unhealthy);
        assert_eq!(to_fail, Some(m), "{name}: unhealthy after M bad minutes");
        let to_recover = (1..=2 * n).find(|_| run(true) == HealthStatus::Healthy);
        assert_eq!(
            to_recover,
            Some(n - m + 1),
            "{name}: healthy after N - M + 1 good minutes"
        );
    }

    let checks: Vec<&Value> = facts["healthResources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["template"] == "global.yaml" && r["type"] == "AWS::Route53::HealthCheck")
        .collect();
    assert_eq!(
        checks.len(),
        1,
        "one health check per region, by Fn::ForEach"
    );
    let check = checks[0];
    assert_eq!(check["loops"][0]["collection"], json!({"Ref": "Regions"}));
    let config = &check["properties"]["HealthCheckConfig"];
    assert_eq!(config["Type"], "CLOUDWATCH_METRIC");
    assert_eq!(config["InsufficientDataHealthStatus"], "Unhealthy");
    assert_eq!(
        config["AlarmIdentifier"],
        json!({"Region": {"Ref": "RegionName"}, "Name": {"Fn::Sub": "geoprov-health-${RegionName}"}})
    );
    // No TCP check beside it (see docs/failover.md: it adds no signal the canary
    // lacks, and a CALCULATED parent would let it mask the canary).
    assert!(config.get("FullyQualifiedDomainName").is_none());

    let output = &facts["outputs"]["global.yaml"]["Fn::ForEach::HealthCheckIdPerRegion"];
    assert_eq!(output[1], json!({"Ref": "Regions"}));
    assert_eq!(
        output[2]["HealthCheckId&{RegionName}"]["Value"],
        json!({"Fn::GetAtt": [{"Fn::Sub": "HealthCheck&{RegionName}"}, "HealthCheckId"]})
    );
}

/// JITR: the only way an auto-registered certificate becomes ACTIVE is the
/// rule that hands IoT's registration event to device-activation.
#[test]
fn auto_registered_certificates_go_to_device_activation() {
    let facts = facts();
    let rules = facts["topicRules"].as_object().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules["JitrRule"];
    assert_eq!(
        rule["sql"],
        "SELECT * FROM '$aws/events/certificates/registered/+'"
    );
    assert_eq!(rule["functions"], serde_json::json!(["device-activation"]));
}

/// The AllowedPattern of a parameter that holds region names.
const REGION_PATTERN: &str = r"^[a-z]{2}(-[a-z]+)+-\d$";

/// Whether `text` has a run of 8 or more characters kept by `keep`, a digit
/// among them.
fn has_id_like_run(text: &str, keep: fn(char) -> bool) -> bool {
    text.split(|c: char| !keep(c))
        .any(|run| run.len() >= 8 && run.chars().any(|c| c.is_ascii_digit()))
}

/// Whether a logical id holds a generated id: hex digits (a health check id,
/// a UUID, with its hyphens stripped by `&{}`) or upper-case letters and
/// digits (a Route 53 id).
fn looks_like_an_id(text: &str) -> bool {
    has_id_like_run(text, |c| c.is_ascii_hexdigit())
        || has_id_like_run(text, |c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[test]
fn health_checks_and_alarms_take_their_logical_ids_from_region_names_only() {
    let facts = facts();
    let resources = facts["healthResources"].as_array().unwrap();
    let kinds: BTreeSet<(&str, &str)> = resources
        .iter()
        .map(|r| (r["template"].as_str().unwrap(), r["type"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("template.yaml", "AWS::CloudWatch::Alarm")),
        "the regional stack has no health alarm: {kinds:?}"
    );
    assert!(
        kinds.contains(&("global.yaml", "AWS::Route53::HealthCheck")),
        "the global stack has no health check: {kinds:?}"
    );
    // What a Regions parameter may hold.
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2", "ca-central-1"];
    for resource in resources {
        let template = resource["template"].as_str().unwrap();
        let written = resource["logicalId"].as_str().unwrap();
        let loops = resource["loops"].as_array().unwrap();
        let mut ids = vec![written.to_owned()];
        for each in loops {
            let identifier = each["identifier"].as_str().unwrap();
            assert_eq!(
                each["collection"],
                serde_json::json!({"Ref": "Regions"}),
                "{template} {written}: made by a loop over {}, not over the region names",
                each["collection"]
            );
            assert_eq!(
                each["parameterType"], "CommaDelimitedList",
                "{template} {written}: Regions is not a CommaDelimitedList"
            );
            assert_eq!(
                each["allowedPattern"], REGION_PATTERN,
                "{template} {written}: Regions does not hold region names only"
            );
            ids = ids
                .iter()
                .flat_map(|id| {
                    regions.iter().map(move |region| {
                        id.replace(&format!("&{{{identifier}}}"), &region.replace('-', ""))
                            .replace(&format!("${{{identifier}}}"), region)
                    })
                })
                .collect();
        }
        for id in &ids {
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{template} {written}: {id} is not a logical id (a placeholder no loop fills?)"
            );
            assert!(
                !looks_like_an_id(id),
                "{template} {written}: the logical id {id} holds an id-like value"
            );
        }
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "{template} {written}: two regions get the same logical id"
        );
    }
}

#[test]
fn every_policy_statement_has_a_resource_under_every_combination_of_conditions() {
    let facts = facts();
    assert_eq!(
        facts["templates"],
        serde_json::json!(["template.yaml", "global.yaml"])
    );
    assert!(
        facts["policyStatements"].as_u64().unwrap() > 0,
        "no policy statement was checked"
    );
    let problems: Vec<&str> = facts["policyProblems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// IoT's limits on a thing's attributes (the thing-types page of the IoT
/// developer guide): without a type at most 3; with one at most 50, of
/// which at most 3 searchable.
const ATTRIBUTES_WITHOUT_TYPE: usize = 3;
const ATTRIBUTES_WITH_TYPE: usize = 50;
const SEARCHABLE_ATTRIBUTES: usize = 3;

fn provisioning_bodies(facts: &Value) -> Vec<(String, Value)> {
    facts["provisioningTemplates"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, text)| {
            (
                name.clone(),
                serde_json::from_str(text.as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Every thing resource of a provisioning template body.
fn things(body: &Value) -> Vec<(&String, &Value)> {
    body["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::IoT::Thing")
        .collect()
}

#[test]
fn every_thing_has_the_thing_type_and_no_more_attributes_than_it_allows() {
    let facts = facts();
    let types = facts["thingTypes"].as_object().unwrap();
    assert!(
        types.contains_key("geoprov-device"),
        "the regional stack has no thing type geoprov-device: {types:?}"
    );
    for (name, thing_type) in types {
        let searchable = thing_type["searchableAttributes"].as_array().unwrap();
        assert!(
            searchable.len() <= SEARCHABLE_ATTRIBUTES,
            "thing type {name} has {} searchable attributes",
            searchable.len()
        );
    }
    let bodies = provisioning_bodies(&facts);
    assert_eq!(bodies.len(), 1);
    for (template, body) in &bodies {
        let things = things(body);
        assert_eq!(things.len(), 1, "{template}: one thing");
        for (resource, thing) in things {
            let properties = &thing["Properties"];
            let attributes = properties["AttributePayload"]
                .as_object()
                .map(|a| a.len())
                .unwrap_or(0);
            let limit = match properties["ThingTypeName"].as_str() {
                Some(thing_type) => {
                    assert!(
                        types.contains_key(thing_type),
                        "{template}.{resource}: thing type {thing_type} is not in the stack"
                    );
                    ATTRIBUTES_WITH_TYPE
                }
                None => {
                    assert!(
                        properties.get("ThingTypeName").is_none(),
                        "{template}.{resource}: ThingTypeName is not a literal name"
                    );
                    ATTRIBUTES_WITHOUT_TYPE
                }
            };
            assert!(
                attributes <= limit,
                "{template}.{resource}: {attributes} attributes, at most {limit} allowed"
            );
            // Both templates name the type: four attributes need one.
            assert_eq!(properties["ThingTypeName"], "geoprov-device", "{template}");
        }
    }
}

/// The thing groups a body can name: literal names, and the default of a
/// parameter it names (the hook's override is another: see below).
fn group_names(body: &Value, thing: &Value) -> Vec<String> {
    let Some(groups) = thing["Properties"]["ThingGroups"].as_array() else {
        return Vec::new();
    };
    groups
        .iter()
        .map(|group| match group {
            Value::String(name) => name.clone(),
            Value::Object(reference) => {
                let parameter = reference["Ref"].as_str().expect("a Ref to a parameter");
                body["Parameters"][parameter]["Default"]
                    .as_str()
                    .unwrap_or_else(|| panic!("group parameter {parameter} has no default"))
                    .to_owned()
            }
            other => panic!("a thing group that is neither a name nor a Ref: {other}"),
        })
        .collect()
}

#[test]
fn every_thing_group_a_template_names_exists_in_the_stack() {
    let facts = facts();
    let groups: BTreeSet<String> = facts["thingGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    assert!(groups.contains("geoprov-devices"), "{groups:?}");
    let mut named = 0;
    for (template, body) in provisioning_bodies(&facts) {
        for (_, thing) in things(&body) {
            for group in group_names(&body, thing) {
                named += 1;
                assert!(
                    groups.contains(&group),
                    "{template} adds things to {group}, which the stack does not create"
                );
            }
        }
    }
    assert_eq!(named, 1, "the template adds its thing to the default group");
    // Any other group comes from the manifest through the hook's
    // ThingGroupName override; `geoprov registry import --regions` creates it
    // in every region before the profile is written (tests/tests/integration/cli.rs).
}

fn grants(facts: &Value, binary: &str) -> Value {
    facts["grants"][binary].clone()
}

const FUNCTIONS: [&str; 3] = ["pre-provisioning-hook", "cert-issuer", "endpoint-failover"];

#[test]
fn the_audit_log_is_append_only_for_every_function() {
    let facts = facts();
    for binary in FUNCTIONS {
        let grants = grants(&facts, binary);
        for pk in ["AUDIT#DEVICE#SN-1", "AUDIT#UNATTRIBUTED"] {
            for action in [
                "dynamodb:DeleteItem",
                "dynamodb:UpdateItem",
                "dynamodb:BatchWriteItem",
            ] {
                assert!(
                    !iam::allows(&grants, action, pk),
                    "{binary} may {action} the audit item {pk}"
                );
            }
        }
    }
    // The two that write audit events may append them.
    for binary in ["pre-provisioning-hook", "cert-issuer"] {
        assert!(iam::allows(
            &grants(&facts, binary),
            "dynamodb:PutItem",
            "AUDIT#DEVICE#SN-1"
        ));
    }
}

#[test]
fn the_failovers_role_cannot_delete_an_audit_item_or_touch_a_device() {
    let facts = facts();
    let failover = grants(&facts, "endpoint-failover");
    assert!(!iam::allows(
        &failover,
        "dynamodb:DeleteItem",
        "AUDIT#DEVICE#SN-1"
    ));
    for action in [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
    ] {
        for pk in [
            "AUDIT#DEVICE#SN-1",
            "DEVICE#SN-1",
            "PROVISIONING#SN-1",
            "CSR#ab",
        ] {
            assert!(
                !iam::allows(&failover, action, pk),
                "failover may {action} {pk}"
            );
        }
    }
    // Not vacuous: its own items it may write.
    assert!(iam::allows(
        &failover,
        "dynamodb:UpdateItem",
        "FAILOVER#global.iot.example.com"
    ));
}

#[test]
fn the_hook_and_the_issuer_cannot_rewrite_a_devices_profile() {
    let facts = facts();
    for binary in ["pre-provisioning-hook", "cert-issuer"] {
        let grants = grants(&facts, binary);
        for action in [
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        ] {
            assert!(
                !iam::allows(&grants, action, "DEVICE#SN-1"),
                "{binary} may {action} a profile (where the status lives)"
            );
        }
        assert!(iam::allows(&grants, "dynamodb:Query", "DEVICE#SN-1"));
    }
    let hook = grants(&facts, "pre-provisioning-hook");
    assert!(iam::allows(
        &hook,
        "dynamodb:UpdateItem",
        "PROVISIONING#SN-1"
    ));
    let issuer = grants(&facts, "cert-issuer");
    assert!(!iam::allows(
        &issuer,
        "dynamodb:UpdateItem",
        "PROVISIONING#SN-1"
    ));
}

#[test]
fn the_claim_may_connect_only_with_the_provisioning_prefix() {
    let facts = facts();
    let claim = facts["iotPolicies"]["ClaimPolicy"].as_array().unwrap();
    let connects: Vec<&Value> = claim
        .iter()
        .filter(|s| {
            s["actions"]
                .as_array()
                .unwrap()
                .contains(&json!("iot:Connect"))
        })
        .collect();
    assert_eq!(connects.len(), 1, "{claim:?}");
    for resource in connects[0]["resources"].as_array().unwrap() {
        assert!(
            resource
                .as_str()
                .unwrap()
                .ends_with(":client/${ProvisioningClientIdPrefix}*"),
            "the claim may connect as {resource}"
        );
    }
    // And the hook checks the same prefix.
    assert_eq!(
        facts["environment"]["pre-provisioning-hook"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| *n == "PROVISIONING_CLIENT_ID_PREFIX")
            .count(),
        1
    );
    // A device connects as its own thing name only.
    let device = facts["iotPolicies"]["DevicePolicy"].as_array().unwrap();
    let connect = device
        .iter()
        .find(|s| {
            s["actions"]
                .as_array()
                .unwrap()
                .contains(&json!("iot:Connect"))
        })
        .unwrap();
    assert!(
        connect["resources"][0]
            .as_str()
            .unwrap()
            .ends_with(":client/${!iot:Connection.Thing.ThingName}")
    );
}

#[test]
fn the_claim_abuse_alarm_watches_the_denials_the_hook_counts_per_claim() {
    let facts = facts();
    let alarm = &facts["alarms"]["ClaimAbuseAlarm"];
    let query = alarm["Metrics"][0]["Expression"].as_str().unwrap();
    assert!(query.contains("SUM(ClaimDenials)"), "{query}");
    assert!(query.contains("GROUP BY ClaimCertificateId"), "{query}");
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["TreatMissingData"], "notBreaching");
}

#[test]
fn the_hooks_timeout_in_its_environment_is_its_lambda_timeout() {
    let facts = facts();
    let timeout_s = facts["timeouts"]["pre-provisioning-hook"].as_u64().unwrap();
    let declared: u64 = facts["environmentValues"]["pre-provisioning-hook"]["LAMBDA_TIMEOUT_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(declared, timeout_s * 1000);
}

/// The fleet provisioning template body, evaluated as geoprov-iot-emu (and
/// IoT) evaluates it, with the sample allow's parameters and overrides.
#[test]
fn the_provisioning_templates_evaluate_to_a_typed_thing_in_the_default_or_manifest_group() {
    use geoprov_iot_emu::template::{PolicySpec, evaluate};
    use std::collections::BTreeMap;
    let facts = facts();
    let body = |name: &str| -> Value {
        let text = facts["provisioningTemplates"][name].as_str().unwrap();
        serde_json::from_str(&text.replace("${AWS::Region}", "eu-west-1")).unwrap()
    };
    let expected: Value = serde_json::from_slice(
        &std::fs::read(workspace_root().join("tests/fixtures/pre-provisioning-hook/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let mut parameters: BTreeMap<String, String> = serde_json::from_value(
        expected["events"]["allow.json"]["response"]["parameterOverrides"].clone(),
    )
    .unwrap();
    parameters.insert("SerialNumber".into(), "SN-EU-0001".into());
    parameters.insert("AWS::IoT::Certificate::Id".into(), "c".repeat(64));
    let fleet = evaluate(&body("FleetProvisioningTemplate"), &parameters).unwrap();
    let thing = fleet.thing.unwrap();
    assert_eq!(thing.name, "SN-EU-0001");
    assert_eq!(thing.thing_type.as_deref(), Some("geoprov-device"));
    assert_eq!(thing.groups, ["geoprov-sensors-eu"]);
    // An existing thing of the serial's name leaves every other group: the
    // certificate never inherits a group the registry did not give it.
    assert_eq!(
        thing.overrides.groups,
        geoprov_iot_emu::template::Override::Replace
    );
    assert_eq!(thing.attributes["region"], "eu-west-1");
    assert_eq!(thing.attributes.len(), 4);
    assert_eq!(fleet.certificate.unwrap().status, "ACTIVE");
    assert_eq!(
        fleet.policies,
        [PolicySpec::Named("geoprov-DevicePolicyName".into())]
    );
    assert_eq!(fleet.device_configuration["region"], "eu-west-1");

    // Without the hook's overrides the template has no region: IoT refuses.
    let mut bare = BTreeMap::from([("SerialNumber".to_owned(), "SN-1".to_owned())]);
    bare.insert("AWS::IoT::Certificate::Id".into(), "c".repeat(64));
    assert_eq!(
        evaluate(&body("FleetProvisioningTemplate"), &bare)
            .unwrap_err()
            .code,
        "InvalidParameters"
    );
}
