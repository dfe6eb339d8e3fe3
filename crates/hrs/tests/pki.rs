//! `hrs pki`: every certificate names one identity (a connection point's its hierarchy, a
//! region aggregator's its region), and a validity that would write a certificate already
//! expired, or an absurd one, is refused as a bad argument before anything is written.

use std::path::Path;
use std::process::{Command, Output};

fn hrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(args)
        .output()
        .expect("hrs runs")
}

/// The identity the certificate in a PEM file names, as a peer reads it.
fn identity_of(pem_file: &Path) -> hrs_pki::Identity {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let der = CertificateDer::from_pem_file(pem_file).expect("reads the certificate");
    hrs_pki::identity(&der).expect("one identity")
}

#[test]
fn a_validity_of_no_days_or_an_absurd_one_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let pki_arg = pki.display().to_string();
    for days in ["0", "36526", "4294967295"] {
        let output = hrs(&["pki", "init", "--dir", &pki_arg, "--days", days]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "init --days {days}: {output:?}"
        );
        assert!(
            !pki.join("ca.pem").exists(),
            "init --days {days} wrote a CA"
        );
    }
    let output = hrs(&["pki", "init", "--dir", &pki_arg, "--days", "30"]);
    assert!(output.status.success(), "{output:?}");
    for days in ["0", "36526", "4294967295"] {
        let output = hrs(&[
            "pki", "issue", "--dir", &pki_arg, "--site", "P01", "--days", days,
        ]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "issue --days {days}: {output:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--days"), "issue --days {days}: {stderr}");
        assert!(
            !pki.join("site-P01.pem").exists(),
            "--days {days} wrote one"
        );
    }
    // Longer than the CA: issued, with a warning that it stops working with the CA.
    let output = hrs(&[
        "pki", "issue", "--dir", &pki_arg, "--site", "P01", "--days", "90",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the CA expires on"),
        "{output:?}"
    );
}

#[test]
fn a_connection_point_names_its_hierarchy_and_a_region_its_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let pki_arg = pki.display().to_string();
    assert!(hrs(&["pki", "init", "--dir", &pki_arg]).status.success());
    let guid = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
    let hashed = guid.parse::<hrs_core::HierarchyId>().expect("id").hashed();

    // A connection point's certificate without its hierarchy would submit for any.
    let output = hrs(&[
        "pki",
        "issue",
        "--dir",
        &pki_arg,
        "--role",
        "connection-point",
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--hierarchy"));
    let output = hrs(&[
        "pki",
        "issue",
        "--dir",
        &pki_arg,
        "--role",
        "connection-point",
        "--hierarchy",
        "nope",
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(!pki.join("connection-point.pem").exists());
    // By its GUID or its hashed ID: the certificate names the hashed ID either way.
    for hierarchy in [guid, hashed.as_str()] {
        let output = hrs(&[
            "pki",
            "issue",
            "--dir",
            &pki_arg,
            "--role",
            "connection-point",
            "--hierarchy",
            hierarchy,
        ]);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            identity_of(&pki.join("connection-point.pem")),
            hrs_pki::Identity::ConnectionPoint {
                hierarchy: hashed.clone()
            }
        );
    }
    // Another role serves the whole hierarchy: --hierarchy is a mistake there.
    let output = hrs(&[
        "pki",
        "issue",
        "--dir",
        &pki_arg,
        "--role",
        "aggregator",
        "--hierarchy",
        guid,
    ]);
    assert!(!output.status.success(), "{output:?}");
    assert!(!pki.join("aggregator.pem").exists());

    let output = hrs(&[
        "pki",
        "issue",
        "--dir",
        &pki_arg,
        "--region",
        "EU",
        "--host",
        "eu.example.internal",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        identity_of(&pki.join("region-EU.pem")),
        hrs_pki::Identity::Region("EU".parse().expect("region"))
    );
    let output = hrs(&[
        "pki", "issue", "--dir", &pki_arg, "--region", "EU", "--site", "P01",
    ]);
    assert_eq!(output.status.code(), Some(2), "one identity: {output:?}");
}
