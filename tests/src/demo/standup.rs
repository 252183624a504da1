//! Phase 1, stand up: both regions' tables, the hosted zone, the health alarms
//! and the Route 53 health checks on them, the failover's configuration, the
//! local CA and the claim, the functions, the emulators and the canaries;
//! then health proved and the failover's first reconcile.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use aws_sdk_iot::types::ServiceType;
use aws_sdk_route53::types::{
    AlarmIdentifier, CloudWatchRegion, HealthCheckConfig, HealthCheckType,
    InsufficientDataHealthStatus,
};
use serde_json::{Value, json};

use super::dns::Via;
use super::health::Clock;
use super::provisioning::DeviceCli;
use super::{
    ALARM_THRESHOLD, CANARY_WINDOW, Demo, Env, FAILBACK_SECONDS, Function, Pki, RECORD, REGIONS,
    RegionEmulator, TABLE, ZONE, claim_dir, devices_dir, endpoint, target, unix_now, with,
};
use crate::cli::Geoprov;
use crate::emulator::{Emulator, WorkDir, certificate_id, iot_stack, setup_claim};
use crate::issuer::local_ca;
use crate::{aws_env, free_port, sdk_config};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

/// AWS's clients, on moto.
pub struct Aws {
    pub route53: aws_sdk_route53::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: BTreeMap<&'static str, aws_sdk_dynamodb::Client>,
    pub cloudwatch: BTreeMap<&'static str, aws_sdk_cloudwatch::Client>,
    pub iot: BTreeMap<&'static str, aws_sdk_iot::Client>,
}

impl Aws {
    pub async fn new(moto: &str) -> Self {
        let us = sdk_config(moto, US).await;
        let mut aws = Aws {
            route53: aws_sdk_route53::Client::new(&us),
            s3: aws_sdk_s3::Client::new(&us),
            dynamodb: BTreeMap::new(),
            cloudwatch: BTreeMap::new(),
            iot: BTreeMap::new(),
        };
        for region in REGIONS {
            let config = sdk_config(moto, region).await;
            aws.dynamodb
                .insert(region, aws_sdk_dynamodb::Client::new(&config));
            aws.cloudwatch
                .insert(region, aws_sdk_cloudwatch::Client::new(&config));
            aws.iot.insert(region, aws_sdk_iot::Client::new(&config));
        }
        aws
    }
}

/// What the control plane is made of in moto.
pub struct Plane {
    pub zone_id: String,
    /// Each region's Route 53 health check id.
    pub checks: BTreeMap<&'static str, String>,
    /// The failover's configuration, as `geoprov failover` reads it.
    pub config_path: PathBuf,
    pub pki: Pki,
}

/// Every process the demo runs; each stopped when dropped.
pub struct Stack {
    pub canaries: BTreeMap<&'static str, Function>,
    pub emulators: BTreeMap<&'static str, RegionEmulator>,
    pub activations: BTreeMap<&'static str, Function>,
    pub issuer: Function,
    pub hooks: BTreeMap<&'static str, Function>,
    pub failover: Function,
    /// The same function, state and alarms, with Route 53's API unreachable.
    pub failover_without_api: Function,
    /// The issuer as a region's IoT certificate provider, when one is.
    pub provider: Option<(&'static str, Function)>,
}

/// What the game day stands up otherwise than the demo.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// More arguments for every emulator (`--quota-scale 0.5`).
    pub emulator_args: Vec<String>,
    /// The region whose stack makes the issuer IoT's certificate provider
    /// (EnableCertificateProvider=true; IoT allows one in the account).
    pub provider_in: Option<&'static str>,
    /// Execution environments of each hook, device activation and the
    /// provider (Lambda's concurrency; 1 in the demo).
    pub environments: usize,
}

impl Demo {
    /// Everything up, health proved, and the record tree built.
    pub fn stand_up(args: super::Args, moto: &str) -> Demo {
        Self::stand_up_with(args, moto, &Options::default())
    }

