//! Each documented Route 53 rule, on small zones.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test is a scenario read top to bottom, and a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;

use route53_answer::{
    ClientLocation, FailoverRole, GeoLocation, NoAnswer, Policy, RecordSet, Zone,
};

const NAME: &str = "global.iot.example.com";
const ZONE: &str = "Z1";

fn geo(id: &str, geo: GeoLocation, value: &str) -> RecordSet {
    RecordSet::cname(NAME, value, 60)
        .with_set_identifier(id)
        .with_geo_location(geo)
}

fn down(ids: &[&str]) -> impl Fn(&str) -> bool + use<> {
    let set: BTreeSet<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    move |id: &str| !set.contains(id)
}

fn at(country: &str, subdivision: Option<&str>) -> ClientLocation {
    ClientLocation {
        subdivision: subdivision.map(str::to_owned),
        ..ClientLocation::country(country)
    }
}

fn answer(zone: &Zone, client: &ClientLocation, unhealthy: &[&str]) -> Option<String> {
    zone.resolve(NAME, client, &down(unhealthy)).answer
}

fn four_levels() -> Zone {
    Zone::new([
        geo(
            "default",
            GeoLocation::default_location(),
            "default.example.net",
        ),
        geo("na", GeoLocation::continent("NA"), "na.example.net").with_health_check("hc-na"),
        geo("us", GeoLocation::country("US"), "us.example.net").with_health_check("hc-us"),
        geo(
            "us-ca",
            GeoLocation::subdivision("US", "CA"),
            "ca.example.net",
        )
        .with_health_check("hc-ca"),
    ])
}

#[test]
fn the_smallest_matching_location_wins() {
    let zone = four_levels();
    let cases = [
        (at("US", Some("CA")), "ca.example.net"),
        (at("US", Some("NY")), "us.example.net"),
        (at("US", None), "us.example.net"),
        (at("CA", None), "na.example.net"), // Canada is on North America
        (at("FR", None), "default.example.net"),
        (ClientLocation::unknown(), "default.example.net"),
    ];
    for (client, expected) in cases {
        assert_eq!(
            answer(&zone, &client, &[]).as_deref(),
            Some(expected),
            "{client:?}"
        );
    }
}

#[test]
fn an_unhealthy_location_falls_back_to_the_next_broader_one() {
    let zone = four_levels();
    let ca = at("US", Some("CA"));
    assert_eq!(
        answer(&zone, &ca, &["hc-ca"]).as_deref(),
        Some("us.example.net")
    );
    assert_eq!(
        answer(&zone, &ca, &["hc-ca", "hc-us"]).as_deref(),
        Some("na.example.net")
    );
    let resolution = zone.resolve(NAME, &ca, &down(&["hc-ca", "hc-us", "hc-na"]));
    assert_eq!(resolution.answer.as_deref(), Some("default.example.net"));
    assert_eq!(resolution.path.len(), 1);
    assert_eq!(resolution.path[0].policy, Policy::Geolocation);
    assert!(
        resolution.path[0]
            .why
            .contains("subdivision US-CA, country US, continent NA unhealthy"),
        "{}",
        resolution.path[0].why
    );
}

#[test]
fn when_every_match_is_unhealthy_the_most_specific_answers() {
    let zone = Zone::new([
        geo(
            "default",
            GeoLocation::default_location(),
            "default.example.net",
        )
        .with_health_check("hc-d"),
        geo("us", GeoLocation::country("US"), "us.example.net").with_health_check("hc-us"),
    ]);
    assert_eq!(
        answer(&zone, &at("US", None), &["hc-us", "hc-d"]).as_deref(),
        Some("us.example.net")
    );
    assert_eq!(
        answer(&zone, &at("FR", None), &["hc-us", "hc-d"]).as_deref(),
        Some("default.example.net")
    );
}

