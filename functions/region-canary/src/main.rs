//! Lambda entry point: configuration and clients once at cold start, then a
//! probe on every scheduled event (the event's content does not matter).

use geoprov_canary::canary::Canary;
use geoprov_canary::cleanup::SdkThingRemover;
use geoprov_canary::config::CanaryConfig;
use geoprov_canary::material::MaterialCache;
use geoprov_canary::window::{DynamoWindowStore, run_minute};
use geoprov_shared::config::Env;
use geoprov_shared::{aws, clock, telemetry};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init_function_logging();
    let config = CanaryConfig::from_env(&Env::from_process()).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    // Every AWS call is bounded well inside the run's budget.
    let sdk = aws::load_sdk_config_with_timeouts(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(5),
    )
    .await
    .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let material = MaterialCache::new(
        aws_sdk_ssm::Client::new(&sdk),
        config.parameter_path.clone(),
    );
    let table = config.table_name.clone().ok_or_else(|| {
        tracing::error!("invalid configuration: TABLE_NAME is required (the canary keeps its window in the geoprov table)");
        Error::from("TABLE_NAME is required")
    })?;
    let window = DynamoWindowStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let canary = Canary::new(
        config,
        material,
        iot.clone(),
        SdkThingRemover::new(iot),
        window,
    );

    let canary = &canary;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // The minute EventBridge fired for, else the clock's.
        let minute = run_minute(&event.payload, clock::now_epoch_millis());
        // A failed probe is the answer, not a function error: the metric
        // line carries it to the alarm.
        Ok::<_, Error>(serde_json::to_value(canary.run_once(minute).await)?)
    }))
    .await
}