    /// [`Demo::stand_up`] with `options`.
    pub fn stand_up_with(args: super::Args, moto: &str, options: &Options) -> Demo {
        println!("\n1. standing up both regions");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let env: BTreeMap<&'static str, Env> = REGIONS
            .into_iter()
            .map(|r| {
                let path = std::env::var("PATH").unwrap_or_default();
                let env = with(&aws_env(moto, r), &[("TABLE_NAME", TABLE), ("PATH", &path)]);
                (r, env)
            })
            .collect();
        for region in REGIONS {
            Geoprov::new(env[region].clone()).ok(&["registry", "create-table"]);
        }
        let aws = rt.block_on(Aws::new(moto));
        let (zone_id, checks) = rt.block_on(zone_and_health_checks(&aws));
        let mut failures = Vec::new();
        let (config_path, source) = rt.block_on(failover_config(
            &aws,
            &env,
            &zone_id,
            &checks,
            &mut failures,
        ));
        let pki = pki();
        let plane = Plane {
            zone_id,
            checks,
            config_path,
            pki,
        };
        let stack = start_stack(&env, &plane, &source, options);
        let devices = DeviceCli::new(&env, &stack.emulators);
        let mut demo = Demo {
            args,
            failures,
            report: super::Report::default(),
            rt,
            aws,
            env,
            plane,
            devices,
            clock: Clock::new(),
            stack,
        };
        demo.prove_health();
        demo.first_reconcile();
        demo
    }

    /// A new window: every minute before the first run counts as failed,
    /// so each region proves N - M + 1 good minutes before it is healthy.
    fn prove_health(&mut self) {
        let minutes = self.canary_until(&[(US, "HEALTHY"), (EU, "HEALTHY")]);
        self.expect(
            minutes.len() == (CANARY_WINDOW - ALARM_THRESHOLD + 1) as usize,
            format!(
                "the regions took {} canary minutes to become healthy",
                minutes.len()
            ),
        );
        self.report.canary.stand_up = minutes;
    }

    /// The failover's first reconcile, once the canaries have shown both
    /// regions healthy: it builds the record tree.
    fn first_reconcile(&mut self) {
        self.dns_step(
            "first reconcile",
            &json!({"action": "reconcile"}),
            Via::ControlPlane,
            (US, EU),
        );
        self.clock.tree_built = true;
        let tree = self
            .rt
            .block_on(
                self.aws
                    .route53
                    .list_resource_record_sets()
                    .hosted_zone_id(&self.plane.zone_id)
                    .send(),
            )
            .expect("list the records");
        let records = tree
            .resource_record_sets()
            .iter()
            .filter(|r| r.name().trim_end_matches('.').ends_with(RECORD))
            .count();
        println!(
            "  hosted zone {ZONE}: {records} records in the tree under {RECORD}, every step a PRIMARY and SECONDARY pair"
        );
    }
}

/// The hosted zone; each region's health alarm as the template makes it (1
/// of 1 on the canary's CanaryFailuresInWindow, which Route 53 can
/// evaluate), and the Route 53 health check on it, which copies its settings.
async fn zone_and_health_checks(aws: &Aws) -> (String, BTreeMap<&'static str, String>) {
    let zone = aws
        .route53
        .create_hosted_zone()
        .name(ZONE)
        .caller_reference(format!("demo-{}", unix_now()))
        .send()
        .await
        .expect("create the hosted zone");
    let zone_id = zone.hosted_zone().expect("the hosted zone").id();
    let zone_id = zone_id.rsplit('/').next().unwrap_or(zone_id).to_owned();
    let mut checks = BTreeMap::new();
    for region in REGIONS {
        aws.cloudwatch[region]
            .put_metric_alarm()
            .alarm_name(format!("geoprov-health-{region}"))
            .namespace("geoprov")
            .metric_name("CanaryFailuresInWindow")
            .dimensions(Dimension::builder().name("Region").value(region).build())
            .statistic(Statistic::Maximum)
            .period(60)
            .evaluation_periods(1)
            .datapoints_to_alarm(1)
            .threshold(f64::from(ALARM_THRESHOLD))
            .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
            .treat_missing_data("breaching")
            .send()
            .await
            .expect("put the health alarm");
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::CloudwatchMetric)
            .insufficient_data_health_status(InsufficientDataHealthStatus::Unhealthy)
            .alarm_identifier(
                AlarmIdentifier::builder()
                    .region(CloudWatchRegion::from(region))
                    .name(format!("geoprov-health-{region}"))
                    .build()
                    .expect("an alarm identifier"),
            )
            .build()
            .expect("a health check configuration");
        let check = aws
            .route53
            .create_health_check()
            .caller_reference(format!("{region}-{}", unix_now()))
            .health_check_config(config)
            .send()
            .await
            .expect("create the health check");
        let id = check.health_check().expect("the health check").id();
        checks.insert(region, id.to_owned());
    }
    (zone_id, checks)
}

