//! `hrs pki`: the hierarchy's CA and the certificates of its sites and roles.

use anyhow::Context as _;
use hrs_core::clock::{Clock as _, SystemClock};
use hrs_pki::Identity;

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
            hosts,
            days,
        } => {
            let identity = match (site, role) {
                (Some(site), _) => Identity::Site(site),
                (None, Some(role)) => Identity::Role(role),
                (None, None) => anyhow::bail!("give --site CODE or --role ROLE"),
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
