//! The thing groups a factory manifest names, made to exist in every region
//! before its devices are imported: the fleet provisioning template puts a
//! device in its profile's group, and provisioning fails where that group
//! does not exist.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::SdkConfig;
use aws_sdk_iot::Client;
use aws_sdk_iot::error::DisplayErrorContext;
use aws_sdk_iot::types::ThingGroupProperties;
use futures::stream::{self, StreamExt, TryStreamExt};
use geoprov_shared::device::DeviceProfile;
use serde::Serialize;

use crate::iot::iot_client;

/// The group every regional stack creates itself (template.yaml's
/// DefaultThingGroup).
pub const STACK_GROUP: &str = "geoprov-devices";
/// IoT calls in flight while the groups are checked.
const CONCURRENCY: usize = 8;
const DESCRIPTION: &str = "Created by geoprov registry import for the devices that name it.";

#[derive(Debug, thiserror::Error)]
pub enum ThingGroupError {
    #[error(
        "the manifest names thing group(s) {}, which must exist in every region its devices \
         provision in; pass --regions r1,r2 to create them there. Nothing was imported",
        groups.join(", ")
    )]
    RegionsNeeded { groups: Vec<String> },
    #[error("IoT {operation} of thing group {group} in {region}: {message}; nothing was imported")]
    Aws {
        region: String,
        group: String,
        operation: &'static str,
        message: String,
    },
}

/// The groups of a region: those this run created and those already there.
#[derive(Debug, Default, Serialize)]
pub struct GroupsInRegion {
    pub created: Vec<String>,
    pub existing: Vec<String>,
}

/// The groups the profiles name, other than the stack's own.
pub fn named_groups(profiles: &[DeviceProfile]) -> BTreeSet<String> {
    profiles
        .iter()
        .filter_map(|p| p.thing_group.as_ref())
        .map(|g| g.as_str())
        .filter(|g| *g != STACK_GROUP)
        .map(str::to_owned)
        .collect()
}

/// Makes every group exist in every region; what it found and created, by
/// region.
pub async fn ensure(
    sdk: &SdkConfig,
    regions: &[String],
    groups: &BTreeSet<String>,
) -> Result<BTreeMap<String, GroupsInRegion>, ThingGroupError> {
    let clients: Vec<(&str, Client)> = regions
        .iter()
        .map(|region| (region.as_str(), iot_client(sdk, region)))
        .collect();
    let outcomes: Vec<(&str, &str, bool)> = stream::iter(
        clients
            .iter()
            .flat_map(|(region, client)| groups.iter().map(move |g| (*region, client, g))),
    )
    .map(|(region, client, group)| async move {
        let created = ensure_group(client, region, group).await?;
        Ok::<_, ThingGroupError>((region, group.as_str(), created))
    })
    .buffer_unordered(CONCURRENCY)
    .try_collect()
    .await?;

    let mut by_region: BTreeMap<String, GroupsInRegion> = regions
        .iter()
        .map(|r| (r.clone(), GroupsInRegion::default()))
        .collect();
    for (region, group, created) in outcomes {
        let entry = by_region.entry(region.to_owned()).or_default();
        match created {
            true => entry.created.push(group.to_owned()),
            false => entry.existing.push(group.to_owned()),
        }
    }
    for entry in by_region.values_mut() {
        entry.created.sort();
        entry.existing.sort();
    }
    Ok(by_region)
}

/// DescribeThingGroup, then CreateThingGroup when absent; true when this
/// call created it. A creator that got there first (ResourceAlreadyExists)
/// leaves it existing, which is all the import needs.
async fn ensure_group(client: &Client, region: &str, group: &str) -> Result<bool, ThingGroupError> {
    let fail = |operation: &'static str, message: String| ThingGroupError::Aws {
        region: region.to_owned(),
        group: group.to_owned(),
        operation,
        message,
    };
    const DESCRIBE: &str = "DescribeThingGroup";
    match client
        .describe_thing_group()
        .thing_group_name(group)
        .send()
        .await
    {
        Ok(_) => return Ok(false),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(e) => return Err(fail(DESCRIBE, DisplayErrorContext(e).to_string())),
    }
    const CREATE: &str = "CreateThingGroup";
    match client
        .create_thing_group()
        .thing_group_name(group)
        .thing_group_properties(
            ThingGroupProperties::builder()
                .thing_group_description(DESCRIPTION)
                .build(),
        )
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(fail(CREATE, DisplayErrorContext(e).to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_group_and_repeats_are_left_out() {
        let manifest = crate::manifest::parse(
            &[
                r#"{"serialNumber":"SN-1","thingGroup":"geoprov-sensors-eu"}"#,
                r#"{"serialNumber":"SN-2","thingGroup":"geoprov-devices"}"#,
                r#"{"serialNumber":"SN-3"}"#,
                r#"{"serialNumber":"SN-4","thingGroup":"geoprov-sensors-eu"}"#,
                r#"{"serialNumber":"SN-5","thingGroup":"geoprov-gateways"}"#,
            ]
            .join("\n"),
            crate::manifest::Reserved::default(),
        );
        assert!(manifest.errors.is_empty(), "{:?}", manifest.errors);
        assert_eq!(
            named_groups(&manifest.profiles),
            BTreeSet::from([
                "geoprov-gateways".to_owned(),
                "geoprov-sensors-eu".to_owned()
            ])
        );
    }
}
