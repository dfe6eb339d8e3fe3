//! `hrs pki`: the hierarchy's CA and the certificates of its sites and roles.

use anyhow::Context as _;
use hrs_core::clock::{Clock as _, SystemClock};
use hrs_pki::{Identity, Role};

use crate::cli::PkiCommand;

/// Runs a `hrs pki` subcommand.
pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init { dir, name, days } => {
            let ca = hrs_pki::init(&dir, &name, days, SystemClock.now())
                .with_context(|| format!("cannot create a CA in {}", dir.display()))?;
            println!(
                "CA created: {} (key {}, owner-only), valid until {}",
                ca.cert.display(),
                ca.key.display(),
                ca.not_after.date()
            );
            println!("keep ca.key off the servers; copy ca.pem to every role as the CA it trusts");
        }
        PkiCommand::Issue {
            dir,
            site,
            role,
            region,
            hierarchy,
            hosts,
            days,
        } => {
            let identity = match (site, role, region, hierarchy) {
                (Some(site), _, _, _) => Identity::Site(site),
                (None, _, Some(region), _) => Identity::Region(region),
                (None, Some(Role::ConnectionPoint), None, Some(hierarchy)) => {
                    Identity::ConnectionPoint { hierarchy }
                }
                (None, Some(role), None, Some(_)) => anyhow::bail!(
                    "--hierarchy is for --role connection-point; the {} serves the whole hierarchy",
                    role.as_str()
                ),
                (None, Some(role), None, None) => Identity::Role(role),
                (None, None, None, _) => {
                    anyhow::bail!("give --site CODE, --role ROLE or --region NAME")
                }
            };
            let hosts = if matches!(identity, Identity::Site(_)) {
                Vec::new()
            } else {
                hosts
            };
            let issued = hrs_pki::issue(&dir, &identity, &hosts, days, SystemClock.now())
                .with_context(|| format!("cannot issue a certificate for {identity}"))?;
            println!(
                "issued for {identity}: {} (key {}, owner-only), valid until {}",
                issued.cert.display(),
                issued.key.display(),
                issued.not_after.date()
            );
            // A chain is valid only while its CA is: say so before the certificate fails.
            if let Ok(ca_expires) = hrs_pki::not_after(&dir.join("ca.pem"))
                && ca_expires < issued.not_after
            {
                eprintln!(
                    "warning: the CA expires on {}, before this certificate: peers refuse it \
                     from then on, unless the CA is renewed and the certificate issued again",
                    ca_expires.date()
                );
            }
        }
    }
    Ok(())
}

/// `hrs intake token`: a new token for `hierarchy` (its ID or hashed ID) in `out`.
pub fn intake_token(hierarchy: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let hashed = match hierarchy.parse::<hrs_core::HierarchyId>() {
        Ok(id) => id.hashed(),
        Err(_) => hierarchy.to_owned(),
    };
    anyhow::ensure!(
        !hashed.trim().is_empty(),
        "--hierarchy is empty: give the hierarchy's ID or its hashed ID"
    );
    let token = hrs_core::token::Token::generate();
    hrs_core::files::write_owner_only(out, format!("{}\n", token.expose()).as_bytes())
        .with_context(|| format!("cannot write the token file {}", out.display()))?;
    println!(
        "token written to {} (owner-only): give it to the hierarchy's connection point as intake_token_file",
        out.display()
    );
    println!("add to the intake's configuration (it keeps only the token's SHA-256):\n");
    println!("[[hierarchy_tokens]]");
    println!("hierarchy = {hashed:?}");
    println!("token_sha256 = \"{}\"", token.fingerprint());
    Ok(())
}
