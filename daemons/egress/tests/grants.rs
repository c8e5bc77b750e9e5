//! Grants that end by themselves, through the real binary: a route granted for a while serves
//! until its time or its uses are up, then is refused naming when it ended; a reload that
//! takes it out keeps naming it, and keeps the count.

mod common;

use common::{Rig, routes};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn rfc3339(t: SystemTime) -> String {
    bottle_egress::grants::format_time(t)
}

fn sighup(rig: &Rig) {
    Command::new("kill")
        .args(["-HUP", &rig.egress.id().to_string()])
        .status()
        .unwrap();
}

/// `routes.yaml` with a grant of two uses on repos.test's `/docs/` beside the manifest's
/// `/repos/example/`, and a grant of readonly.test until `until`.
fn granted(until: &str) -> String {
    routes(&format!(
        "- host: repos.test\n  path_allowlist: [/docs/]\n  grant: {{id: r1, uses: 2}}\n\
         - host: readonly.test\n  grant: {{id: r2, until: \"{until}\"}}\n"
    ))
}

#[test]
fn a_grant_serves_until_its_uses_or_time_are_up_then_names_when_it_ended() {
    // Whole seconds: the file's time has no fraction.
    let until = SystemTime::now() + Duration::from_secs(3);
    let until_text = rfc3339(until);
    let rig = Rig::with(&granted(&until_text), &[]);
    let url = |host: &str, path: &str| rig.https(host, path);

    let (code, _) = rig.curl(&[&url("repos.test", "/repos/example/a")]);
    assert_eq!(code, 404, "the manifest's route passes to the origin");
    for _ in 0..2 {
        let (code, body) = rig.curl(&[&url("repos.test", "/docs/a")]);
        assert_eq!(code, 404, "{body}");
    }
    let (code, body) = rig.curl(&[&url("repos.test", "/docs/a")]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("the grant for repos.test/docs/… ended at ")
            && body.contains("its 2 uses were spent")
            && body.contains("request_host_access"),
        "{body}"
    );
    let (code, _) = rig.curl(&[&url("repos.test", "/repos/example/b")]);
    assert_eq!(code, 404, "the manifest's route is not the grant's");
    let (code, body) = rig.curl(&[&url("repos.test", "/other")]);
    assert_eq!(code, 403);
    assert!(body.contains("outside this route's paths"), "{body}");

    let (code, body) = rig.curl(&[&url("readonly.test", "/echo")]);
    assert_eq!(code, 200, "{body}");
    while SystemTime::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = rig.curl(&[&url("readonly.test", "/echo")]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(&format!(
            "the grant for readonly.test ended at {until_text}"
        )),
        "{body}"
    );
    let line = rig.wait_for_log("\"reason\":\"the grant for readonly.test");
    assert!(line.contains("\"decision\":\"block\""), "{line}");

    // The host takes the ended grant out and names it; the spent one stays, and stays spent.
    let reloaded = granted(&until_text).replace(
        &format!("- host: readonly.test\n  grant: {{id: r2, until: \"{until_text}\"}}\n"),
        "",
    ) + &format!("ended:\n  - {{host: readonly.test, ended: \"{until_text}\"}}\n");
    std::fs::write(rig.path("routes.yaml"), &reloaded).unwrap();
    sighup(&rig);
    rig.wait_for_log("\"event\":\"reload\"");
    let (code, body) = rig.curl(&[&url("readonly.test", "/echo")]);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(&format!(
            "the grant for readonly.test ended at {until_text}"
        )),
        "{body}"
    );
    let (code, body) = rig.curl(&[&url("repos.test", "/docs/b")]);
    assert_eq!(code, 403, "the count outlives a reload: {body}");
    assert!(body.contains("uses were spent"), "{body}");
    let (code, body) = rig.curl(&[&url("gitlab.com", "/x")]);
    assert_eq!(code, 403);
    assert!(body.contains("not on this bottle's allowlist"), "{body}");
}

#[test]
fn a_grant_on_a_credential_route_or_with_a_bad_limit_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, field) in [
        (
            "routes:\n- host: a.test\n  auth_scheme: Bearer\n  token_env: EGRESS_TOKEN_0\n  grant: {id: r1, uses: 1}\n",
            "routes[0].grant",
        ),
        (
            "routes:\n- host: a.test\n  grant: {id: r1, until: soon}\n",
            "routes[0].grant.until",
        ),
        (
            "routes:\n- host: a.test\n  grant: {id: r1, uses: 0}\n",
            "routes[0].grant.uses",
        ),
        (
            "routes: []\nended:\n- {host: a.test, ended: never}\n",
            "ended[0].ended",
        ),
    ] {
        let file = dir.path().join("routes.yaml");
        std::fs::write(&file, bad).unwrap();
        let e = bottle_egress::routes::RouteTable::load(&file, &|_| Some("t".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}
