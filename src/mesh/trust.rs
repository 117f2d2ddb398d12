//! A mesh's shared trust root and each cluster's intermediate CA, as Istio's "plug-in CA"
//! reads them: istiod signs workload certificates with the intermediate in the Secret
//! [`CACERTS_SECRET`] of its namespace, and every cluster's intermediate is signed by one root,
//! so workloads of all the mesh's clusters trust each other.
//!
//! Pure generation: nothing here reaches a cluster (`cluster::trust` keeps the root and the
//! Secrets). Private keys are held as [`PrivateKeyPem`], whose `Debug` never shows them, and no
//! type here shows one through `Debug` or `Display`. Keys are made only when a reconcile
//! installs or checks istiod (`engine::apply`), never by `--dump-resources` or `smm plan`: a
//! dump has no `cacerts`, and never holds a private key.
//!
//! What istiod requires (`security/pkg/pki/util` and `pilot/pkg/bootstrap/istio_ca.go` of the
//! pinned Istio): the four keys below, the intermediate verifying against `root-cert.pem`
//! through `cert-chain.pem`, its key matching it (PKCS#8, EC or RSA). The extensions follow
//! Istio's own tooling (`tools/certs`): `O=Istio`, critical basic constraints (`CA:true`, the
//! intermediate `pathlen:0`), critical key usage with keyCertSign, the intermediate's SAN
//! `istiod.<namespace>.svc`, 3650 days for both. The keys are ECDSA P-256 rather than the
//! tooling's RSA 4096: istiod accepts both and issues EC workload keys under an EC CA.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use sha2::{Digest, Sha256};

use crate::api::ControlPlaneSpec;

/// The Secret in istiod's namespace that istiod takes its signing CA from.
pub const CACERTS_SECRET: &str = "cacerts";
/// The intermediate CA's certificate (`cacerts` key).
pub const CA_CERT_KEY: &str = "ca-cert.pem";
/// The intermediate CA's private key (`cacerts` key).
pub const CA_KEY_KEY: &str = "ca-key.pem";
/// The mesh's root certificate (`cacerts` key).
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// The intermediate, then the root (`cacerts` key).
pub const CERT_CHAIN_KEY: &str = "cert-chain.pem";

/// How long the root is valid: Istio's tooling's `ROOTCA_DAYS`.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// How long an intermediate is valid, at most until the root expires: Istio's tooling's
/// `INTERMEDIATE_DAYS`. smm does not rotate intermediates; a shorter life would end a mesh's
/// trust on a date nobody chose.
pub const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Certificates start to be valid this long before they are made, for clocks a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot make the {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("the {what} is not a PEM certificate: {reason}")]
    BadCertificate { what: &'static str, reason: String },
    #[error("the {what}'s private key cannot be read: {source}")]
    BadKey {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("the {what}'s private key does not belong to its certificate")]
    KeyMismatch { what: &'static str },
}

/// A private key in PEM (PKCS#8). Shown as `<redacted>`: only [`PrivateKeyPem::expose`] gives
/// the text, for the one place that stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// The key's PEM text, to store in a Secret or a file only readable by its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// The SHA-256 of a certificate's DER: how smm names a root in labels, messages and errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the first certificate in `pem` (the root in a `root-cert.pem`).
    pub fn of_pem(what: &'static str, pem: &str) -> Result<Self, TrustError> {
        Ok(Self::of_der(&first_certificate_der(what, pem)?))
    }

    fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// 64 lowercase hex digits, as `openssl x509 -fingerprint -sha256` shows them without colons.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The trust a ControlPlane's istiod needs from smm: on the primary cluster of a mesh of
/// several clusters (`spec.multiCluster` set, no `primary`), the mesh's shared root and an
/// intermediate for this cluster. A remote cluster runs no istiod; a mesh of one cluster keeps
/// istiod's own self-signed CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacertsRequest<'a> {
    pub mesh_id: &'a str,
    pub cluster_name: &'a str,
}

impl<'a> CacertsRequest<'a> {
    pub fn of(spec: &'a ControlPlaneSpec) -> Option<Self> {
        let multi_cluster = spec.multi_cluster.as_ref()?;
        multi_cluster.primary.is_none().then(|| Self {
            mesh_id: multi_cluster.mesh_id(spec.trust_domain()),
            cluster_name: &multi_cluster.cluster_name,
        })
    }
}

/// A mesh's root CA: its certificate and key, made once and shared by every cluster's
/// intermediate.
#[derive(Clone, Debug)]
pub struct MeshRoot {
    mesh_id: String,
    cert_pem: String,
    key: PrivateKeyPem,
    fingerprint: Fingerprint,
    not_after: SystemTime,
}

