//! SIGHUP reload: auth keys rotate and limits change without dropping connections; keys
//! that need a restart are reported.

mod support;

use std::process::Command;
use std::time::Duration;

use ringgate::auth::token::{self, Claims};
use ringgate::config::IoDriver;
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);

fn config_text(kid: &str, secret: &str) -> String {
    format!("[listen]\ntcp = \"127.0.0.1:0\"\n[auth]\nmode = \"token\"\n[auth.keys]\n{kid} = \"{secret}\"\n")
}

fn token(kid: &str, secret: &str, user: &str) -> String {
    token::mint(
        kid,
        secret.as_bytes(),
        &Claims { sub: user.into(), dev: "d".into(), plat: String::new(), exp: unix_now() + 600 },
    )
}

#[test]
fn sighup_rotates_auth_keys_without_dropping_connections() {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("gw.toml");
    let (old, new) = (("k1", "first-secret-0123456789"), ("k2", "second-secret-0123456789"));
    std::fs::write(&path, config_text(old.0, old.1)).unwrap();
    let (mut child, addr) = spawn_gateway(&path);
    let addr = addr.parse().unwrap();
    let login = |kid: &str, secret: &str, user: &str| {
        let mut c = TestClient::connect_with(addr, ClientConfig::new(token(kid, secret, user), user, "d"));
        let first = c.next_event(T);
        (c, first)
    };
    let (mut early, first) = login(old.0, old.1, "early");
    assert!(matches!(first, Some(ClientEvent::Authenticated(_))));

    std::fs::write(&path, config_text(new.0, new.1)).unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    assert!(
        eventually(T, || matches!(login(new.0, new.1, "fresh").1, Some(ClientEvent::Authenticated(_)))),
        "the new key is accepted after SIGHUP"
    );
    match login(old.0, old.1, "stale").1 {
        Some(ClientEvent::AuthFailed(f)) => assert_eq!(f.reason, ReasonCode::AUTH_INVALID),
        other => panic!("the removed key still works: {other:?}"),
    }
    early.echo(b"still connected after the reload");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn reload_applies_limits_and_reports_restart_keys() {
    let gw = start(IoDriver::Auto);
    let mut changed = support::config(IoDriver::Auto);
    changed.session.max_in_flight = 1;
    changed.listen_tcp = "127.0.0.1:1".parse().unwrap();
    assert_eq!(gw.reload(changed), ["listen.tcp"]);
    // New connections get the new limit (told in AuthOk).
    assert!(eventually(T, || TestClient::login(gw.local_addr(), "lim", "d").1.max_in_flight == 1));
}

/// The link settings of `[backend]` live in each link task from start-up: a reload that
/// changes them says they need a restart (and keeps the running values, so pings and the
/// links' silence limit agree); the request timeout is applied.
#[test]
fn reload_reports_backend_link_settings() {
    let mut config = support::config(IoDriver::Auto);
    config.backend = Some(support::static_backend("127.0.0.1:9".parse().unwrap()));
    let gw = support::start_with(config.clone(), 1);
    let mut changed = config.clone();
    if let Some(b) = changed.backend.as_mut() {
        b.ping_interval = Duration::from_secs(60);
        b.window = 7;
    }
    let restart = gw.reload(changed);
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert!(restart[0].starts_with("backend (") && restart[0].contains("ping_interval"), "{restart:?}");
    let mut timeout = config.clone();
    if let Some(b) = timeout.backend.as_mut() {
        b.request_timeout = Duration::from_secs(3);
    }
    assert_eq!(gw.reload(timeout), Vec::<&str>::new(), "the request timeout applies without a restart");
}
