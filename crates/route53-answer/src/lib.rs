//! route53-answer: what a DNS resolver in a given location gets from Route 53
//! for a name, given the zone's record sets exactly as `ListResourceRecordSets`
//! returns them and the status of each health check. Health is an input: the
//! health checkers are AWS's. Every answer comes with the path of records that
//! led to it, so a test or a person can see why.
//!
//! The rules, from the Route 53 Developer Guide:
//! - **Geolocation** (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/routing-policy-geo.html>): the smallest matching
//!   region wins: a US state (subdivision), then the country, then the
//!   continent, then the default location (`CountryCode: "*"`). With no match
//!   and no default record, Route 53 returns no answer.
//! - **Health** (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/health-checks-how-route-53-chooses-records.html>): a record
//!   without a health check is always healthy. An unhealthy record passes the
//!   choice on by the same routing policy; for geolocation that is the next
//!   broader location that matches. When every candidate is unhealthy, Route
//!   53 "considers all the records in the group to be healthy" and chooses by
//!   the routing policy alone: for geolocation the most specific match.
//! - **Failover** (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/dns-failover-types.html>, <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/dns-failover-complex-configs.html>):
//!   the PRIMARY while it is healthy, else the SECONDARY; with both unhealthy,
//!   the PRIMARY.
//! - **Alias with Evaluate Target Health** (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/resource-record-sets-values-alias.html>,
//!   <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/dns-failover-complex-configs.html>): an alias to a group of records in
//!   the same zone is healthy when at least one record of the group is.
//! - **CNAME chains inside the zone**: a CNAME whose value is another name of
//!   the zone is followed, as a resolver would (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/resource-record-sets-choosing-alias-non-alias.html>);
//!   its target's health does not make the CNAME unhealthy.
//!
//! [`health`] computes each health check's status as Route 53 does, from
//! the alarm's datapoints and the settings the check copied of it, so the
//! answer model and the evaluator together say what a location resolves to
//! at a given minute.
//!
//! Not modelled (and refused with [`NoAnswer::Unsupported`]): weighted,
//! latency, multivalue answer, IP-based and geoproximity routing, and
//! wildcard names.

pub mod continents;
pub mod health;
mod record;
mod resolve;

pub use record::{
    AliasTarget, FailoverRole, GeoLocation, RecordSet, ResourceRecord, normalize_name,
};
pub use resolve::{ClientLocation, Hop, MAX_HOPS, NoAnswer, Policy, Resolution, Zone};