/// The failover's configuration, written to target/, checked with
/// `geoprov failover check-health`, and put in S3 by reference as the global
/// stack gives it; returns its path and its S3 source.
async fn failover_config(
    aws: &Aws,
    env: &BTreeMap<&'static str, Env>,
    zone_id: &str,
    checks: &BTreeMap<&'static str, String>,
    failures: &mut Vec<String>,
) -> (PathBuf, String) {
    let regions: serde_json::Map<String, Value> = REGIONS
        .iter()
        .map(|r| {
            let region = json!({"endpoint": endpoint(r), "healthCheckId": checks[r],
                                "alarmName": format!("geoprov-health-{r}")});
            ((*r).to_owned(), region)
        })
        .collect();
    let config = json!({
        "hostedZoneId": zone_id, "recordName": RECORD, "ttl": 60, "regions": regions,
        "locations": [
            {"setIdentifier": "US East IoT Global Endpoint", "geoLocation": {"ContinentCode": "NA"},
             "preference": [US, EU]},
            // Residency: the eu-pinned devices' location is answered with
            // eu-west-1 only, whatever its health.
            {"setIdentifier": super::RESIDENCY_LOCATION, "geoLocation": {"CountryCode": super::RESIDENCY_COUNTRY},
             "preference": [EU]},
            {"setIdentifier": "Default IoT Global Endpoint", "geoLocation": {"CountryCode": "*"},
             "preference": [EU, US]},
        ],
        "failAfter": 1, "recoverAfter": 2, "minChangeIntervalSeconds": FAILBACK_SECONDS,
    });
    aws.s3
        .create_bucket()
        .bucket("geoprov-demo-config")
        .send()
        .await
        .expect("create the configuration bucket");
    let path = target().join("demo-failover-config.json");
    let text = serde_json::to_string_pretty(&config).expect("JSON");
    std::fs::write(&path, text).expect("write the failover's configuration");
    let path_text = path.to_str().expect("a UTF-8 path");
    // What is deployed is what Route 53 can evaluate, and its copies are
    // current: the check an operator runs after every regional deploy.
    let cli = Geoprov::new(env[US].clone());
    let checked = cli.ok(&["failover", "check-health", "--config", path_text]);
    if checked["findings"] != json!([]) {
        failures.push(format!("check-health: {}", checked["findings"]));
    }
    println!("  check-health: {} regions, no finding", checked["regions"]);
    // Each region's domain configuration of the global name, as the
    // regional stack makes it with ServerCertificateArn: put refuses a
    // region without one.
    for region in REGIONS {
        aws.iot[region]
            .create_domain_configuration()
            .domain_configuration_name("geoprov-global")
            .domain_name(RECORD)
            .service_type(ServiceType::Data)
            .server_certificate_arns(format!(
                "arn:aws:acm:{region}:123456789012:certificate/geoprov-global"
            ))
            .send()
            .await
            .expect("create the domain configuration");
    }
    let source = "s3://geoprov-demo-config/failover.json".to_owned();
    cli.ok(&["failover", "config", "put", path_text, "--to", &source]);
    (path, source)
}

/// The local root CA, and the claim: one certificate, registered in both
/// regions (`geoprov setup claim`).
fn pki() -> Pki {
    let ca = local_ca();
    // Its IoT id (the SHA-256 of its DER), as `geoprov setup ca` prints it.
    let ca_id = certificate_id(&ca.certificate_pem);
    let name = ca.arn.rsplit('/').next().unwrap_or(&ca.arn);
    println!("  local root CA in {}: {name}", super::PCA_REGION);
    let _ = std::fs::remove_dir_all(claim_dir());
    let _ = std::fs::remove_dir_all(devices_dir());
    std::fs::create_dir_all(devices_dir()).expect("the devices' directory");
    let claim = setup_claim(&REGIONS, &claim_dir());
    Pki {
        ca,
        ca_id,
        claim_id: claim.certificate_id,
    }
}

