//! A configuration file with an unknown key or a bad value stops a role before it starts,
//! with a message naming the file and the key, for every role. The examples in
//! `deploy/config` are the starting point.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(role: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/config")
        .join(format!("{role}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `hrs <role> --config <file with text>` and returns its exit code, stderr and file.
fn run(dir: &Path, role: &str, text: &str) -> (Option<i32>, String, PathBuf) {
    let file = dir.join(format!("{role}.toml"));
    std::fs::write(&file, text).expect("writes the config");
    let mut args = vec![role.to_owned()];
    if role == "agent" {
        args.push("--once".into());
    }
    args.extend(["--config".into(), file.display().to_string()]);
    let output = Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(&args)
        .output()
        .expect("hrs runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        file,
    )
}

/// `example` with `line` added: at the top level before the first table, or under
/// `[table]` (after its header when the example has one, else in a new table at the end).
fn with_line(example: &str, table: Option<&str>, line: &str) -> String {
    match table {
        None => match example.find("\n[") {
            Some(at) => format!("{}\n{line}\n{}", &example[..at], &example[at..]),
            None => format!("{example}\n{line}\n"),
        },
        Some(table) => {
            let header = format!("\n[{table}]\n");
            match example.find(&header) {
                Some(at) => {
                    let end = at + header.len();
                    format!("{}{line}\n{}", &example[..end], &example[end..])
                }
                None => format!("{example}\n[{table}]\n{line}\n"),
            }
        }
    }
}

#[test]
fn an_unknown_key_or_a_bad_value_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (role, table, key) in [
        ("agent", None, "max_run_mb"),
        ("aggregator", Some("limits"), "max_connections"),
        ("connection-point", Some("limits"), "max_message_mb"),
        ("intake", Some("limits"), "request_timeout_seconds"),
    ] {
        let example = example(role);
        assert!(
            !example.lines().any(|l| l.starts_with(key)),
            "{role}: the example already sets {key}"
        );
        for (what, extra, table, key) in [
            (
                "an unknown key",
                "no_such_setting = 1".to_owned(),
                None,
                "no_such_setting",
            ),
            (
                "an unknown key in a table",
                "no_such_setting = 1".to_owned(),
                Some("tls"),
                "no_such_setting",
            ),
            ("a value out of range", format!("{key} = 0"), table, key),
            (
                "a value of the wrong type",
                format!("{key} = \"many\""),
                table,
                key,
            ),
        ] {
            let text = with_line(&example, table, &extra);
            let (code, stderr, file) = run(dir.path(), role, &text);
            assert_eq!(code, Some(78), "{role} with {what}: {stderr}");
            assert!(
                stderr.contains(&file.display().to_string()) && stderr.contains(key),
                "{role} with {what}: the error names neither the file nor {key}:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_max_failed_share_that_is_no_share_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for value in ["2", "-0.5", "1.01"] {
        let line = format!("max_failed_share = {value}");
        let (code, stderr, file) = run(
            dir.path(),
            "agent",
            &with_line(&example("agent"), None, &line),
        );
        assert_eq!(code, Some(78), "{line}: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string())
                && stderr.contains("max_failed_share")
                && stderr.contains("between 0 and 1"),
            "{line}: the error names neither the file nor the setting:\n{stderr}"
        );
    }
}

#[test]
fn a_flat_key_of_the_earlier_format_is_refused_naming_its_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (role, line, table) in [
        ("agent", "tls_cert = \"agent.pem\"", "[tls]"),
        ("aggregator", "max_connections = 10", "[limits]"),
        (
            "connection-point",
            "metrics_file = \"cp.prom\"",
            "[metrics]",
        ),
        ("intake", "tls_ca = \"ca.pem\"", "[tls]"),
    ] {
        let (code, stderr, file) = run(dir.path(), role, &with_line(&example(role), None, line));
        assert_eq!(code, Some(78), "{role}: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(table),
            "{role}: the error names neither the file nor {table}:\n{stderr}"
        );
    }
}

#[test]
fn hrs_status_names_each_roles_reason_when_a_file_is_no_roles_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An aggregator's file with a key no role has: every loader refuses it.
    let file = dir.path().join("aggregator.toml");
    let text = with_line(&example("aggregator"), None, "no_such_setting = 1");
    std::fs::write(&file, text).expect("writes the config");
    let output = Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(["status", "--config", &file.display().to_string()])
        .output()
        .expect("hrs runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    for named in [
        file.display().to_string().as_str(),
        "as an agent's",
        "as an aggregator's",
        "as a connection point's",
        "no_such_setting",
    ] {
        assert!(
            stderr.contains(named),
            "the error does not name {named}:\n{stderr}"
        );
    }
}

#[test]
fn an_intake_token_is_written_owner_only_and_only_its_fingerprint_is_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("hierarchy.token");
    let output = Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args([
            "intake",
            "token",
            "--hierarchy",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "--out",
            &out.display().to_string(),
        ])
        .output()
        .expect("hrs runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let token = std::fs::read_to_string(&out).expect("reads the token");
    let token = token.trim();
    assert!(
        !stdout.contains(token),
        "the token itself is printed:\n{stdout}"
    );
    let fingerprint = hrs_core::token::fingerprint(token);
    assert!(
        stdout.contains(&format!("token_sha256 = \"{fingerprint}\"")),
        "{stdout}"
    );
    let hashed = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        .parse::<hrs_core::HierarchyId>()
        .expect("id")
        .hashed();
    assert!(
        stdout.contains(&format!("hierarchy = \"{hashed}\"")),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is owner-only");
    }
    // A second token never replaces the first.
    let again = Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args([
            "intake",
            "token",
            "--hierarchy",
            "x",
            "--out",
            &out.display().to_string(),
        ])
        .output()
        .expect("hrs runs");
    assert!(!again.status.success());
}

/// A role's smallest configuration with every file in `dir`, and `extra` lines after its
/// top-level keys.
fn minimal(role: &str, extra: &str) -> String {
    let hierarchy = "hierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n";
    match role {
        "agent" => format!(
            "site = \"P01\"\n{hierarchy}site_db = \"sqlite:site.sqlite\"\nspool = \"spool.sqlite\"\n\
             upstream = \"http://127.0.0.1:7401\"\n{extra}"
        ),
        "aggregator" => format!(
            "listen = \"127.0.0.1:0\"\n{hierarchy}store = \"merge.sqlite\"\nsites = [\"P01\"]\n{extra}"
        ),
        "connection-point" => format!(
            "listen = \"127.0.0.1:0\"\n{hierarchy}mode = \"offline\"\nstore = \"cp.sqlite\"\n{extra}"
        ),
        "intake" => format!("listen = \"127.0.0.1:0\"\nstore = \"intake.sqlite\"\n{extra}"),
        other => panic!("no role {other}"),
    }
}

/// Later keys of a TOML file may not repeat earlier ones, so a setting is changed by
/// replacing its line.
fn with_setting(text: &str, key: &str, value: &str) -> String {
    let line = format!("{key} = {value}");
    let prefix = format!("{key} = ");
    if text.lines().any(|l| l.starts_with(&prefix)) {
        text.lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    line.as_str()
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    } else {
        format!("{line}\n{text}")
    }
}

#[test]
fn an_address_with_a_port_that_cannot_be_is_refused_with_exit_78_naming_it() {
    for (role, key) in [
        ("agent", "upstream"),
        ("aggregator", "connection_point"),
        ("aggregator", "upstream"),
        ("connection-point", "intake"),
    ] {
        for url in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "ftp://127.0.0.1:7401",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let text = with_setting(&minimal(role, ""), key, &format!("\"{url}\""));
            let (code, stderr, file) = run(dir.path(), role, &text);
            assert_eq!(code, Some(78), "{role} with {key} = {url}: {stderr}");
            assert!(
                stderr.contains(&file.display().to_string())
                    && stderr.contains(&format!("{key}:"))
                    && stderr.contains(url),
                "{role} with {key} = {url}: the error names neither the file nor {key}:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_folder_given_as_a_file_is_refused_with_exit_78_naming_the_setting_and_the_path() {
    for (role, key) in [
        ("agent", "site_db"),
        ("agent", "spool"),
        ("aggregator", "store"),
        ("connection-point", "store"),
        ("intake", "store"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("data");
        std::fs::create_dir(&folder).expect("folder");
        let text = with_setting(&minimal(role, ""), key, "\"data\"");
        let (code, stderr, file) = run(dir.path(), role, &text);
        assert_eq!(code, Some(78), "{role} with {key} a folder: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string())
                && stderr.contains(&format!("{key}:"))
                && stderr.contains(&folder.display().to_string())
                && stderr.contains("is a folder"),
            "{role} with {key} a folder: the error names not the file, {key} and the path:\n{stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&folder).expect("lists").count(),
            0,
            "{role}: nothing was made in the folder"
        );
    }
}

#[test]
fn a_tls_key_that_cannot_be_read_is_refused_with_exit_78_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["p01.pem", "ca.pem", "p01.key"] {
        std::fs::write(dir.path().join(file), "x").expect("writes");
    }
    let key = dir.path().join("p01.key");
    let tls = "[tls]\ncert = \"p01.pem\"\nkey = \"p01.key\"\nca = \"ca.pem\"\n";
    let text = with_setting(
        &minimal("agent", tls),
        "upstream",
        "\"https://127.0.0.1:7401\"",
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    }
    // Root (as in many CI containers) reads a file of mode 000; the key is then taken away
    // instead, which every user is refused.
    if std::fs::File::open(&key).is_ok() {
        std::fs::remove_file(&key).expect("removes");
    }
    let (code, stderr, file) = run(dir.path(), "agent", &text);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string())
            && stderr.contains("tls.key:")
            && stderr.contains(&key.display().to_string()),
        "the error names not the file, tls.key and the path:\n{stderr}"
    );
    assert!(
        !dir.path().join("spool.sqlite").exists(),
        "the agent opened its spool before its files were checked"
    );
}
