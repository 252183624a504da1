//! The fleet provisioning MQTT API and JITP, as the IoT developer guide's
//! "Device provisioning MQTT API", "Pre-provisioning hooks",
//! "Provisioning templates" and "Just-in-time provisioning" pages describe
//! them:
//! - `$aws/certificates/create/<fmt>` (CreateKeysAndCertificate) and
//!   `$aws/certificates/create-from-csr/<fmt>` (CreateCertificateFromCsr)
//!   make a certificate, PENDING_ACTIVATION, and a
//!   `certificateOwnershipToken` that expires after one hour;
//! - `$aws/provisioning-templates/<name>/provision/<fmt>` (RegisterThing)
//!   calls the template's pre-provisioning hook (at most 5 s; an error, a
//!   timeout or anything but `allowProvisioning: true` is ACCESS_DENIED),
//!   adds its `parameterOverrides`, evaluates the template and applies it;
//! - answers go to `<request topic>/accepted` or `/rejected` with
//!   `{"statusCode","errorCode","errorMessage"}`;
//! - each request spends a unit of its rate quota first (`quotas`): over
//!   the rate it is rejected 429 `ThrottlingException` and nothing is made.
//!
//! Only the JSON format is served; a `cbor` request is rejected.
//! moto's own CreateCertificateFromCsr signs a fresh key rather than the
//! CSR's, so the emulator's device CA signs certificates and registers them
//! in moto without a CA, as PENDING_ACTIVATION.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::certificate_provider::{self, CertificateProviderConfig};
use crate::faults::{Clock, Faults};
use crate::quotas::{Quota, Quotas};
use crate::registry::{CaCertificate, Registry, RegistryError, Thing};
use crate::template::{self, Override, PolicySpec, ProvisioningPlan, ThingSpec};
use crate::tls::LocalCa;

/// How long IoT waits for a pre-provisioning hook.
pub const HOOK_LIMIT: Duration = Duration::from_secs(5);
/// How long a certificate ownership token is good for.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

/// A provisioning template as the regional stack declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateConfig {
    pub template_name: String,
    pub template_type: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
    pub template_body: String,
    #[serde(default)]
    pub pre_provisioning_hook: Option<HookConfig>,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookConfig {
    pub target_arn: String,
    pub payload_version: String,
}

/// The emulator's configuration file: the region's provisioning templates
/// and topic rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmulatorConfig {
    pub templates: Vec<TemplateConfig>,
    #[serde(default)]
    pub rules: Vec<crate::rules::RuleConfig>,
    /// The account's certificate provider, when it has one.
    #[serde(default)]
    pub certificate_provider: Option<CertificateProviderConfig>,
}

/// A rejection: the `/rejected` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Rejection {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Rejection {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    fn access_denied(message: impl Into<String>) -> Self {
        Rejection::new(
            403,
            "AccessDenied",
            format!("ACCESS_DENIED: {}", message.into()),
        )
    }

    pub fn payload(&self) -> Value {
        json!({"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message})
    }
}

impl From<RegistryError> for Rejection {
    fn from(e: RegistryError) -> Self {
        Rejection::new(500, "InternalFailure", e.to_string())
    }
}

impl From<template::TemplateError> for Rejection {
    fn from(e: template::TemplateError) -> Self {
        Rejection::new(400, e.code, e.message)
    }
}

struct Token {
    certificate_id: String,
    certificate_pem: String,
    expires_at: i64,
    /// The certificate of the connection that created it: only that one
    /// may use it (strict; the guide does not say).
    owner: String,
}

/// Ownership tokens held at once; past this, creating a certificate is
/// throttled until tokens expire or are used.
const MAX_TOKENS: usize = 100_000;

/// Who is asking: the connection's client id and certificate.
pub struct Caller<'a> {
    pub client_id: &'a str,
    pub certificate_id: &'a str,
}

/// The provisioning side of one emulated region.
pub struct Provisioning {
    pub region: String,
    pub account_id: String,
    registry: Registry,
    device_ca: LocalCa,
    templates: HashMap<String, TemplateConfig>,
    certificate_provider: Option<CertificateProviderConfig>,
    lambdas: HashMap<String, String>,
    tokens: Mutex<HashMap<String, Token>>,
    clock: Arc<Clock>,
    faults: Arc<Faults>,
    quotas: Arc<Quotas>,
    /// Bounds on requests in flight: certificates being created, and
    /// RegisterThing, each with a queue of its own so that a registration
    /// never waits behind creations.
    creating: tokio::sync::Semaphore,
    registering: tokio::sync::Semaphore,
}

