//! Checking one request before ACM PCA: the request itself, the CSR
//! policy, the registry and the device rules.

use geoprov_device_rules::rules::{self, Denial};
use geoprov_shared::device::SerialNumber;
use geoprov_shared::registry::{AuditLog, DeviceRegistry};

use super::{Caller, CertIssuer};
use crate::csr::{self, CheckedCsr};
use crate::ledger::IssuanceLedger;
use crate::pca::CertificateAuthority;
use crate::request::IssueRequest;
use crate::response::{ErrorCode, ItemResponse, error_code};

/// A request that passed every check, ready for ACM PCA.
pub(super) struct Approved {
    pub(super) serial: SerialNumber,
    pub(super) csr: CheckedCsr,
    pub(super) validity_days: u32,
    pub(super) max_certificates: u32,
    pub(super) allowed_regions: Option<Vec<String>>,
}

impl<P, L, R> CertIssuer<P, L, R>
where
    P: CertificateAuthority + Sync,
    L: IssuanceLedger + Sync,
    R: DeviceRegistry + AuditLog + Sync,
{
    /// Every check that comes before ACM PCA.
    pub(super) async fn approve(
        &self,
        request: IssueRequest,
        caller: &Caller,
    ) -> Result<Approved, ItemResponse> {
        let raw_serial = request.serial_number.as_str();
        let refuse = |code, message: String| ItemResponse::refused(Some(raw_serial), code, message);
        let serial = SerialNumber::try_from(raw_serial)
            .map_err(|e| refuse(ErrorCode::InvalidRequest, format!("serialNumber: {e}")))?;
        let validity_days = request
            .validity_days
            .unwrap_or(self.limits.default_validity_days);
        if validity_days == 0 {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "validityDays must be at least 1".into(),
            ));
        }
        if validity_days > self.limits.max_validity_days {
            return Err(refuse(
                ErrorCode::ValidityTooLong,
                format!(
                    "validityDays {validity_days} is over the maximum of {}",
                    self.limits.max_validity_days
                ),
            ));
        }
        let csr = csr::check(serial.as_str(), &request.csr_pem)
            .map_err(|refusal| refuse(refusal.code, refusal.message))?;
        let record = match self.registry.device(&serial).await {
            Ok(record) => record,
            // Fail closed: without the registry nothing is issued.
            Err(e) => {
                return Err(self.failed(raw_serial, "the device registry could not be read", e));
            }
        };
        // The device rules the hook and device activation apply too.
        let refused = |denial: Denial| refuse(error_code(denial.reason), denial.detail);
        let record = rules::standing(&serial, record.as_ref(), caller.connected_in.as_deref())
            .map_err(refused)?;
        rules::factory_key(
            &serial,
            record,
            || Ok(csr.public_key_sha256.clone()),
            caller.require_factory_key,
        )
        .map_err(refused)?;
        let profile = &record.profile;
        Ok(Approved {
            max_certificates: profile
                .max_certificates
                .unwrap_or(self.limits.default_max_certificates),
            allowed_regions: profile
                .allowed_regions
                .as_ref()
                .map(|regions| regions.iter().map(|r| r.as_str().to_owned()).collect()),
            serial,
            csr,
            validity_days,
        })
    }
}
