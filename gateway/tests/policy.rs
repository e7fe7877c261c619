//! Multi-device policy on one node (no Redis): which older sessions a login replaces.

mod support;

use std::time::Duration;

use ringgate::config::DevicePolicy;
use ringgate::config::{AuthMode, IoDriver};
use ringgate_codec::ReasonCode;
use ringgate_codec::client::Platform;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);

fn gateway(driver: IoDriver, policy: DevicePolicy) -> ringgate::Gateway {
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.device_policy = policy;
    start_with(config, 2)
}

fn login(gw: &ringgate::Gateway, device: &str, platform: Platform) -> TestClient {
    let mut config = ClientConfig::new("", "frank", device);
    config.platform = platform;
    let mut c = TestClient::connect_with(gw.local_addr(), config);
    assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    c
}

fn replaced(c: &mut TestClient) -> bool {
    matches!(c.next_event(T), Some(ClientEvent::Kicked(k)) if k.reason == ReasonCode::REPLACED)
}

fn still_open(c: &mut TestClient) -> bool {
    c.echo(b"alive");
    true
}

fn policies(driver: IoDriver) {
    // Many devices: only a re-login of the same device replaces its old session.
    let gw = gateway(driver, DevicePolicy::Many);
    let mut phone = login(&gw, "phone", Platform::Ios);
    let mut pc = login(&gw, "pc", Platform::Desktop);
    let mut phone_again = login(&gw, "phone", Platform::Ios);
    assert!(replaced(&mut phone));
    assert!(still_open(&mut pc) && still_open(&mut phone_again));

    // One per platform: a second iOS device replaces the first; the desktop stays.
    let gw = gateway(driver, DevicePolicy::OnePerPlatform);
    let mut phone = login(&gw, "phone", Platform::Ios);
    let mut pc = login(&gw, "pc", Platform::Desktop);
    let mut pad = login(&gw, "pad", Platform::Ios);
    assert!(replaced(&mut phone));
    assert!(still_open(&mut pc) && still_open(&mut pad));

    // One per user: any new login replaces everything else.
    let gw = gateway(driver, DevicePolicy::OnePerUser);
    let mut phone = login(&gw, "phone", Platform::Ios);
    let mut pc = login(&gw, "pc", Platform::Desktop);
    assert!(replaced(&mut phone));
    assert!(still_open(&mut pc));
    assert!(eventually(T, || gw.closed_with(ReasonCode::REPLACED) == 1));
}

both_drivers!(policies);