/// What a request topic asks for.
enum Request<'a> {
    CreateKeys,
    CreateFromCsr,
    RegisterThing(&'a str),
}

impl Request<'_> {
    /// The rate it spends (`quotas`).
    fn quota(&self) -> Quota {
        match self {
            Request::CreateKeys | Request::CreateFromCsr => Quota::CreateCertificate,
            Request::RegisterThing(_) => Quota::RegisterThing,
        }
    }
}

fn parse_topic(topic: &str) -> Option<(Request<'_>, &str)> {
    if let Some(format) = topic.strip_prefix("$aws/certificates/create/") {
        return Some((Request::CreateKeys, format));
    }
    if let Some(format) = topic.strip_prefix("$aws/certificates/create-from-csr/") {
        return Some((Request::CreateFromCsr, format));
    }
    let rest = topic.strip_prefix("$aws/provisioning-templates/")?;
    let (name, format) = rest.split_once("/provision/")?;
    Some((Request::RegisterThing(name), format))
}

/// Whether a topic is one of the provisioning API's request topics.
pub fn is_request_topic(topic: &str) -> bool {
    parse_topic(topic).is_some_and(|(_, format)| !format.contains('/'))
}

impl Provisioning {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        region: String,
        account_id: String,
        registry: Registry,
        device_ca: LocalCa,
        config: EmulatorConfig,
        lambdas: HashMap<String, String>,
        clock: Arc<Clock>,
        faults: Arc<Faults>,
        quotas: Arc<Quotas>,
        max_in_flight: usize,
    ) -> Self {
        Provisioning {
            region,
            account_id,
            registry,
            device_ca,
            templates: config
                .templates
                .into_iter()
                .map(|t| (t.template_name.clone(), t))
                .collect(),
            certificate_provider: config.certificate_provider,
            lambdas,
            tokens: Mutex::new(HashMap::new()),
            clock,
            faults,
            quotas,
            creating: tokio::sync::Semaphore::new(max_in_flight.max(1)),
            registering: tokio::sync::Semaphore::new(max_in_flight.max(1)),
        }
    }

    /// Handles a request published to `topic`; returns the response topic
    /// and payload.
    pub async fn handle(
        &self,
        topic: &str,
        payload: &[u8],
        caller: &Caller<'_>,
    ) -> (String, Value) {
        let Some((request, format)) = parse_topic(topic) else {
            let r = Rejection::new(400, "InvalidRequest", "not a provisioning API topic");
            return (format!("{topic}/rejected"), r.payload());
        };
        let outcome = if format != "json" {
            Err(Rejection::new(
                400,
                "InvalidRequest",
                "this emulator serves the json format only",
            ))
        } else if !self.quotas.take(request.quota()) {
            Err(Rejection::new(429, "ThrottlingException", "Rate exceeded"))
        } else {
            match request {
                Request::CreateKeys => {
                    let _permit = self.creating.acquire().await.expect("never closed");
                    self.create_keys(payload, caller).await
                }
                Request::CreateFromCsr => {
                    let _permit = self.creating.acquire().await.expect("never closed");
                    self.create_from_csr(payload, caller).await
                }
                Request::RegisterThing(name) => self.register_thing(name, payload, caller).await,
            }
        };
        match outcome {
            Ok(body) => (format!("{topic}/accepted"), body),
            Err(rejection) => {
                tracing::info!(topic, code = %rejection.code, message = %rejection.message, "rejected");
                (format!("{topic}/rejected"), rejection.payload())
            }
        }
    }

    async fn create_keys(&self, payload: &[u8], caller: &Caller<'_>) -> Result<Value, Rejection> {
        // The guide's request is an empty JSON object.
        if !matches!(
            serde_json::from_slice::<Value>(payload),
            Ok(Value::Object(_))
        ) {
            return Err(Rejection::new(
                400,
                "InvalidPayload",
                "the request is not a JSON object ({})",
            ));
        }
        self.room_for_a_token()?;
        let (certificate_pem, private_key) = self
            .device_ca
            .issue_with_key()
            .map_err(|e| Rejection::new(500, "InternalFailure", e.to_string()))?;
        let (certificate_id, token) = self.register_created(&certificate_pem, caller).await?;
        Ok(json!({
            "certificateId": certificate_id,
            "certificatePem": certificate_pem,
            "privateKey": private_key,
            "certificateOwnershipToken": token,
        }))
    }

    async fn create_from_csr(
        &self,
        payload: &[u8],
        caller: &Caller<'_>,
    ) -> Result<Value, Rejection> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct CsrRequest {
            certificate_signing_request: String,
        }
        let request: CsrRequest = serde_json::from_slice(payload).map_err(|e| {
            Rejection::new(
                400,
                "InvalidPayload",
                format!("the request is not {{\"certificateSigningRequest\"}}: {e}"),
            )
        })?;
        self.room_for_a_token()?;
        let certificate_pem = match &self.certificate_provider {
            Some(provider) => {
                self.provider_certificate(provider, &request.certificate_signing_request, caller)
                    .await?
            }
            None => self
                .device_ca
                .issue_for_csr(&request.certificate_signing_request)
                .map_err(|_| {
                    Rejection::new(
                        400,
                        "InvalidCertificateSigningRequest",
                        "the CSR does not parse or its signature does not hold",
                    )
                })?,
        };
        let (certificate_id, token) = if self.certificate_provider.is_some() {
            self.register_provided(&certificate_pem, caller).await?
        } else {
            self.register_created(&certificate_pem, caller).await?
        };
        Ok(json!({
            "certificateId": certificate_id,
            "certificatePem": certificate_pem,
            "certificateOwnershipToken": token,
        }))
    }

    /// A provider's certificate registered PENDING_ACTIVATION, and its
    /// token. A provider may answer the same request with the same
    /// certificate (geoprov's issuer does: one request, one certificate),
    /// after an earlier answer was lost or its RegisterThing failed: the
    /// guide is silent, and the emulator gives the CSR's key holder a new
    /// token for that certificate while it is still PENDING_ACTIVATION and
    /// on no thing. Any other registered certificate is refused.
    async fn register_provided(
        &self,
        certificate_pem: &str,
        caller: &Caller<'_>,
    ) -> Result<(String, String), Rejection> {
        use sha2::Digest;
        let der = pem::parse(certificate_pem)
            .map_err(|e| Rejection::new(500, "InternalFailure", e.to_string()))?;
        let id = hex::encode(sha2::Sha256::digest(der.contents()));
        match self.registry.certificate(&id).await? {
            None => self.register_created(certificate_pem, caller).await,
            Some(c) if c.status == "PENDING_ACTIVATION" => {
                let things = self.registry.things_of(&c.arn).await?;
                if !things.is_empty() {
                    return Err(Rejection::new(
                        409,
                        "ResourceAlreadyExists",
                        "the provider's certificate is already on a thing",
                    ));
                }
                let token = self.new_token(&id, certificate_pem, caller);
                Ok((id, token))
            }
            Some(_) => Err(Rejection::new(
                409,
                "ResourceAlreadyExists",
                "the provider's certificate is already registered",
            )),
        }
    }

    /// The account's certificate provider's certificate for a CSR
    /// (`certificate_provider`): its function's answer within 5 s, for the
    /// CSR's own key. A function error passes its message to the device, as
    /// IoT passes the provider's rejection; anything else is a failure.
    async fn provider_certificate(
        &self,
        provider: &CertificateProviderConfig,
        csr_pem: &str,
        caller: &Caller<'_>,
    ) -> Result<String, Rejection> {
        let function = provider.function_name.as_str();
        let url = self.lambdas.get(function).cloned().ok_or_else(|| {
            Rejection::new(
                500,
                "InternalFailure",
                format!("no endpoint for function {function}"),
            )
        })?;
        let input = certificate_provider::request(csr_pem, caller.certificate_id, caller.client_id);
        let answer =
            invoke_function(function, url, input)
                .await
                .map_err(|failure| match failure {
                    Failure::Function(message) => Rejection::new(400, "InvalidRequest", message),
                    Failure::Other(message) => Rejection::new(
                        500,
                        "InternalFailure",
                        format!("the certificate provider failed: {message}"),
                    ),
                })?;
        certificate_provider::certificate(&answer, csr_pem)
            .map_err(|e| Rejection::new(500, "InternalFailure", e.to_string()))
    }

    /// A created certificate registered PENDING_ACTIVATION, and its token.
    async fn register_created(
        &self,
        certificate_pem: &str,
        caller: &Caller<'_>,
    ) -> Result<(String, String), Rejection> {
        let certificate_id = self.registry.register_created(certificate_pem).await?;
        let token = self.new_token(&certificate_id, certificate_pem, caller);
        Ok((certificate_id, token))
    }

    /// Expired tokens go; a full store throttles.
    fn room_for_a_token(&self) -> Result<(), Rejection> {
        let now = self.clock.now_secs();
        let mut tokens = self.tokens.lock().expect("token lock");
        tokens.retain(|_, t| t.expires_at > now);
        if tokens.len() >= MAX_TOKENS {
            return Err(Rejection::new(
                429,
                "ThrottlingException",
                "too many certificates await RegisterThing",
            ));
        }
        Ok(())
    }

    fn new_token(
        &self,
        certificate_id: &str,
        certificate_pem: &str,
        caller: &Caller<'_>,
    ) -> String {
        let mut bytes = [0u8; 32];
        // The crypto provider's random source: a token is a bearer secret.
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)
            .expect("the system random source works");
        let token = hex::encode(bytes);
        self.tokens.lock().expect("token lock").insert(
            token.clone(),
            Token {
                certificate_id: certificate_id.to_owned(),
                certificate_pem: certificate_pem.to_owned(),
                expires_at: self.clock.now_secs() + TOKEN_LIFETIME_SECS,
                owner: caller.certificate_id.to_owned(),
            },
        );
        token
    }

    async fn register_thing(
        &self,
        name: &str,
        payload: &[u8],
        caller: &Caller<'_>,
    ) -> Result<Value, Rejection> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct RegisterThing {
            certificate_ownership_token: String,
            #[serde(default)]
            parameters: BTreeMap<String, String>,
        }
        let request: RegisterThing = serde_json::from_slice(payload).map_err(|e| {
            Rejection::new(400, "InvalidPayload", format!("the request is not {{\"certificateOwnershipToken\", \"parameters\"}} with string parameters: {e}"))
        })?;
        for name in request.parameters.keys() {
            if name.starts_with("AWS::") {
                return Err(Rejection::new(
                    400,
                    "InvalidParameters",
                    format!("parameter {name} is IoT's to set"),
                ));
            }
        }
        // The token is taken for the request's time, so that two requests
        // with one token cannot both provision; a rejection puts it back.
        let token = request.certificate_ownership_token.clone();
        let taken = {
            let mut tokens = self.tokens.lock().expect("token lock");
            match tokens.remove(&token) {
                None => {
                    return Err(Rejection::new(
                        400,
                        "InvalidCertificateOwnershipToken",
                        "the certificate ownership token is not valid",
                    ));
                }
                Some(t) if t.expires_at <= self.clock.now_secs() => {
                    return Err(Rejection::new(
                        400,
                        "InvalidCertificateOwnershipToken",
                        "the certificate ownership token has expired",
                    ));
                }
                Some(t) if t.owner != caller.certificate_id => {
                    tokens.insert(token.clone(), t);
                    return Err(Rejection::new(
                        400,
                        "InvalidCertificateOwnershipToken",
                        "the certificate ownership token was issued to another certificate",
                    ));
                }
                Some(t) => t,
            }
        };
        // RegisterThing requests beyond the bound wait here, before any work
        // and before the hook's 5 s start: see `max_in_flight` in main.rs.
        let outcome = {
            let _permit = self.registering.acquire().await.expect("never closed");
            self.register_with(name, &request.parameters, &taken, caller)
                .await
        };
        if outcome.is_err() {
            self.tokens.lock().expect("token lock").insert(token, taken);
        }
        outcome
    }

    async fn register_with(
        &self,
        name: &str,
        device_parameters: &BTreeMap<String, String>,
        token: &Token,
        caller: &Caller<'_>,
    ) -> Result<Value, Rejection> {
        let (certificate_id, certificate_pem) =
            (token.certificate_id.clone(), token.certificate_pem.clone());
        let template = self
            .templates
            .get(name)
            .filter(|t| t.enabled && t.template_type == "FLEET_PROVISIONING")
            .ok_or_else(|| {
                Rejection::new(
                    404,
                    "ResourceNotFound",
                    format!("no enabled fleet provisioning template {name}"),
                )
            })?;
        let mut parameters = device_parameters.clone();
        if let Some(hook) = &template.pre_provisioning_hook {
            let input = json!({
                "claimCertificateId": caller.certificate_id,
                "certificateId": certificate_id,
                "certificatePem": certificate_pem,
                "templateArn": format!("arn:aws:iot:{}:{}:provisioningtemplate/{}", self.region, self.account_id, name),
                "clientId": caller.client_id,
                "parameters": device_parameters,
            });
            let overrides = self.call_hook(hook, input).await?;
            parameters.extend(overrides);
        }
        parameters.insert("AWS::IoT::Certificate::Id".into(), certificate_id.clone());
        let body: Value = serde_json::from_str(&template.template_body).map_err(|e| {
            Rejection::new(
                500,
                "InvalidTemplate",
                format!("template {name} is not JSON: {e}"),
            )
        })?;
        let plan = template::evaluate(&body, &parameters)?;
        let thing_name = self.apply(&plan, &certificate_id).await?;
        Ok(json!({
            "deviceConfiguration": Value::Object(plan.device_configuration.clone()),
            "thingName": thing_name.unwrap_or_default(),
        }))
    }

    /// The hook's answer: its overrides, or ACCESS_DENIED.
    async fn call_hook(
        &self,
        hook: &HookConfig,
        input: Value,
    ) -> Result<BTreeMap<String, String>, Rejection> {
        if hook.payload_version != "2020-04-01" {
            return Err(Rejection::access_denied(format!(
                "payload version {} is not 2020-04-01",
                hook.payload_version
            )));
        }
        if self.faults.hook_timeout() {
            tokio::time::sleep(HOOK_LIMIT).await;
            return Err(Rejection::access_denied(
                "the pre-provisioning hook did not answer within 5 s",
            ));
        }
        let function = hook.target_arn.rsplit(':').next().unwrap_or_default();
        let url = self.lambdas.get(function).cloned().ok_or_else(|| {
            Rejection::access_denied(format!("no endpoint for function {function}"))
        })?;
        let answer = invoke_hook(function, url, input).await?;
        hook_overrides(&answer)
    }

    /// Applies a plan for `certificate_id`: every check first, then the
    /// writes, so a refused plan changes nothing. Returns the thing's name.
    async fn apply(
        &self,
        plan: &ProvisioningPlan,
        certificate_id: &str,
    ) -> Result<Option<String>, Rejection> {
        let certificate = self
            .registry
            .certificate(certificate_id)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    404,
                    "ResourceNotFound",
                    "the certificate is no longer registered",
                )
            })?;
        if let Some(spec) = &plan.certificate
            && spec.certificate_id != certificate_id
        {
            return Err(Rejection::new(
                400,
                "InvalidParameters",
                "the template's certificate is not the one being provisioned",
            ));
        }
        // Checks.
        let existing = match &plan.thing {
            Some(thing) => self.check_thing(thing).await?,
            None => None,
        };
        let policy_names = self.check_policies(&plan.policies).await?;
        // Writes.
        if let Some(thing) = &plan.thing {
            self.write_thing(thing, existing).await?;
            self.registry
                .attach_thing(&thing.name, &certificate.arn)
                .await?;
        }
        self.attach_policies(&policy_names, &certificate.arn)
            .await?;
        if let Some(spec) = &plan.certificate {
            self.registry
                .set_certificate_status(certificate_id, &spec.status)
                .await?;
        }
        Ok(plan.thing.as_ref().map(|t| t.name.clone()))
    }

    /// Checks the thing's type, groups and FAIL settings; returns the existing thing.
    async fn check_thing(&self, thing: &ThingSpec) -> Result<Option<Thing>, Rejection> {
        if let Some(kind) = &thing.thing_type
            && !self.registry.thing_type_exists(kind).await?
        {
            return Err(Rejection::new(
                400,
                "InvalidParameters",
                format!("thing type {kind} does not exist"),
            ));
        }
        for group in &thing.groups {
            if !self.registry.thing_group_exists(group).await? {
                return Err(Rejection::new(
                    400,
                    "InvalidParameters",
                    format!("thing group {group} does not exist"),
                ));
            }
        }
        let existing = self.registry.thing(&thing.name).await?;
        if existing.is_some()
            && [
                thing.overrides.attributes,
                thing.overrides.thing_type,
                thing.overrides.groups,
            ]
            .contains(&Override::Fail)
        {
            return Err(Rejection::new(
                409,
                "ResourceConflictsException",
                format!("thing {} exists and the template says FAIL", thing.name),
            ));
        }
        Ok(existing)
    }

    /// Checks named policies exist; returns each name with an inline document.
    async fn check_policies(
        &self,
        policies: &[PolicySpec],
    ) -> Result<Vec<(String, Option<String>)>, Rejection> {
        let mut policy_names = Vec::new();
        for policy in policies {
            match policy {
                PolicySpec::Named(name) => {
                    if !self.registry.policy_exists(name).await? {
                        return Err(Rejection::new(
                            400,
                            "InvalidParameters",
                            format!("policy {name} does not exist"),
                        ));
                    }
                    policy_names.push((name.clone(), None));
                }
                PolicySpec::Inline(document) => {
                    use sha2::Digest;
                    let digest = hex::encode(sha2::Sha256::digest(document.as_bytes()));
                    policy_names.push((
                        format!("geoprov-emu-inline-{}", &digest[..16]),
                        Some(document.clone()),
                    ));
                }
            }
        }
        Ok(policy_names)
    }

    /// Creates the thing, or updates the `existing` one per OverrideSettings.
    async fn write_thing(
        &self,
        thing: &ThingSpec,
        existing: Option<Thing>,
    ) -> Result<(), Rejection> {
        let attributes: HashMap<String, String> = thing.attributes.clone().into_iter().collect();
        match existing {
            None => {
                self.registry
                    .create_thing(&thing.name, thing.thing_type.as_deref(), &attributes)
                    .await?;
                for group in &thing.groups {
                    self.registry.add_to_group(&thing.name, group).await?;
                }
            }
            Some(current) => {
                let merged = match thing.overrides.attributes {
                    Override::Replace => attributes,
                    Override::Merge => {
                        let mut all = current.attributes.clone();
                        all.extend(attributes);
                        all
                    }
                    Override::DoNothing | Override::Fail => current.attributes.clone(),
                };
                let kind = match thing.overrides.thing_type {
                    Override::Replace | Override::Merge => thing.thing_type.clone(),
                    Override::DoNothing | Override::Fail => current.thing_type.clone(),
                };
                self.registry
                    .update_thing(&thing.name, kind.as_deref(), &merged)
                    .await?;
                self.regroup(thing).await?;
            }
        }
        Ok(())
    }

    /// Regroups an existing thing as its ThingGroups override setting says.
    async fn regroup(&self, thing: &ThingSpec) -> Result<(), Rejection> {
        match thing.overrides.groups {
            Override::Replace => {
                for group in self.registry.groups_of(&thing.name).await? {
                    if !thing.groups.contains(&group) {
                        self.registry.remove_from_group(&thing.name, &group).await?;
                    }
                }
                for group in &thing.groups {
                    self.registry.add_to_group(&thing.name, group).await?;
                }
            }
            Override::Merge => {
                for group in &thing.groups {
                    self.registry.add_to_group(&thing.name, group).await?;
                }
            }
            Override::DoNothing | Override::Fail => {}
        }
        Ok(())
    }

    /// Attaches the policies to the certificate, creating missing inline ones.
    async fn attach_policies(
        &self,
        policy_names: &[(String, Option<String>)],
        certificate_arn: &str,
    ) -> Result<(), Rejection> {
        for (name, inline) in policy_names {
            if let Some(document) = inline
                && !self.registry.policy_exists(name).await?
            {
                self.registry.create_policy(name, document).await?;
            }
            self.registry.attach_policy(name, certificate_arn).await?;
        }
        Ok(())
    }

    /// JITP: the CA's template for a certificate just auto-registered. A CA
    /// that names no template is JITR: the registration event is all IoT
    /// does, and the certificate stays PENDING_ACTIVATION (`Ok(None)`).
    pub async fn provision_just_in_time(
        &self,
        ca: &CaCertificate,
        certificate_id: &str,
        subject: &BTreeMap<String, String>,
    ) -> Result<Option<String>, Rejection> {
        let Some(name) = ca.template_name.as_deref() else {
            return Ok(None);
        };
        let template = self
            .templates
            .get(name)
            .filter(|t| t.enabled && t.template_type == "JITP")
            .ok_or_else(|| {
                Rejection::new(
                    404,
                    "ResourceNotFound",
                    format!("no enabled JITP template {name}"),
                )
            })?;
        let body: Value = serde_json::from_str(&template.template_body).map_err(|e| {
            Rejection::new(
                500,
                "InvalidTemplate",
                format!("template {name} is not JSON: {e}"),
            )
        })?;
        let mut parameters = subject.clone();
        parameters.insert(
            "AWS::IoT::Certificate::Id".into(),
            certificate_id.to_owned(),
        );
        // Parameters IoT has no value for are missing, and a template that
        // declares one without a default fails, as the guide says.
        let plan = template::evaluate(&body, &parameters)?;
        self.apply(&plan, certificate_id).await
    }

    /// The lifecycle event IoT publishes when a certificate is auto-registered.
    pub fn registered_event(&self, ca_id: &str, certificate_id: &str) -> (String, Value) {
        let now = self.clock.now_millis();
        (
            format!("$aws/events/certificates/registered/{ca_id}"),
            json!({
                "certificateId": certificate_id,
                "caCertificateId": ca_id,
                "timestamp": now,
                "certificateStatus": "PENDING_ACTIVATION",
                "awsAccountId": self.account_id,
                "certificateRegistrationTimestamp": now,
            }),
        )
    }
}

