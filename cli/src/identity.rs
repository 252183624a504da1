//! `geoprov identity coverage`: whether every device can work in every
//! region DNS may send it to (`geoprov_failover::coverage`), read from the
//! deployment itself: the failover configuration, each region's IoT and the
//! registry. Each region's IoT certificate provider is reported too, with a
//! warning or a notice where it is not geoprov's (never a gap).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use aws_sdk_iot::Client;
use aws_sdk_iot::error::{DisplayErrorContext, ProvideErrorMetadata};
use clap::Subcommand;
use geoprov_failover::coverage::{
    self, CertificateProvider, Gap, ProviderNotice, Reach, RegionFacts, RegionProvider,
};
use geoprov_shared::device::{DeviceStatus, RegionName};
use serde::Serialize;

use crate::error::CliError;
use crate::iot::iot_client;
use crate::output::print_json;
use crate::thing_groups::STACK_GROUP;
use crate::{failover_config, registry};

/// The device policy's name as the regional stack made by
/// `local_iot_stack.py` names it (a deployed stack's comes from its output).
const DEVICE_POLICY: &str = "geoprov-DevicePolicy";

#[derive(Subcommand)]
pub enum Command {
    /// For every location of the failover configuration and every
    /// combination of region health, the regions DNS may answer it with
    /// (the answer model); in each, whether its devices can work there: the
    /// fleet CA ACTIVE with auto-registration, the device policy, the thing
    /// type, each device's thing group, and the registry allowing the
    /// region. Also each region's IoT certificate provider: geoprov's, none
    /// (a warning where devices can be answered) or another one (a notice
    /// with what to do); these never fail the command. Prints the report
    /// (JSON), the warnings and notices on stderr, and exits non-zero on
    /// any gap.
    Coverage {
        /// The FAILOVER_CONFIG document.
        #[arg(long)]
        config: PathBuf,
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        /// The fleet CA's IoT certificate id (`geoprov setup ca` prints it;
        /// the same in every region).
        #[arg(long)]
        ca_certificate_id: String,
        /// The regional stack's device policy: NAME, or REGION=NAME for a
        /// region whose stack named it otherwise (repeat).
        #[arg(long = "device-policy", default_value = DEVICE_POLICY)]
        device_policies: Vec<String>,
        #[arg(long, default_value = "geoprov-device")]
        thing_type: String,
        #[arg(long, default_value = STACK_GROUP)]
        default_group: String,
    },
}

/// What `coverage` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    /// Where each location is answered while all is healthy, and every
    /// region it may be answered with.
    reachable: BTreeMap<String, Reach>,
    devices: usize,
    gaps: Vec<Gap>,
    /// One line per gap, for a person.
    summary: Vec<String>,
    /// Each region's certificate provider: geoprov's, none, or another one.
    certificate_providers: BTreeMap<RegionName, RegionProvider>,
    /// What the providers call for; none of it is a gap.
    provider_notices: Vec<ProviderNotice>,
    /// One line per provider notice, for a person.
    notices: Vec<String>,
}

pub async fn run(command: Command) -> Result<(), CliError> {
    let Command::Coverage {
        config,
        table,
        ca_certificate_id,
        device_policies,
        thing_type,
        default_group,
    } = command;
    let config = failover_config::check(&config)?.config;
    let reachable = coverage::reachable_regions(&config).map_err(CliError::Coverage)?;
    let (sdk, registry) = registry::open(table).await?;
    let devices: Vec<_> = registry
        .profiles()
        .await?
        .into_iter()
        .map(|(mut profile, blocked)| {
            if blocked {
                profile.status = DeviceStatus::Blocked;
            }
            profile
        })
        .collect();
    let groups = coverage::needed_groups(&devices, &default_group);
    let mut facts = BTreeMap::new();
    let mut providers = BTreeMap::new();
    for region in config.regions.keys() {
        let client = iot_client(&sdk, region.as_str());
        providers.insert(
            region.clone(),
            certificate_providers(&client, region.as_str()).await?,
        );
        let wanted = Wanted {
            ca_certificate_id: &ca_certificate_id,
            device_policy: policy_for(&device_policies, region.as_str()),
            thing_type: &thing_type,
            groups: &groups,
        };
        facts.insert(
            region.clone(),
            region_facts(&client, region.as_str(), &wanted).await?,
        );
    }
    let gaps = coverage::gaps(&reachable, &facts, &devices, &default_group);
    let summary = gaps
        .iter()
        .map(|g| {
            format!(
                "{} -> {}: {}; {} device(s), e.g. {}",
                g.location,
                g.region,
                g.missing.describe(),
                g.devices,
                g.examples.join(", ")
            )
        })
        .collect();
    let provider_notices = coverage::provider_notices(&reachable, &providers);
    let notices: Vec<String> = provider_notices.iter().map(|n| n.describe()).collect();
    for line in &notices {
        eprintln!("{line}");
    }
    let found = gaps.len();
    print_json(&Report {
        reachable,
        devices: devices.len(),
        gaps,
        summary,
        certificate_providers: providers
            .iter()
            .map(|(region, listed)| (region.clone(), coverage::provider_in(region, listed)))
            .collect(),
        provider_notices,
        notices,
    });
    match found {
        0 => Ok(()),
        n => Err(CliError::CoverageGaps(n)),
    }
}

