//! `geoprov dns resolve`: what a resolver in a given location gets for a name
//! from a hosted zone's records as Route 53 holds them, with the health
//! checks an operator names as unhealthy (health is an input: Route 53's
//! health checkers cannot be asked what they would say).

use std::collections::BTreeSet;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_route53::error::DisplayErrorContext;
use clap::Subcommand;
use geoprov_failover::config::CONTINENT_CODES;
use geoprov_failover::route53::{self, Retry, Route53, SdkRoute53};
use geoprov_shared::aws;
use route53_answer::{ClientLocation, Resolution, Zone};

use crate::error::CliError;
use crate::output::print_json;

/// Retries of each ListResourceRecordSets page.
const LIST_RETRY: Retry = Retry {
    attempts: 4,
    base: Duration::from_millis(200),
    cap: Duration::from_secs(5),
};

#[derive(Subcommand)]
pub enum Command {
    /// What a resolver in a location gets for a name from the zone's records
    /// as Route 53 holds them, and the records that led there (JSON). Every
    /// health check passes except those named with --unhealthy.
    Resolve {
        #[arg(long)]
        zone_id: String,
        #[arg(long)]
        name: String,
        /// ISO 3166 country code of the resolver.
        #[arg(long)]
        country: Option<String>,
        /// Subdivision (a US state, for example) of the resolver's country.
        #[arg(long)]
        subdivision: Option<String>,
        /// Continent code (AF, AN, AS, EU, NA, OC, SA); implied by --country.
        #[arg(long)]
        continent: Option<String>,
        /// Health check ids to count as unhealthy.
        #[arg(long, num_args = 1.., value_name = "HEALTH_CHECK_ID")]
        unhealthy: Vec<String>,
    },
}

/// The location is checked before the AWS configuration is loaded.
pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Resolve {
            zone_id,
            name,
            country,
            subdivision,
            continent,
            unhealthy,
        } => {
            let client = client_location(
                continent.as_deref(),
                country.as_deref(),
                subdivision.as_deref(),
            )?;
            let unhealthy: BTreeSet<String> = unhealthy.into_iter().collect();
            let sdk = aws::load_sdk_config().await?;
            let resolution = resolve(&sdk, &zone_id, &name, &client, &unhealthy).await?;
            print_json(&resolution);
            Ok(())
        }
    }
}

/// Where the resolver is, from the command line, upper-cased and checked
/// against the codes Route 53 geolocation uses.
pub fn client_location(
    continent: Option<&str>,
    country: Option<&str>,
    subdivision: Option<&str>,
) -> Result<ClientLocation, CliError> {
    let bad = |option: &'static str, value: &str, expected: String| CliError::Location {
        option,
        value: value.to_owned(),
        expected,
    };
    let upper = |s: &str| s.trim().to_ascii_uppercase();
    let continent = continent.map(upper);
    let country = country.map(upper);
    let subdivision = subdivision.map(upper);
    if let Some(code) = &continent
        && !CONTINENT_CODES.contains(&code.as_str())
    {
        return Err(bad(
            "--continent",
            code,
            format!("one of {}", CONTINENT_CODES.join(", ")),
        ));
    }
    if let Some(code) = &country
        && !(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(bad(
            "--country",
            code,
            "a two-letter ISO 3166 country code".to_owned(),
        ));
    }
    if let (Some(code), None) = (&subdivision, &country) {
        return Err(bad(
            "--subdivision",
            code,
            "usable without --country".to_owned(),
        ));
    }
    if let Some(code) = &subdivision {
        let ok = (1..=3).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !ok {
            return Err(bad(
                "--subdivision",
                code,
                "1 to 3 letters or digits".to_owned(),
            ));
        }
    }
    Ok(ClientLocation {
        continent,
        country,
        subdivision,
    })
}

/// Reads every record of the zone and resolves `name` for `client`, with the
/// health checks in `unhealthy` failing and every other one passing.
pub async fn resolve(
    sdk: &SdkConfig,
    zone_id: &str,
    name: &str,
    client: &ClientLocation,
    unhealthy: &BTreeSet<String>,
) -> Result<Resolution, CliError> {
    let zone_id = zone_id.trim().trim_start_matches("/hostedzone/");
    // GetHostedZone with the SDK's standard retries; the listing below uses
    // the failover's own adapter (and its retries), so the CLI reads the zone
    // exactly as the function does.
    let hosted_zone = aws_sdk_route53::Client::new(sdk)
        .get_hosted_zone()
        .id(zone_id)
        .send()
        .await
        .map_err(|e| CliError::HostedZone {
            zone_id: zone_id.to_owned(),
            message: DisplayErrorContext(e).to_string(),
        })?;
    let zone_name = hosted_zone
        .hosted_zone()
        .map(|z| z.name().to_owned())
        .ok_or_else(|| CliError::HostedZone {
            zone_id: zone_id.to_owned(),
            message: "GetHostedZone returned no hosted zone".to_owned(),
        })?;
    let records = SdkRoute53::new(route53::client(sdk), LIST_RETRY)
        .records(zone_id, &zone_name)
        .await?;
    let zone = Zone::new(records);
    Ok(zone.resolve(name, client, &|id| !unhealthy.contains(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_codes_are_upper_cased() {
        let client = client_location(Some("na"), Some("us"), Some("ca")).unwrap();
        assert_eq!(client.continent.as_deref(), Some("NA"));
        assert_eq!(client.country.as_deref(), Some("US"));
        assert_eq!(client.subdivision.as_deref(), Some("CA"));
        assert_eq!(
            client_location(None, None, None).unwrap(),
            ClientLocation::unknown()
        );
    }

    #[test]
    fn a_location_code_route53_does_not_use_is_refused_with_its_option() {
        for (continent, country, subdivision, option) in [
            (Some("XX"), None, None, "--continent"),
            (None, Some("USA"), None, "--country"),
            (None, Some("U1"), None, "--country"),
            (None, Some("US"), Some("CALI"), "--subdivision"),
            (None, None, Some("CA"), "--subdivision"),
        ] {
            let err = client_location(continent, country, subdivision)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(option), "{err}");
        }
    }
}