impl MeshRoot {
    /// A new root for the mesh `mesh_id`: self-signed, valid for [`ROOT_VALIDITY`].
    pub fn generate(mesh_id: &str) -> Result<Self, TrustError> {
        let what = "mesh root";
        let key = new_key(what)?;
        let now = SystemTime::now();
        let mut params = ca_params(now, now + ROOT_VALIDITY, &format!("Root CA {mesh_id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params
            .self_signed(&key)
            .map_err(|source| TrustError::Generate { what, source })?;
        Self::from_pem(mesh_id, cert.pem(), key.serialize_pem())
    }

    /// A root read back (from the Secret it is kept in): the key must be the certificate's.
    pub fn from_pem(mesh_id: &str, cert_pem: String, key_pem: String) -> Result<Self, TrustError> {
        let what = "mesh root";
        let der = first_certificate_der(what, &cert_pem)?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|source| TrustError::BadKey { what, source })?;
        let not_after = {
            let (_, cert) = parse_der(what, &der)?;
            if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
                return Err(TrustError::KeyMismatch { what });
            }
            to_system_time(cert.validity().not_after.timestamp())
        };
        Ok(Self {
            mesh_id: mesh_id.to_owned(),
            fingerprint: Fingerprint::of_der(&der),
            cert_pem,
            key: PrivateKeyPem(key_pem),
            not_after,
        })
    }

    pub fn mesh_id(&self) -> &str {
        &self.mesh_id
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key(&self) -> &PrivateKeyPem {
        &self.key
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// A new intermediate CA for the cluster `cluster_name`, whose istiod runs in
    /// `istiod_namespace`: `pathlen:0` (it signs workloads only), valid for
    /// [`INTERMEDIATE_VALIDITY`] and never past the root.
    pub fn issue(
        &self,
        cluster_name: &str,
        istiod_namespace: &str,
    ) -> Result<ClusterCa, TrustError> {
        let what = "cluster's intermediate CA";
        let root_key =
            KeyPair::from_pem(self.key.expose()).map_err(|source| TrustError::BadKey {
                what: "mesh root",
                source,
            })?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, root_key).map_err(|source| {
            TrustError::Generate {
                what: "mesh root's issuer",
                source,
            }
        })?;
        let key = new_key(what)?;
        let now = SystemTime::now();
        let not_after = (now + INTERMEDIATE_VALIDITY).min(self.not_after);
        let mut params = ca_params(now, not_after, "Intermediate CA");
        params
            .distinguished_name
            .push(DnType::LocalityName, cluster_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let istiod = format!("istiod.{istiod_namespace}.svc");
        params.subject_alt_names = vec![SanType::DnsName(
            istiod
                .try_into()
                .map_err(|source| TrustError::Generate { what, source })?,
        )];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|source| TrustError::Generate { what, source })?;
        let ca_cert_pem = cert.pem();
        Ok(ClusterCa {
            cert_chain_pem: format!("{ca_cert_pem}{}", self.cert_pem),
            ca_cert_pem,
            ca_key: PrivateKeyPem(key.serialize_pem()),
            root_cert_pem: self.cert_pem.clone(),
            root_fingerprint: self.fingerprint,
        })
    }
}

impl std::fmt::Display for MeshRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "root of mesh {} ({})", self.mesh_id, self.fingerprint)
    }
}

/// One cluster's intermediate CA, as the `cacerts` Secret holds it.
#[derive(Clone, Debug)]
pub struct ClusterCa {
    pub ca_cert_pem: String,
    pub ca_key: PrivateKeyPem,
    pub root_cert_pem: String,
    pub cert_chain_pem: String,
    pub root_fingerprint: Fingerprint,
}

impl ClusterCa {
    /// The `cacerts` Secret's data: key name and text.
    pub fn secret_data(&self) -> [(&'static str, &str); 4] {
        [
            (CA_CERT_KEY, &self.ca_cert_pem),
            (CA_KEY_KEY, self.ca_key.expose()),
            (ROOT_CERT_KEY, &self.root_cert_pem),
            (CERT_CHAIN_KEY, &self.cert_chain_pem),
        ]
    }
}

impl std::fmt::Display for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "intermediate CA under the root {}",
            self.root_fingerprint
        )
    }
}

/// The fields a root and an intermediate share: Istio's subject convention, critical key usage
/// for signing certificates and revocation lists.
fn ca_params(now: SystemTime, not_after: SystemTime, common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = not_after.into();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Istio");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params
}

fn new_key(what: &'static str) -> Result<KeyPair, TrustError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| TrustError::Generate { what, source })
}

