//! cert-issuer: mints JITP device certificates from ACM Private CA.
//!
//! `csr` is the pure CSR policy; `pca` (ACM PCA) and `ledger` (the issuance
//! ledger in DynamoDB) are the adapters behind small traits; `handler` checks
//! every request before anything reaches ACM PCA and issues through the ledger.

pub mod config;
pub mod csr;
pub mod handler;
pub mod ledger;
pub mod pca;
pub mod request;
pub mod response;

/// The `service` dimension of this function's metrics.
pub const SERVICE: &str = "cert-issuer";

/// An ACM PCA client for the CA's region (the CA lives outside the
/// provisioning regions), from the shared SDK configuration.
pub fn pca_client(sdk: &aws_config::SdkConfig, region: &str) -> aws_sdk_acmpca::Client {
    let config = aws_sdk_acmpca::config::Builder::from(sdk)
        .region(aws_config::Region::new(region.to_owned()))
        .build();
    aws_sdk_acmpca::Client::from_conf(config)
}