#[test]
fn no_match_and_no_default_is_no_answer() {
    let zone = Zone::new([geo("us", GeoLocation::country("US"), "us.example.net")]);
    let resolution = zone.resolve(NAME, &at("FR", None), &down(&[]));
    assert_eq!(resolution.answer, None);
    assert_eq!(
        resolution.no_answer,
        Some(NoAnswer::NoGeolocationMatch { name: NAME.into() })
    );
    let missing = zone.resolve("other.example.com.", &at("US", None), &down(&[]));
    assert!(matches!(missing.no_answer, Some(NoAnswer::NoRecord { .. })));
}

#[test]
fn a_record_without_a_health_check_is_always_healthy() {
    let zone = Zone::new([
        geo(
            "default",
            GeoLocation::default_location(),
            "default.example.net",
        ),
        geo("us", GeoLocation::country("US"), "us.example.net"),
    ]);
    // Unknown or unhealthy ids are irrelevant to records that carry none.
    assert_eq!(
        answer(&zone, &at("US", None), &["hc-us", "anything"]).as_deref(),
        Some("us.example.net")
    );
}

fn failover_pair(primary_hc: &str, secondary_hc: Option<&str>) -> Vec<RecordSet> {
    let primary = RecordSet::cname(NAME, "primary.example.net", 60)
        .with_set_identifier("p")
        .with_failover(FailoverRole::Primary)
        .with_health_check(primary_hc);
    let mut secondary = RecordSet::cname(NAME, "secondary.example.net", 60)
        .with_set_identifier("s")
        .with_failover(FailoverRole::Secondary);
    if let Some(hc) = secondary_hc {
        secondary = secondary.with_health_check(hc);
    }
    vec![primary, secondary]
}

#[test]
fn failover_answers_primary_while_healthy_then_secondary_and_primary_when_both_fail() {
    let zone = Zone::new(failover_pair("hc-p", Some("hc-s")));
    let client = at("US", None);
    assert_eq!(
        answer(&zone, &client, &[]).as_deref(),
        Some("primary.example.net")
    );
    assert_eq!(
        answer(&zone, &client, &["hc-p"]).as_deref(),
        Some("secondary.example.net")
    );
    assert_eq!(
        answer(&zone, &client, &["hc-s"]).as_deref(),
        Some("primary.example.net")
    );
    let both = zone.resolve(NAME, &client, &down(&["hc-p", "hc-s"]));
    assert_eq!(both.answer.as_deref(), Some("primary.example.net"));
    assert!(
        both.path[0].why.contains("both unhealthy"),
        "{:?}",
        both.path
    );
    assert!(!both.path[0].healthy);
}

#[test]
fn an_alias_that_evaluates_target_health_follows_its_target() {
    let pair_name = "us.global.iot.example.com";
    let pair: Vec<RecordSet> = failover_pair("hc-p", Some("hc-s"))
        .into_iter()
        .map(|r| RecordSet {
            name: pair_name.into(),
            ..r
        })
        .collect();
    let zone_with = |evaluate: bool| {
        let mut records = pair.clone();
        records.push(
            RecordSet::cname_alias(NAME, ZONE, pair_name, evaluate)
                .with_set_identifier("us")
                .with_geo_location(GeoLocation::country("US")),
        );
        records.push(geo(
            "default",
            GeoLocation::default_location(),
            "default.example.net",
        ));
        Zone::new(records)
    };
    let client = at("US", None);

    // Evaluated: the alias is healthy while one record of the pair is.
    let evaluated = zone_with(true);
    let one_up = evaluated.resolve(NAME, &client, &down(&["hc-p"]));
    assert_eq!(one_up.answer.as_deref(), Some("secondary.example.net"));
    assert_eq!(one_up.path.len(), 2);
    assert!(one_up.path[0].alias && one_up.path[0].healthy);
    assert_eq!(one_up.path[1].policy, Policy::Failover);
    // Both down: the alias is unhealthy and the default answers.
    assert_eq!(
        answer(&evaluated, &client, &["hc-p", "hc-s"]).as_deref(),
        Some("default.example.net")
    );

    // Not evaluated: the alias stays healthy, and the pair answers PRIMARY.
    let plain = zone_with(false);
    assert_eq!(
        answer(&plain, &client, &["hc-p", "hc-s"]).as_deref(),
        Some("primary.example.net")
    );
}