/// The functions, the emulators (in front of the hooks and the activation
/// functions), and the canaries (on the emulators).
fn start_stack(
    env: &BTreeMap<&'static str, Env>,
    plane: &Plane,
    source: &str,
    options: &Options,
) -> Stack {
    let failover_env = with(
        &env[US],
        &[
            ("FAILOVER_CONFIG", source),
            ("INSYNC_TIMEOUT_SECONDS", "10"),
            // the stack's account (moto's): the bucket's expected owner
            ("CONFIG_BUCKET_OWNER", "123456789012"),
        ],
    );
    let failover = Function::start("endpoint-failover", &failover_env, "endpoint-failover");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let failover_without_api = Function::start(
        "endpoint-failover",
        &with(&failover_env, &[("AWS_ENDPOINT_URL_ROUTE_53", &closed)]),
        "endpoint-failover-no-route53-api",
    );
    let pki = &plane.pki;
    let hooks = REGIONS
        .into_iter()
        .map(|r| {
            (
                r,
                start_hook(&env[r], r, &pki.claim_id, options.environments),
            )
        })
        .collect();
    let issuer = Function::start(
        "cert-issuer",
        &with(
            &env[EU],
            &[
                ("PCA_ARN", &pki.ca.arn),
                ("PCA_REGION", super::PCA_REGION),
                ("MAX_VALIDITY_DAYS", "365"),
                ("DEFAULT_VALIDITY_DAYS", "365"),
            ],
        ),
        "cert-issuer",
    );
    let activations = REGIONS
        .into_iter()
        .map(|r| {
            (
                r,
                start_activation(&env[r], r, &pki.ca_id, options.environments),
            )
        })
        .collect();
    // The issuer as a region's certificate provider: that region's stack's
    // function, its table, and the claim the region's hook trusts.
    let provider = options.provider_in.map(|region| {
        let env = with(
            &env[region],
            &[
                ("PCA_ARN", &pki.ca.arn),
                ("PCA_REGION", super::PCA_REGION),
                ("MAX_VALIDITY_DAYS", "365"),
                ("DEFAULT_VALIDITY_DAYS", "365"),
                ("TRUSTED_CLAIM_CERTIFICATE_IDS", &pki.claim_id),
                ("PROVISIONING_CLIENT_ID_PREFIX", super::PROVISIONING_PREFIX),
                ("REQUIRE_FACTORY_KEY", "false"),
            ],
        );
        let function = Function::start_environments(
            "cert-issuer",
            &env,
            &format!("cert-provider-{region}"),
            options.environments,
        );
        (region, function)
    });
    let emulators = start_emulators(&hooks, &activations, pki, provider.as_ref(), options);
    let canaries = start_canaries(env, &emulators);
    Stack {
        canaries,
        emulators,
        activations,
        issuer,
        hooks,
        failover,
        failover_without_api,
        provider,
    }
}

/// REQUIRE_FACTORY_KEY false: a key IoT makes cannot be on record; a
/// recorded key is still checked.
fn start_hook(env: &Env, region: &str, claim_id: &str, environments: usize) -> Function {
    let serial = geoprov_canary::provisioning_serial(region);
    let env = with(
        env,
        &[
            ("TRUSTED_CLAIM_CERTIFICATE_IDS", claim_id),
            ("HOOK_DEADLINE_MS", "4000"),
            ("LAMBDA_TIMEOUT_MS", "5000"),
            ("DEFAULT_MAX_PROVISIONS", "3"),
            ("REQUIRE_FACTORY_KEY", "false"),
            ("CANARY_SERIAL", &serial),
        ],
    );
    Function::start_environments(
        "pre-provisioning-hook",
        &env,
        &format!("pre-provisioning-hook-{region}"),
        environments,
    )
}

/// JITR, as the hook: the same device rules and REQUIRE_FACTORY_KEY.
fn start_activation(env: &Env, region: &str, ca_id: &str, environments: usize) -> Function {
    let env = with(
        env,
        &[
            ("DEVICE_POLICY_NAME", "geoprov-DevicePolicy"),
            ("THING_TYPE_NAME", "geoprov-device"),
            ("DEFAULT_THING_GROUP", "geoprov-devices"),
            ("DEFAULT_MAX_PROVISIONS", "3"),
            ("REQUIRE_FACTORY_KEY", "false"),
            ("FLEET_CA_CERTIFICATE_IDS", ca_id),
        ],
    );
    Function::start_environments(
        "device-activation",
        &env,
        &format!("device-activation-{region}"),
        environments,
    )
}