fn first_certificate_der(what: &'static str, pem: &str) -> Result<Vec<u8>, TrustError> {
    let bad = |reason: String| TrustError::BadCertificate { what, reason };
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|err| bad(err.to_string()))?;
    if block.label != "CERTIFICATE" {
        return Err(bad(format!("a {} block", block.label)));
    }
    Ok(block.contents)
}

fn parse_der<'a>(
    what: &'static str,
    der: &'a [u8],
) -> Result<(&'a [u8], x509_parser::certificate::X509Certificate<'a>), TrustError> {
    x509_parser::parse_x509_certificate(der).map_err(|err| TrustError::BadCertificate {
        what,
        reason: err.to_string(),
    })
}

fn to_system_time(unix_seconds: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix_seconds.max(0).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::*;

    use super::*;

    fn parsed(pem: &str) -> Vec<u8> {
        first_certificate_der("test", pem).unwrap()
    }

    fn root_and_cluster_a() -> (MeshRoot, ClusterCa) {
        let root = MeshRoot::generate("mesh1").unwrap();
        let ca = root.issue("cluster-a", "istio-system").unwrap();
        (root, ca)
    }

    fn days(seconds: i64) -> i64 {
        seconds / 86_400
    }

    #[test]
    fn the_intermediate_chains_to_the_root_and_signs_only_workloads() {
        let (root, ca) = root_and_cluster_a();
        let (root_der, ca_der) = (parsed(root.cert_pem()), parsed(&ca.ca_cert_pem));
        let (_, root_cert) = parse_x509_certificate(&root_der).unwrap();
        let (_, ca_cert) = parse_x509_certificate(&ca_der).unwrap();

        // The root signed itself and the intermediate; the intermediate did not sign itself.
        root_cert.verify_signature(None).unwrap();
        ca_cert
            .verify_signature(Some(root_cert.public_key()))
            .unwrap();
        assert!(ca_cert.verify_signature(None).is_err());
        assert_eq!(ca_cert.issuer(), root_cert.subject());

        let root_constraints = root_cert.basic_constraints().unwrap().unwrap();
        assert!(root_constraints.critical);
        assert!(root_constraints.value.ca);
        assert_eq!(root_constraints.value.path_len_constraint, None);
        let constraints = ca_cert.basic_constraints().unwrap().unwrap();
        assert!(constraints.critical);
        assert!(constraints.value.ca);
        assert_eq!(constraints.value.path_len_constraint, Some(0));
        for cert in [&root_cert, &ca_cert] {
            let usage = cert.key_usage().unwrap().unwrap();
            assert!(usage.critical);
            assert!(usage.value.key_cert_sign());
            assert!(usage.value.crl_sign());
            assert!(usage.value.digital_signature());
            assert!(cert.extended_key_usage().unwrap().is_none());
            let organization = cert.subject().iter_organization().next().unwrap();
            assert_eq!(organization.as_str().unwrap(), "Istio");
        }
        let san = ca_cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            [GeneralName::DNSName("istiod.istio-system.svc")]
        );
        let locality = ca_cert.subject().iter_locality().next().unwrap();
        assert_eq!(locality.as_str().unwrap(), "cluster-a");
        assert!(
            root_cert.subject().to_string().contains("Root CA mesh1"),
            "{}",
            root_cert.subject()
        );

        // The chain istiod reads: the intermediate, then the root.
        assert_eq!(
            ca.cert_chain_pem,
            format!("{}{}", ca.ca_cert_pem, root.cert_pem())
        );
        assert_eq!(ca.root_cert_pem, root.cert_pem());
        assert_eq!(ca.root_fingerprint, root.fingerprint());
        assert_eq!(
            Fingerprint::of_pem("test", &ca.root_cert_pem).unwrap(),
            root.fingerprint()
        );
        // The key is the intermediate's, in PKCS#8 (which istiod parses).
        let key = KeyPair::from_pem(ca.ca_key.expose()).unwrap();
        assert_eq!(
            ca_cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert!(
            ca.ca_key
                .expose()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }

    #[test]
    fn validity_follows_istios_tooling_and_never_outlives_the_root() {
        let (root, ca) = root_and_cluster_a();
        let (root_der, ca_der) = (parsed(root.cert_pem()), parsed(&ca.ca_cert_pem));
        let (_, root_cert) = parse_x509_certificate(&root_der).unwrap();
        let (_, ca_cert) = parse_x509_certificate(&ca_der).unwrap();
        let now = ASN1Time::now().timestamp();
        for cert in [&root_cert, &ca_cert] {
            let validity = cert.validity();
            assert!(validity.is_valid());
            assert!(validity.not_before.timestamp() <= now);
            assert!(now - validity.not_before.timestamp() <= 2 * 3600);
            assert!(validity.not_after <= root_cert.validity().not_after);
        }
        for cert in [&root_cert, &ca_cert] {
            let left = days(cert.validity().not_after.timestamp() - now);
            assert!((3649..=3650).contains(&left), "{left} days");
        }
    }

    #[test]
    fn each_cluster_gets_its_own_intermediate_under_one_root() {
        let root = MeshRoot::generate("mesh1").unwrap();
        let a = root.issue("cluster-a", "istio-system").unwrap();
        let b = root.issue("cluster-b", "istio-system").unwrap();
        assert_ne!(a.ca_cert_pem, b.ca_cert_pem);
        assert_ne!(a.ca_key, b.ca_key);
        assert_eq!(a.root_cert_pem, b.root_cert_pem);

        // A root read back from its stored PEM is the same root and issues under it.
        let stored = MeshRoot::from_pem(
            "mesh1",
            root.cert_pem().to_owned(),
            root.key().expose().to_owned(),
        )
        .unwrap();
        assert_eq!(stored.fingerprint(), root.fingerprint());
        let c = stored.issue("cluster-c", "istio-system").unwrap();
        let root_der = parsed(root.cert_pem());
        let (_, root_cert) = parse_x509_certificate(&root_der).unwrap();
        let c_der = parsed(&c.ca_cert_pem);
        let (_, c_cert) = parse_x509_certificate(&c_der).unwrap();
        c_cert
            .verify_signature(Some(root_cert.public_key()))
            .unwrap();

        // Another mesh's root is another root.
        let other = MeshRoot::generate("mesh2").unwrap();
        assert_ne!(other.fingerprint(), root.fingerprint());
        // A key that is not the certificate's is refused.
        let mismatched = MeshRoot::from_pem(
            "mesh1",
            root.cert_pem().to_owned(),
            other.key().expose().to_owned(),
        );
        assert!(matches!(mismatched, Err(TrustError::KeyMismatch { .. })));
    }

    #[test]
    fn only_a_primary_of_several_clusters_asks_for_cacerts() {
        let mut spec = ControlPlaneSpec::default();
        assert_eq!(CacertsRequest::of(&spec), None);
        spec.multi_cluster = Some(crate::api::MultiCluster {
            cluster_name: "east".to_owned(),
            ..crate::api::MultiCluster::default()
        });
        // The mesh ID defaults to the trust domain, as istiod's does.
        assert_eq!(
            CacertsRequest::of(&spec),
            Some(CacertsRequest {
                mesh_id: spec.trust_domain(),
                cluster_name: "east"
            })
        );
        let multi_cluster = spec.multi_cluster.as_mut().unwrap();
        multi_cluster.primary = Some(crate::api::PrimaryCluster {
            cluster_name: "west".to_owned(),
            address: "198.51.100.10".to_owned(),
        });
        assert_eq!(CacertsRequest::of(&spec), None);
    }

    #[test]
    fn debug_and_display_never_show_a_private_key() {
        let root = MeshRoot::generate("mesh1").unwrap();
        let ca = root.issue("cluster-a", "istio-system").unwrap();
        // The private scalar of a P-256 key in PKCS#8 follows the first OCTET STRING of 32
        // bytes; the rest of the PEM holds the public key, which the certificate shows too.
        let scalar = |key: &PrivateKeyPem| {
            let der = x509_parser::pem::parse_x509_pem(key.expose().as_bytes())
                .unwrap()
                .1
                .contents;
            let at = der.windows(2).position(|w| w == [0x04, 0x20]).unwrap() + 2;
            der[at..at + 32].to_vec()
        };
        let first_line = |key: &PrivateKeyPem| key.expose().lines().nth(1).unwrap().to_owned();
        let mut leaks = Vec::new();
        for key in [root.key(), &ca.ca_key] {
            let scalar = scalar(key);
            leaks.push(hex::encode(&scalar));
            leaks.push(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &scalar,
            ));
            leaks.push(first_line(key));
        }
        let shown = [
            format!("{root:?}"),
            format!("{root:#?}"),
            format!("{root}"),
            format!("{ca:?}"),
            format!("{ca:#?}"),
            format!("{ca}"),
            format!("{:?}", ca.ca_key),
        ];
        for text in &shown {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
            for leak in &leaks {
                assert!(!text.contains(leak.as_str()), "{text}");
            }
        }
        assert!(format!("{root}").contains(&root.fingerprint().hex()));
    }
}