/// The device policy's name in `region`: a REGION=NAME entry for it, else
/// the entry without a region.
fn policy_for<'a>(entries: &'a [String], region: &str) -> &'a str {
    let mut plain = DEVICE_POLICY;
    for entry in entries {
        match entry.split_once('=') {
            Some((r, name)) if r == region => return name,
            Some(_) => {}
            None => plain = entry,
        }
    }
    plain
}

/// What `region_facts` looks for.
struct Wanted<'a> {
    ca_certificate_id: &'a str,
    device_policy: &'a str,
    thing_type: &'a str,
    groups: &'a BTreeSet<String>,
}

/// Whether a Describe/Get call found its resource: a not-found error is
/// `false`; any other error is the command's.
fn found<T, E>(
    outcome: Result<T, aws_sdk_iot::error::SdkError<E>>,
    region: &str,
    operation: &'static str,
) -> Result<Option<T>, CliError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match outcome {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(CliError::Iot {
            region: region.to_owned(),
            operation,
            message: DisplayErrorContext(&e).to_string(),
        }),
    }
}

/// More pages than this from ListCertificateProviders, where IoT allows one
/// provider per account, is a service answering in a loop.
const MAX_PROVIDER_PAGES: usize = 100;

/// The certificate providers IoT has in `region`, each with its function
/// (ListCertificateProviders, then DescribeCertificateProvider).
async fn certificate_providers(
    client: &Client,
    region: &str,
) -> Result<Vec<CertificateProvider>, CliError> {
    let iot_error = |operation, e: &dyn std::error::Error| CliError::Iot {
        region: region.to_owned(),
        operation,
        message: DisplayErrorContext(e).to_string(),
    };
    let mut names = Vec::new();
    let mut next_token = None;
    for _ in 0..MAX_PROVIDER_PAGES {
        let page = client
            .list_certificate_providers()
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| iot_error("ListCertificateProviders", &e))?;
        names.extend(
            page.certificate_providers()
                .iter()
                .filter_map(|p| p.certificate_provider_name().map(str::to_owned)),
        );
        next_token = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if next_token.is_none() {
            break;
        }
    }
    if next_token.is_some() {
        return Err(iot_error(
            "ListCertificateProviders",
            &std::io::Error::other(format!("more than {MAX_PROVIDER_PAGES} pages")),
        ));
    }
    let mut providers = Vec::new();
    for name in names {
        // One deleted since the list is no longer there.
        let described = found(
            client
                .describe_certificate_provider()
                .certificate_provider_name(&name)
                .send()
                .await,
            region,
            "DescribeCertificateProvider",
        )?;
        if let Some(out) = described {
            providers.push(CertificateProvider {
                name,
                function_arn: out.lambda_function_arn().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(providers)
}

async fn region_facts(
    client: &Client,
    region: &str,
    wanted: &Wanted<'_>,
) -> Result<RegionFacts, CliError> {
    let ca = found(
        client
            .describe_ca_certificate()
            .certificate_id(wanted.ca_certificate_id)
            .send()
            .await,
        region,
        "DescribeCACertificate",
    )?
    .and_then(|out| out.certificate_description)
    .map(|ca| {
        let active = ca.status().map(|s| s.as_str()) == Some("ACTIVE");
        let auto = ca.auto_registration_status().map(|s| s.as_str()) == Some("ENABLE");
        (active, auto)
    });
    let device_policy = found(
        client
            .get_policy()
            .policy_name(wanted.device_policy)
            .send()
            .await,
        region,
        "GetPolicy",
    )?
    .is_some();
    let thing_type = found(
        client
            .describe_thing_type()
            .thing_type_name(wanted.thing_type)
            .send()
            .await,
        region,
        "DescribeThingType",
    )?
    .is_some();
    let mut thing_groups = BTreeSet::new();
    for group in wanted.groups {
        let exists = found(
            client
                .describe_thing_group()
                .thing_group_name(group)
                .send()
                .await,
            region,
            "DescribeThingGroup",
        )?
        .is_some();
        if exists {
            thing_groups.insert(group.clone());
        }
    }
    Ok(RegionFacts {
        fleet_ca: ca,
        device_policy,
        thing_type,
        thing_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_entry_wins_over_the_plain_name() {
        let entries = ["geoprov-P".to_owned(), "eu-west-1=stack-eu-P".to_owned()];
        assert_eq!(policy_for(&entries, "eu-west-1"), "stack-eu-P");
        assert_eq!(policy_for(&entries, "us-east-1"), "geoprov-P");
        assert_eq!(policy_for(&[], "us-east-1"), DEVICE_POLICY);
    }
}
