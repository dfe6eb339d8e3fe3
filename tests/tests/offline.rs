//! Offline, nothing leaves a hierarchy until the connection tool carries it out: `prepare`
//! writes every unsent period into one bundle, `connect` uploads every bundle in a folder
//! (several hierarchies' at once) and downloads what the intake answers, `import` marks the
//! periods sent. The intake then holds exactly what the online path sends, and a bundle
//! altered on the way is refused with nothing imported.

use hrs_connection::offline::{self, ConnectOptions, OfflineError, Silent};
use hrs_connection::{ConnectionPointConfig, Policy, SqliteOutbox, State, outbound};
use hrs_tests::{Hierarchy, PERIOD, merged_rows, period, rows};
use prost::Message as _;

/// What the online path would send from this connection point now: every stored period
/// as it leaves, encoded.
fn what_online_sends(config: &ConnectionPointConfig) -> Vec<Vec<u8>> {
    SqliteOutbox::open_existing(&config.store)
        .expect("opens")
        .expect("exists")
        .stored_blocking()
        .expect("reads")
        .iter()
        .map(|period| outbound(period, &Policy::of(config)).encode_to_vec())
        .collect()
}

fn options(updates: &std::path::Path, intake: &str) -> ConnectOptions {
    ConnectOptions {
        updates_dest: updates.to_owned(),
        download: "all".into(),
        intake: Some(intake.to_owned()),
        intake_ca: None,
        token: None,
        proxy: None,
        ca: None,
        allow_unsigned: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hierarchies_go_out_through_one_folder_and_the_intake_holds_what_online_sends() {
    let a = Hierarchy::builder()
        .primaries(1)
        .offline(true)
        .start()
        .await;
    let b = Hierarchy::builder()
        .primaries(2)
        .hierarchy_id(
            "00000000-0000-4000-8000-00000000000b"
                .parse()
                .expect("hierarchy id"),
        )
        .offline(true)
        .start()
        .await;
    for h in [&a, &b] {
        h.collect_everywhere().await;
        let state = h.wait_received(PERIOD).await;
        assert_eq!(
            state.state,
            State::Pending,
            "offline, nothing leaves by itself"
        );
    }
    assert!(
        a.intake_blobs().is_empty(),
        "nothing reached the intake yet"
    );

    let media = tempfile::tempdir().expect("media");
    for h in [&a, &b] {
        let prepared = offline::prepare(&h.connection_point, media.path(), &Silent, &h.clock)
            .expect("prepares");
        assert_eq!(prepared.periods, [period()]);
        let bundle = offline::read_bundle_file(&prepared.path.expect("a bundle"))
            .expect("the bundle verifies");
        assert_eq!(
            merged_rows(&bundle.decoded().expect("decodes")[0]),
            h.merged_runs().iter().map(rows).sum::<usize>()
        );
    }
    assert_eq!(offline::find_bundles(media.path()).expect("finds").len(), 2);

    // One connect, from one folder, to one intake, for both hierarchies.
    let downloads = tempfile::tempdir().expect("downloads");
    let intake = a.connection_point.intake.clone().expect("an intake URL");
    let summary = offline::connect(
        media.path(),
        &options(downloads.path(), &intake),
        &Silent,
        &a.clock,
    )
    .await
    .expect("connects");
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.connected.len(), 2);

    for h in [&a, &b] {
        let imported = offline::import(&h.connection_point, downloads.path(), &Silent, &h.clock)
            .expect("imports");
        assert_eq!(imported.outcome.accepted, [period()]);
        let state = h.wait_delivered(PERIOD).await;
        assert!(state.submission_id.is_some());
        // Importing again changes nothing.
        let again = offline::import(&h.connection_point, downloads.path(), &Silent, &h.clock)
            .expect("imports");
        assert!(again.outcome.accepted.is_empty());
        assert_eq!(again.outcome.already, [period()]);
    }

    // The intake holds, byte for byte, what each connection point's online path sends.
    let mut held = a.intake_blobs();
    held.sort();
    let mut expected: Vec<Vec<u8>> = [&a, &b]
        .iter()
        .flat_map(|h| what_online_sends(&h.connection_point))
        .collect();
    expected.sort();
    assert_eq!(held, expected);
    assert!(b.intake_blobs().is_empty(), "b's own intake was not used");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_altered_on_the_way_is_refused_and_nothing_is_imported() {
    let h = Hierarchy::builder()
        .primaries(1)
        .offline(true)
        .start()
        .await;
    h.collect_everywhere().await;
    h.wait_received(PERIOD).await;
    let media = tempfile::tempdir().expect("media");
    let path = offline::prepare(&h.connection_point, media.path(), &Silent, &h.clock)
        .expect("prepares")
        .path
        .expect("a bundle");

    // Change one row's value inside the period's file, as a careless or hostile hand might.
    let mut bytes = std::fs::read(&path).expect("reads");
    let at = bytes
        .windows(7)
        .position(|w| w == b"\"rows\":")
        .expect("rows in the bundle");
    let digit = at
        + bytes[at..]
            .iter()
            .position(u8::is_ascii_digit)
            .expect("a number in the rows");
    bytes[digit] = if bytes[digit] == b'9' {
        b'8'
    } else {
        bytes[digit] + 1
    };
    std::fs::write(&path, &bytes).expect("writes");

    let downloads = tempfile::tempdir().expect("downloads");
    let intake = h.connection_point.intake.clone().expect("an intake URL");
    let summary = offline::connect(
        media.path(),
        &options(downloads.path(), &intake),
        &Silent,
        &h.clock,
    )
    .await
    .expect("connect runs");
    assert!(summary.connected.is_empty());
    let [(refused, error)] = summary.failed.as_slice() else {
        panic!("one refusal expected: {:?}", summary.failed);
    };
    assert_eq!(refused, &path);
    assert!(matches!(error, OfflineError::Tampered { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("altered") && message.contains("prepare a new bundle"),
        "{message}"
    );
    assert!(
        h.intake_blobs().is_empty(),
        "nothing of it reached the intake"
    );

    let err = offline::import(&h.connection_point, downloads.path(), &Silent, &h.clock)
        .expect_err("nothing to import");
    assert!(matches!(err, OfflineError::NoDownloads(_)), "{err}");
    let states = hrs_connection::periods(&h.connection_point).expect("reads");
    assert_eq!(states[0].state, State::Bundled, "still unsent");

    // A token goes only to an https:// intake named on the command line.
    let token = Some(hrs_core::token::Token::generate());
    for (intake, named) in [(None, "--intake"), (Some(intake.clone()), "https://")] {
        let mut with_token = options(downloads.path(), &intake.clone().unwrap_or_default());
        with_token.intake = intake;
        with_token.token = token.clone();
        let err = offline::connect(media.path(), &with_token, &Silent, &h.clock)
            .await
            .expect_err("the token is kept back");
        assert!(matches!(err, OfflineError::TokenRefused(_)), "{err}");
        assert!(err.to_string().contains(named), "{err}");
    }

    // A folder without bundles says so.
    let empty = tempfile::tempdir().expect("empty");
    let err = offline::connect(
        empty.path(),
        &options(downloads.path(), &intake),
        &Silent,
        &h.clock,
    )
    .await
    .expect_err("no bundles");
    assert!(err.to_string().contains("no HRS bundle"), "{err}");
    h.shutdown().await;
}
