//! Ports a test listens on: one nobody holds on loopback, and whether a
//! server a test started listens yet.

use super::netns::Netns;

/// A port nobody listens on right now, on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something listens on TCP `listener` (`ADDRESS:PORT`, as `ss -ltn`
/// prints it) inside `netns`.
pub fn listening_in(netns: &Netns, listener: &str) -> bool {
    let output = netns.command("ss").arg("-ltn").output().expect("failed to run ss");
    super::assert_succeeded("ss -ltn", &output);
    String::from_utf8_lossy(&output.stdout).contains(listener)
}
