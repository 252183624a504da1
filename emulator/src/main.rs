//! geoprov-iot-emu: wiring only. Reads the region's provisioning templates,
//! makes the TLS material, and serves MQTT and the admin API on loopback.
//! Prints one JSON line, `{"mqtt": ADDR, "admin": ADDR}`, once it serves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use geoprov_iot_emu::broker::Broker;
use geoprov_iot_emu::faults::{Clock, Faults, serve_admin};
use geoprov_iot_emu::invoke::AsyncPolicy;
use geoprov_iot_emu::provisioning::{EmulatorConfig, Provisioning};
use geoprov_iot_emu::quotas::Quotas;
use geoprov_iot_emu::registry::Registry;
use geoprov_iot_emu::rules::Rules;
use geoprov_iot_emu::tls::{LocalCa, server_config};

/// One region of AWS IoT Core's data plane for provisioning. The registry is
/// the IoT API at AWS_ENDPOINT_URL (moto).
#[derive(Parser)]
#[command(name = "geoprov-iot-emu", version)]
struct Args {
    /// The region this process emulates.
    #[arg(long, env = "AWS_REGION")]
    region: String,
    /// The account in ARNs (moto's default account).
    #[arg(long, default_value = "123456789012")]
    account_id: String,
    /// A domain name devices may give as SNI (repeat for several): the
    /// domain configuration's name, such as the global name.
    #[arg(long = "domain", required = true)]
    domains: Vec<String>,
    /// The MQTT over TLS listener; loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The admin API's listener; loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// The region's provisioning templates and topic rules (JSON:
    /// {"templates": [...], "rules": [...]}), as scripts/local_iot_stack.py
    /// writes them from template.yaml.
    #[arg(long)]
    config: PathBuf,
    /// Where a pre-provisioning hook's or a rule action's function is
    /// invoked: FUNCTION_NAME=URL of a Lambda Invoke API (repeat for
    /// several). Every rule's functions need one.
    #[arg(long = "lambda")]
    lambdas: Vec<String>,
    /// Certificate creations, and RegisterThing requests, served at once in
    /// this region (each); more wait their turn. IoT serves the API at rates of its own (its quotas); on a
    /// small machine the bound keeps the queue in front of the work, so that
    /// CPU contention is not counted in the hook's 5 s.
    #[arg(long, default_value_t = 8)]
    max_in_flight: usize,
    /// Invocations at once of each function a rule invokes: its
    /// concurrency, the execution environments that serve it. More events
    /// wait in the function's asynchronous queue (`invoke`).
    #[arg(long, default_value_t = 4)]
    async_concurrency: usize,
    /// IoT's published default rate quotas times this (`quotas`): CONNECT,
    /// auto-registration, certificate creation and RegisterThing per
    /// second. 0.01 meets them with a fleet a laptop can drive.
    #[arg(long, default_value_t = 1.0)]
    quota_scale: f64,
    /// No rate quota at all: for measuring the emulator itself.
    #[arg(long, conflicts_with = "quota_scale")]
    no_quotas: bool,
    /// Where to write the server CA certificate devices trust (PEM).
    #[arg(long)]
    server_ca_out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() || !args.admin_listen.ip().is_loopback() {
        return Err("geoprov-iot-emu listens on loopback addresses only".into());
    }
    let config: EmulatorConfig = serde_json::from_slice(&std::fs::read(&args.config)?)
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    let lambdas = lambdas(&args.lambdas, &config)?;

    let sdk = geoprov_shared::aws::loader(geoprov_shared::aws::process_http_client()?)
        .region(aws_config::Region::new(args.region.clone()))
        .load()
        .await;
    let registry = Registry::new(aws_sdk_iot::Client::new(&sdk));
    let faults = Arc::new(Faults::default());
    let clock = Arc::new(Clock::default());
    let quotas = Arc::new(if args.no_quotas {
        Quotas::unlimited()
    } else {
        Quotas::scaled(args.quota_scale)?
    });

    let server_ca = LocalCa::new(&format!("geoprov-iot-emu {} server CA", args.region))?;
    std::fs::write(&args.server_ca_out, server_ca.pem())?;
    let tls = server_config(&server_ca, &args.domains)?;
    let device_ca = LocalCa::new(&format!("geoprov-iot-emu {} device CA", args.region))?;
    let async_policy = AsyncPolicy {
        concurrency: args.async_concurrency,
        ..AsyncPolicy::default()
    };
    let rules = Rules::new(&config.rules, &lambdas, async_policy)?;
    let provisioning = Provisioning::new(
        args.region.clone(),
        args.account_id.clone(),
        registry.clone(),
        device_ca,
        config,
        lambdas,
        clock.clone(),
        faults.clone(),
        quotas.clone(),
        args.max_in_flight,
    );
    let broker = Arc::new(Broker::new(
        registry,
        provisioning,
        rules.clone(),
        faults.clone(),
        quotas.clone(),
        clock.clone(),
        tls,
    ));

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let mqtt = listener.local_addr()?;
    let admin = serve_admin(args.admin_listen, faults, clock, quotas, rules)?;
    println!(
        "{}",
        serde_json::json!({"mqtt": mqtt.to_string(), "admin": admin.to_string()})
    );
    tracing::info!(region = args.region, %mqtt, %admin, "serving");

    tokio::select! {
        _ = broker.serve(listener) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
    }
    Ok(())
}

/// The `--lambda FUNCTION_NAME=URL` entries; the certificate provider's
/// function must be one of them.
fn lambdas(
    entries: &[String],
    config: &EmulatorConfig,
) -> Result<HashMap<String, String>, Box<dyn std::error::Error>> {
    let mut lambdas = HashMap::new();
    for entry in entries {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("--lambda {entry}: expected FUNCTION_NAME=URL"))?;
        lambdas.insert(name.to_owned(), url.to_owned());
    }
    if let Some(provider) = &config.certificate_provider {
        provider.validate()?;
        if !lambdas.contains_key(&provider.function_name) {
            return Err(format!(
                "certificate provider {}: no --lambda for function {}",
                provider.certificate_provider_name, provider.function_name
            )
            .into());
        }
    }

    Ok(lambdas)
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
