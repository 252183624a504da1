//! Helpers for the cert-issuer tests: a local root CA made by the real
//! `geoprov pca create-local-ca`, a registry with devices, and the issuer
//! over the real adapters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cert_issuer::handler::{CertIssuer, Limits};
use cert_issuer::ledger::DynamoLedger;
use cert_issuer::pca::{CertificateAuthority, CertificatePem, PcaError, SdkPca};
use geoprov_shared::device::{DeviceProfile, DeviceStatus, SerialNumber};
use geoprov_shared::registry::DynamoRegistry;
use std::time::Duration;

use crate::cli::Geoprov;
use crate::{aws_env, fresh_registry, moto, sdk_config};

/// The claim certificate the issuer's certificate provider trusts in tests.
pub const CLAIM_ID: &str = "5a1c0c7a4b7e9f3f0d51e7f1c3b2a9d8e6f4c2b1a0998877665544332211aabb";

/// The region of the local CA: outside the provisioning regions, as in production.
pub const PCA_REGION: &str = "eu-central-1";

/// A root CA in moto's ACM PCA.
pub struct LocalCa {
    pub arn: String,
    pub certificate_pem: String,
}

pub fn local_ca() -> LocalCa {
    let out = Geoprov::new(aws_env(&moto().endpoint, PCA_REGION)).ok(&["pca", "create-local-ca"]);
    LocalCa {
        arn: out["certificateAuthorityArn"].as_str().unwrap().to_owned(),
        certificate_pem: out["certificatePem"].as_str().unwrap().to_owned(),
    }
}

/// Counts the calls that reach ACM PCA, and the most issuances in flight at
/// once; every call goes on to the real adapter.
#[derive(Clone, Default)]
pub struct PcaCalls {
    pub issued: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

impl PcaCalls {
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

pub struct CountingPca<P> {
    inner: P,
    pub calls: PcaCalls,
}

impl<P: CertificateAuthority + Sync> CertificateAuthority for CountingPca<P> {
    async fn issue(
        &self,
        csr_pem: &str,
        common_name: &str,
        days: u32,
        token: &str,
    ) -> Result<String, PcaError> {
        self.calls.issued.fetch_add(1, Ordering::SeqCst);
        let now = self.calls.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.calls.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Hold the slot a little, as a real ACM PCA call would.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let result = self.inner.issue(csr_pem, common_name, days, token).await;
        self.calls.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn fetch(&self, arn: &str) -> Result<Option<CertificatePem>, PcaError> {
        self.inner.fetch(arn).await
    }
}

pub type MotoIssuer = CertIssuer<CountingPca<SdkPca>, DynamoLedger, DynamoRegistry>;

pub fn limits(concurrency: usize) -> Limits {
    Limits {
        max_validity_days: 365,
        default_validity_days: 90,
        issue_concurrency: concurrency,
        issue_deadline: Duration::from_secs(20),
        default_max_certificates: 5,
        region: "eu-west-1".into(),
        client_id_prefix: "prov-".into(),
        trusted_claim_certificate_ids: [CLAIM_ID.to_owned()].into(),
        require_factory_key: true,
    }
}

/// The issuer over moto: a fresh table holding `devices` (serial, status),
/// the CA's ledger, and a counted ACM PCA adapter.
pub async fn issuer(
    ca: &LocalCa,
    devices: &[(&str, DeviceStatus)],
    concurrency: usize,
) -> (MotoIssuer, DynamoRegistry, PcaCalls) {
    let profiles: Vec<DeviceProfile> = devices
        .iter()
        .map(|(serial, status)| DeviceProfile {
            status: *status,
            ..DeviceProfile::allowed(SerialNumber::try_from(*serial).unwrap())
        })
        .collect();
    issuer_with_profiles(ca, &profiles, concurrency).await
}

/// The issuer over moto, its registry holding `profiles`.
pub async fn issuer_with_profiles(
    ca: &LocalCa,
    profiles: &[DeviceProfile],
    concurrency: usize,
) -> (MotoIssuer, DynamoRegistry, PcaCalls) {
    let registry = fresh_registry("issuer").await;
    registry.put_profiles(profiles).await.unwrap();
    let sdk = sdk_config(&moto().endpoint, "eu-west-1").await;
    let pca = SdkPca::new(cert_issuer::pca_client(&sdk, PCA_REGION), &ca.arn);
    let calls = PcaCalls::default();
    let issuer = CertIssuer::new(
        CountingPca {
            inner: pca,
            calls: calls.clone(),
        },
        DynamoLedger::new(registry.client().clone(), registry.table()),
        registry.clone(),
        limits(concurrency),
    );
    (issuer, registry, calls)
}