/// Calls the hook at `url` within [`HOOK_LIMIT`]; any failure is ACCESS_DENIED.
async fn invoke_hook(function: &str, url: String, input: Value) -> Result<Value, Rejection> {
    invoke_function(function, url, input)
        .await
        .map_err(|failure| match failure {
            Failure::Other(e) if e == TIMED_OUT => {
                Rejection::access_denied("the pre-provisioning hook did not answer within 5 s")
            }
            Failure::Function(_) => {
                Rejection::access_denied("the pre-provisioning hook failed: the function failed")
            }
            Failure::Other(e) => {
                Rejection::access_denied(format!("the pre-provisioning hook failed: {e}"))
            }
        })
}

const TIMED_OUT: &str = "no answer within 5 s";

/// Why a function called synchronously gave no answer.
enum Failure {
    /// The function failed: its error message.
    Function(String),
    /// No answer: a timeout, a transport or a JSON error.
    Other(String),
}

/// Calls the function at `url` (its Invoke API) within [`HOOK_LIMIT`].
async fn invoke_function(function: &str, url: String, input: Value) -> Result<Value, Failure> {
    let call = tokio::task::spawn_blocking(move || post_to_function(&url, &input));
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(HOOK_LIMIT, call).await;
    tracing::info!(
        function,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "function called"
    );
    match answered {
        Err(_) => Err(Failure::Other(TIMED_OUT.into())),
        Ok(Err(join)) => Err(Failure::Other(format!("function call: {join}"))),
        Ok(Ok(result)) => result,
    }
}

