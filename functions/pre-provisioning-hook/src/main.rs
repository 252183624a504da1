//! Lambda entry point: configuration and clients once at cold start, then
//! every event to the hook.

use geoprov_shared::config::Env;
use geoprov_shared::registry::DynamoRegistry;
use geoprov_shared::{aws, telemetry};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pre_provisioning_hook::{HookConfig, ProvisioningHook};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init_function_logging();
    let config = HookConfig::from_env(&Env::from_process()).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    // Every DynamoDB attempt is bounded well inside the deadline, so a slow
    // attempt is retried, or given up, before the deadline settles it.
    let attempt = (config.deadline / 3).max(std::time::Duration::from_millis(100));
    let sdk = aws::load_sdk_config_with_timeouts(attempt, config.deadline)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let registry = DynamoRegistry::new(aws::dynamodb_client(&sdk), config.table_name);
    let hook = ProvisioningHook::new(config.policy, registry, config.deadline)
        .with_canary_serial(config.canary_serial);

    let hook = &hook;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(
            hook.handle(event.payload, &event.context.request_id)
                .await
                .response,
        )
    }))
    .await
}
