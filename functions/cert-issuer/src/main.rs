//! Lambda entry point: configuration and clients once at cold start, then
//! every event to the issuer.

use cert_issuer::config::IssuerConfig;
use cert_issuer::handler::{CertIssuer, Deadline, Limits};
use cert_issuer::ledger::DynamoLedger;
use cert_issuer::pca::SdkPca;
use cert_issuer::provider::is_provider_event;
use geoprov_shared::config::Env;
use geoprov_shared::registry::DynamoRegistry;
use geoprov_shared::{aws, telemetry};
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init_function_logging();
    let env = Env::from_process();
    let config = IssuerConfig::from_env(&env).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    let sdk = aws::load_sdk_config()
        .await
        .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
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
        let request_id = &event.context.request_id;
        if is_provider_event(&event.payload) {
            // A refusal is a function error: IoT rejects the request, with
            // the refusal's stable type and constant text.
            let answer = issuer.provide(event.payload, request_id).await?;
            return to_json(answer);
        }
        let deadline = Deadline::from_epoch_millis(event.context.deadline);
        let response = issuer
            .handle_until(event.payload, request_id, deadline)
            .await;
        to_json(response)
    }))
    .await
}

/// The answer as JSON; a failure to serialise is an internal error with a
/// stable type, never a Rust type name.
fn to_json(answer: impl serde::Serialize) -> Result<Value, Diagnostic> {
    serde_json::to_value(answer).map_err(|e| {
        tracing::error!(error = %e, "the answer could not be serialised");
        Diagnostic {
            error_type: "InternalError".to_owned(),
            error_message: "the answer could not be serialised".to_owned(),
        }
    })
}
