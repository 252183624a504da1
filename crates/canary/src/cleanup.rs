//! Deleting what the provisioning probe made in IoT: the thing named by the
//! canary serial (never a name from an answer) and every certificate
//! attached to it, those of earlier runs included.

use std::time::Duration;

use aws_sdk_iot::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_iot::types::CertificateStatus;

pub use crate::probe::CLEANUP_LIMIT;
use crate::probe::ThingRemover;

/// The pause before trying again a delete that found an attachment still
/// there: IoT detaches asynchronously.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// IoT through the SDK.
pub struct SdkThingRemover {
    iot: aws_sdk_iot::Client,
}

impl SdkThingRemover {
    pub fn new(iot: aws_sdk_iot::Client) -> Self {
        SdkThingRemover { iot }
    }
}

fn error<E, R>(operation: &str, e: aws_sdk_iot::error::SdkError<E, R>) -> String
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    format!("IoT {operation}: {}", DisplayErrorContext(e))
}

fn code_of<E: ProvideErrorMetadata, R>(e: &aws_sdk_iot::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// The certificate id of a certificate principal's ARN.
fn certificate_id(principal: &str) -> Option<&str> {
    principal
        .split_once(":cert/")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

impl SdkThingRemover {
    async fn principals(&self, thing: &str) -> Result<Option<Vec<String>>, String> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let page = match self
                .iot
                .list_thing_principals()
                .thing_name(thing)
                .set_next_token(token)
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if code_of(&e) == Some("ResourceNotFoundException") => return Ok(None),
                Err(e) => return Err(error("ListThingPrincipals", e)),
            };
            found.extend(page.principals().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(Some(found));
            }
        }
    }

    /// Sets the certificate INACTIVE first, while the thing still names it,
    /// so that an interrupted cleanup never leaves an active certificate
    /// nothing points to; then detaches its policies. (Without forceDelete:
    /// the policies are detached one by one.)
    async fn retire_certificate(&self, arn: &str, id: &str) -> Result<bool, String> {
        match self
            .iot
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Inactive)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => return Ok(false),
            Err(e) => return Err(error("UpdateCertificate", e)),
        }
        let mut token = None;
        let mut policies = Vec::new();
        loop {
            let page = self
                .iot
                .list_attached_policies()
                .target(arn)
                .set_marker(token)
                .send()
                .await
                .map_err(|e| error("ListAttachedPolicies", e))?;
            policies.extend(
                page.policies()
                    .iter()
                    .filter_map(|p| p.policy_name().map(str::to_owned)),
            );
            token = page.next_marker().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for policy in &policies {
            self.iot
                .detach_policy()
                .policy_name(policy)
                .target(arn)
                .send()
                .await
                .map_err(|e| error("DetachPolicy", e))?;
        }
        Ok(true)
    }

    async fn delete_certificate(&self, id: &str) -> Result<(), String> {
        loop {
            match self
                .iot
                .delete_certificate()
                .certificate_id(id)
                .send()
                .await
            {
                Ok(_) => {
                    tracing::info!(certificate_id = id, "canary probe certificate deleted");
                    return Ok(());
                }
                Err(e) if code_of(&e) == Some("ResourceNotFoundException") => return Ok(()),
                // Still attached: the detach has not propagated yet.
                Err(e) if code_of(&e) == Some("DeleteConflictException") => {
                    tokio::time::sleep(RETRY_PAUSE).await
                }
                Err(e) => return Err(error("DeleteCertificate", e)),
            }
        }
    }
}

impl ThingRemover for SdkThingRemover {
    async fn remove(&self, thing: &str) -> Result<u32, String> {
        let Some(principals) = self.principals(thing).await? else {
            return Ok(0);
        };
        tracing::info!(thing, principals = ?principals, "canary probe thing's principals");
        let mut deleted = 0;
        for principal in &principals {
            let id = certificate_id(principal);
            let exists = match id {
                Some(id) => self.retire_certificate(principal, id).await?,
                None => false,
            };
            self.iot
                .detach_thing_principal()
                .thing_name(thing)
                .principal(principal)
                .send()
                .await
                .map_err(|e| error("DetachThingPrincipal", e))?;
            if let (Some(id), true) = (id, exists) {
                self.delete_certificate(id).await?;
                deleted += 1;
            }
        }
        loop {
            match self.iot.delete_thing().thing_name(thing).send().await {
                Ok(_) => return Ok(deleted),
                Err(e) if code_of(&e) == Some("ResourceNotFoundException") => return Ok(deleted),
                // Still attached: the detach has not propagated yet.
                Err(e)
                    if code_of(&e) == Some("InvalidRequestException")
                        && e.as_service_error()
                            .and_then(|s| s.message())
                            .is_some_and(|m| m.contains("attached")) =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await
                }
                Err(e) => return Err(error("DeleteThing", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificate_principals_name_a_certificate() {
        assert_eq!(
            certificate_id("arn:aws:iot:eu-west-1:123456789012:cert/abc"),
            Some("abc")
        );
        assert_eq!(
            certificate_id("arn:aws:iot:eu-west-1:123456789012:cert/"),
            None
        );
        assert_eq!(
            certificate_id("arn:aws:cognito-identity:eu-west-1:1:identitypool/x"),
            None
        );
    }
}