/// The blocking HTTP call to a function: its JSON answer, or why not.
fn post_to_function(url: &str, input: &Value) -> Result<Value, Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HOOK_LIMIT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .send_json(input)
        .map_err(|e| Failure::Other(e.to_string()))?;
    let failed = response.headers().contains_key("x-amz-function-error");
    if failed || !response.status().is_success() {
        let status = response.status();
        // Lambda's error payload: {"errorType", "errorMessage"}.
        let message = response
            .body_mut()
            .read_json::<Value>()
            .ok()
            .and_then(|v| v["errorMessage"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("the function failed (HTTP {status})"));
        return Err(Failure::Function(message));
    }
    response
        .body_mut()
        .read_json::<Value>()
        .map_err(|e| Failure::Other(e.to_string()))
}

/// The allowing answer's `parameterOverrides`; anything else is ACCESS_DENIED.
fn hook_overrides(answer: &Value) -> Result<BTreeMap<String, String>, Rejection> {
    if answer.get("allowProvisioning") != Some(&Value::Bool(true)) {
        return Err(Rejection::access_denied(
            "the pre-provisioning hook did not allow provisioning",
        ));
    }
    let mut overrides = BTreeMap::new();
    match answer.get("parameterOverrides") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                if k.starts_with("AWS::") {
                    return Err(Rejection::access_denied(format!(
                        "parameter override {k} is IoT's to set"
                    )));
                }
                let v = v.as_str().ok_or_else(|| {
                    Rejection::access_denied(format!("parameter override {k} is not a string"))
                })?;
                overrides.insert(k.clone(), v.to_owned());
            }
        }
        Some(_) => {
            return Err(Rejection::access_denied(
                "parameterOverrides is not an object",
            ));
        }
    }
    Ok(overrides)
}
