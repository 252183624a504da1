//! Lambda entry point: configuration and clients once at cold start, then
//! every event to the issuer.

use cert_issuer::config::IssuerConfig;
use cert_issuer::handler::{CertIssuer, Deadline, Limits};
use cert_issuer::ledger::DynamoLedger;
use cert_issuer::pca::SdkPca;
use geoprov_shared::config::Env;
use geoprov_shared::registry::DynamoRegistry;
use geoprov_shared::{aws, telemetry};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_function_logging();
    let env = Env::from_process();
    let config = IssuerConfig::from_env(&env).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    let sdk = aws::load_sdk_config().await;
    let region = env.required("AWS_REGION")?.to_owned();
    let dynamodb = cert_issuer::dynamodb_client(&sdk);
    let pca = SdkPca::new(
        cert_issuer::pca_client(&sdk, config.pca_region.as_str()),
        &config.pca_arn,
    );
    let issuer = CertIssuer::new(
        pca,
        DynamoLedger::new(dynamodb.clone(), &config.table_name),
        DynamoRegistry::new(dynamodb, &config.table_name),
        Limits::from_config(&config, &region),
    );

    let issuer = &issuer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = Deadline::from_epoch_millis(event.context.deadline);
        Ok::<_, Error>(
            issuer
                .handle_until(event.payload, &event.context.request_id, deadline)
                .await,
        )
    }))
    .await
}
