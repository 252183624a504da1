//! IoT's certificate provider API in moto, as `moto_launcher.py` adds it
//! (moto 5.2.5 has none), through aws-sdk-iot: the API reference's
//! CreateCertificateProvider, DescribeCertificateProvider,
//! ListCertificateProviders, UpdateCertificateProvider and
//! DeleteCertificateProvider, and the developer guide's "You can only create
//! one certificate provider per AWS account" ("Self-managed certificate
//! signing using AWS IoT Core certificate provider") in its stricter
//! reading: one in the whole account, whatever the region. One test: the
//! module's moto is one account, whose single provider every step shares.

use aws_sdk_iot::Client as IotClient;
use aws_sdk_iot::error::ProvideErrorMetadata;
use aws_sdk_iot::types::CertificateProviderOperation;
use geoprov_tests::{moto, sdk_config};

const WEST: &str = "eu-west-3";
const NORTH: &str = "eu-north-1";

fn function(region: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:123456789012:function:{name}")
}

fn from_csr() -> Vec<CertificateProviderOperation> {
    vec![CertificateProviderOperation::CreateCertificateFromCsr]
}

/// The error code of a create that must fail.
async fn refused(
    iot: &IotClient,
    name: &str,
    operations: Vec<CertificateProviderOperation>,
) -> String {
    let error = iot
        .create_certificate_provider()
        .certificate_provider_name(name)
        .lambda_function_arn(function(WEST, "CertIssuerFunction"))
        .set_account_default_for_operations(Some(operations))
        .send()
        .await
        .expect_err("the create is refused");
    error.code().unwrap_or_default().to_owned()
}

async fn names(iot: &IotClient) -> Vec<String> {
    iot.list_certificate_providers()
        .send()
        .await
        .unwrap()
        .certificate_providers()
        .iter()
        .map(|p| p.certificate_provider_name().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_provider_per_account_in_any_region_with_the_documented_shapes() {
    let west = IotClient::new(&sdk_config(&moto().endpoint, WEST).await);
    let north = IotClient::new(&sdk_config(&moto().endpoint, NORTH).await);
    let name = format!("geoprov-{WEST}");

    // Validation, before anything exists: the name's pattern [\w=,@-]+ of
    // 1 to 128, and accountDefaultForOperations of exactly one item,
    // CreateCertificateFromCsr.
    for bad in ["has space", "slash/in", &"n".repeat(129)] {
        assert_eq!(
            refused(&west, bad, from_csr()).await,
            "InvalidRequestException",
            "{bad:?}"
        );
    }
    assert_eq!(
        refused(&west, &name, vec![]).await,
        "InvalidRequestException"
    );
    assert_eq!(
        refused(
            &west,
            &name,
            vec![CertificateProviderOperation::from(
                "CreateKeysAndCertificate"
            )]
        )
        .await,
        "InvalidRequestException"
    );
    assert_eq!(
        refused(&west, &name, [from_csr(), from_csr()].concat()).await,
        "InvalidRequestException"
    );
    assert!(names(&west).await.is_empty());

    let created = west
        .create_certificate_provider()
        .certificate_provider_name(&name)
        .lambda_function_arn(function(WEST, "CertIssuerFunction"))
        .set_account_default_for_operations(Some(from_csr()))
        .send()
        .await
        .unwrap();
    let arn = format!("arn:aws:iot:{WEST}:123456789012:certificateprovider/{name}");
    assert_eq!(created.certificate_provider_name(), Some(name.as_str()));
    assert_eq!(created.certificate_provider_arn(), Some(arn.as_str()));

    let described = west
        .describe_certificate_provider()
        .certificate_provider_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(described.certificate_provider_arn(), Some(arn.as_str()));
    assert_eq!(
        described.lambda_function_arn(),
        Some(function(WEST, "CertIssuerFunction").as_str())
    );
    assert_eq!(described.account_default_for_operations(), from_csr());
    assert!(described.creation_date().is_some() && described.last_modified_date().is_some());

    // The API is regional: the provider is listed and described in its
    // region only.
    assert_eq!(names(&west).await, std::slice::from_ref(&name));
    assert!(names(&north).await.is_empty());
    let elsewhere = north
        .describe_certificate_provider()
        .certificate_provider_name(&name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Some("ResourceNotFoundException"));

    // The same name again in its region already exists; any other provider
    // of the account, here or in another region, is over the account's one.
    assert_eq!(
        refused(&west, &name, from_csr()).await,
        "ResourceAlreadyExistsException"
    );
    assert_eq!(
        refused(&west, "another", from_csr()).await,
        "LimitExceededException"
    );
    assert_eq!(
        refused(&north, &format!("geoprov-{NORTH}"), from_csr()).await,
        "LimitExceededException"
    );
    assert_eq!(
        refused(&north, &name, from_csr()).await,
        "LimitExceededException"
    );

    // An update changes the function, keeps the operations (exactly one
    // still), and moves lastModifiedDate.
    let updated = west
        .update_certificate_provider()
        .certificate_provider_name(&name)
        .lambda_function_arn(function(WEST, "OtherIssuer"))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.certificate_provider_arn(), Some(arn.as_str()));
    let after = west
        .describe_certificate_provider()
        .certificate_provider_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.lambda_function_arn(),
        Some(function(WEST, "OtherIssuer").as_str())
    );
    assert_eq!(after.account_default_for_operations(), from_csr());
    assert!(after.last_modified_date() >= described.last_modified_date());
    let bad_update = west
        .update_certificate_provider()
        .certificate_provider_name(&name)
        .set_account_default_for_operations(Some(vec![]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(bad_update.code(), Some("InvalidRequestException"));
    let missing_update = north
        .update_certificate_provider()
        .certificate_provider_name(&name)
        .lambda_function_arn(function(NORTH, "X"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing_update.code(), Some("ResourceNotFoundException"));

    // Deleted, it frees the account's one provider for any region.
    let missing_delete = north
        .delete_certificate_provider()
        .certificate_provider_name(&name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing_delete.code(), Some("ResourceNotFoundException"));
    west.delete_certificate_provider()
        .certificate_provider_name(&name)
        .send()
        .await
        .unwrap();
    assert!(names(&west).await.is_empty());
    let north_name = "acme=signer,eu@north";
    north
        .create_certificate_provider()
        .certificate_provider_name(north_name)
        .lambda_function_arn(function(NORTH, "AcmeSigner"))
        .set_account_default_for_operations(Some(from_csr()))
        .send()
        .await
        .unwrap();
    assert_eq!(names(&north).await, [north_name.to_owned()]);
    assert_eq!(
        refused(&west, &name, from_csr()).await,
        "LimitExceededException"
    );
    north
        .delete_certificate_provider()
        .certificate_provider_name(north_name)
        .send()
        .await
        .unwrap();
}