#[test]
fn cname_chains_inside_the_zone_are_followed_and_loops_end() {
    let zone = Zone::new([
        RecordSet::cname(NAME, "step.iot.example.com.", 60),
        RecordSet::cname("step.iot.example.com.", "endpoint.example.net.", 60),
    ]);
    let resolution = zone.resolve(NAME, &at("US", None), &down(&[]));
    assert_eq!(resolution.answer.as_deref(), Some("endpoint.example.net"));
    assert_eq!(resolution.path.len(), 2);

    let looped = Zone::new([
        RecordSet::cname("a.example.com", "b.example.com", 60),
        RecordSet::cname("b.example.com", "a.example.com", 60),
    ]);
    let resolution = looped.resolve("a.example.com", &at("US", None), &down(&[]));
    assert_eq!(resolution.answer, None);
    assert!(matches!(resolution.no_answer, Some(NoAnswer::Loop { .. })));
}

#[test]
fn routing_policies_it_does_not_model_are_refused() {
    let mut weighted = RecordSet::cname(NAME, "w.example.net", 60).with_set_identifier("w");
    weighted.weight = Some(10);
    let zone = Zone::new([weighted]);
    let resolution = zone.resolve(NAME, &at("US", None), &down(&[]));
    assert!(matches!(
        resolution.no_answer,
        Some(NoAnswer::Unsupported { .. })
    ));
}

#[test]
fn reads_record_sets_as_the_aws_cli_prints_them() {
    let listed = serde_json::json!([
        {"Name": "global.iot.example.com.", "Type": "CNAME", "SetIdentifier": "NA",
         "GeoLocation": {"ContinentCode": "NA"},
         "AliasTarget": {"HostedZoneId": "Z1", "DNSName": "us-east-1.continent-na.global.iot.example.com.", "EvaluateTargetHealth": false}},
        {"Name": "global.iot.example.com.", "Type": "CNAME", "SetIdentifier": "Default",
         "GeoLocation": {"CountryCode": "*"}, "TTL": 60,
         "ResourceRecords": [{"Value": "abc-ats.iot.eu-west-1.amazonaws.com"}]},
        {"Name": "us-east-1.continent-na.global.iot.example.com.", "Type": "CNAME",
         "SetIdentifier": "primary", "Failover": "PRIMARY", "HealthCheckId": "hc-use1", "TTL": 60,
         "ResourceRecords": [{"Value": "abc-ats.iot.us-east-1.amazonaws.com"}]},
        {"Name": "us-east-1.continent-na.global.iot.example.com.", "Type": "CNAME",
         "SetIdentifier": "secondary", "Failover": "SECONDARY", "HealthCheckId": "hc-euw1", "TTL": 60,
         "ResourceRecords": [{"Value": "abc-ats.iot.eu-west-1.amazonaws.com"}],
         "CidrRoutingConfig": null}
    ]);
    let records: Vec<RecordSet> = serde_json::from_value(listed).unwrap();
    let zone = Zone::new(records);
    let us = at("US", None);
    assert_eq!(
        answer(&zone, &us, &[]).as_deref(),
        Some("abc-ats.iot.us-east-1.amazonaws.com")
    );
    let outage = zone.resolve(NAME, &us, &down(&["hc-use1"]));
    assert_eq!(
        outage.answer.as_deref(),
        Some("abc-ats.iot.eu-west-1.amazonaws.com")
    );
    let printed = serde_json::to_value(&outage).unwrap();
    assert_eq!(printed["path"][0]["setIdentifier"], "NA");
    assert_eq!(
        printed["path"][1]["why"],
        "failover: PRIMARY unhealthy, SECONDARY healthy"
    );
}