/// Each region's stack IoT resources in moto, and geoprov-iot-emu in front
/// of them, its pre-provisioning hook and its JITR rule's function the
/// region's.
fn start_emulators(
    hooks: &BTreeMap<&'static str, Function>,
    activations: &BTreeMap<&'static str, Function>,
    pki: &Pki,
    provider: Option<&(&'static str, Function)>,
    options: &Options,
) -> BTreeMap<&'static str, RegionEmulator> {
    let mut emulators = BTreeMap::new();
    for region in REGIONS {
        let config = target().join(format!("demo-emulator-{region}.json"));
        let provider_here = provider.filter(|(r, _)| *r == region);
        let made = iot_stack(
            region,
            &[
                ("ClaimCertificateId", &pki.claim_id),
                ("PcaArn", &pki.ca.arn),
                // As the demo's hooks: half the devices take keys IoT makes.
                ("RequireFactoryKey", "false"),
                // The demo's claim devices take certificates IoT signs; the
                // game day runs the issuer as one region's provider.
                (
                    "EnableCertificateProvider",
                    if provider_here.is_some() {
                        "true"
                    } else {
                        "false"
                    },
                ),
            ],
            &config,
        );
        let dir = WorkDir::new("demo-emulator");
        let mut lambdas = vec![
            (super::HOOK_FUNCTION, hooks[region].url()),
            (super::ACTIVATION_FUNCTION, activations[region].url()),
        ];
        if let Some((_, function)) = provider_here {
            lambdas.push((super::ISSUER_FUNCTION, function.url()));
        }
        // Device activation's asynchronous queue is drained by as many
        // invocations at once as it has execution environments.
        let concurrency = options.environments.max(1).to_string();
        let mut args = vec!["--async-concurrency", concurrency.as_str()];
        args.extend(options.emulator_args.iter().map(String::as_str));
        let emulator = Emulator::start_with_args(region, &config, &lambdas, dir.path(), &args);
        let ca_file = target().join(format!("demo-server-ca-{region}.pem"));
        std::fs::write(&ca_file, &emulator.server_ca_pem).expect("write the server CA");
        println!(
            "  {region}: geoprov-iot-emu on {} (SNI {RECORD}); stack IoT resources {made}",
            emulator.mqtt
        );
        let log = target().join(format!("demo-emulator-{region}.log"));
        emulators.insert(
            region,
            RegionEmulator {
                emulator,
                ca_file,
                log,
                _dir: dir,
            },
        );
    }
    emulators
}

/// `geoprov setup canary` in each region (its emulator's server CA as the
/// CA devices ship, the claim for the provisioning probe), and the real
/// region-canary binary per region.
fn start_canaries(
    env: &BTreeMap<&'static str, Env>,
    emulators: &BTreeMap<&'static str, RegionEmulator>,
) -> BTreeMap<&'static str, Function> {
    let claim_dir = claim_dir();
    let claim_dir = claim_dir.to_str().expect("a UTF-8 path");
    let mut canaries = BTreeMap::new();
    for region in REGIONS {
        let emulator = &emulators[region];
        let ca_file = emulator.ca_file.to_str().expect("a UTF-8 path");
        Geoprov::new(env[region].clone()).ok(&[
            "setup",
            "canary",
            "--regions",
            region,
            "--server-ca-file",
            ca_file,
            "--claim-dir",
            claim_dir,
        ]);
        let mqtt = emulator.emulator.mqtt.to_string();
        let serial = geoprov_canary::provisioning_serial(region);
        let window = CANARY_WINDOW.to_string();
        let canary_env = with(
            &env[region],
            &[
                ("CANARY_SERVER_NAME", RECORD),
                ("CANARY_ENDPOINT", &mqtt),
                ("CANARY_BUDGET_MS", "5000"),
                ("CANARY_PROVISIONING", "true"),
                ("CANARY_TEMPLATE_NAME", "geoprov-fleet"),
                ("CANARY_SERIAL", &serial),
                ("PROVISIONING_CLIENT_ID_PREFIX", super::PROVISIONING_PREFIX),
                ("CANARY_WINDOW", &window),
            ],
        );
        let function = Function::start(
            "region-canary",
            &canary_env,
            &format!("region-canary-{region}"),
        );
        canaries.insert(region, function);
    }
    canaries
}
