//! The generated squid configuration (egress-proxy.conf) made runnable by
//! a test: its pid file, logs and core dumps under a directory of the
//! test's own, and Debian's `proxy` user (NixOS' is `squid`). Every other
//! line, every ACL among them, stays as generated.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// `dir`, made and writable by squid's user (the tests run as root).
pub fn make_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
}

/// `line` of the generated configuration with this machine's paths and
/// user, or `None` when the line needs no change.
pub fn with_test_paths(line: &str, dir: &Path) -> Option<String> {
    Some(match line.split_whitespace().next() {
        Some("pid_filename") => format!("pid_filename {}/squid.pid", dir.display()),
        Some("cache_effective_user") => "cache_effective_user proxy".into(),
        Some("cache_log") => format!("cache_log {}/cache.log", dir.display()),
        Some("access_log") => format!("access_log stdio:{}/access.log", dir.display()),
        Some("coredump_dir") => format!("coredump_dir {}", dir.display()),
        _ => return None,
    })
}

/// `squid -k parse -f conf` through `squid` (`squid`, or the same run in a
/// network namespace): the configuration parses, or the test fails with
/// squid's complaint.
#[track_caller]
pub fn assert_parses(mut squid: Command, conf: &Path) {
    let output = squid.args(["-k", "parse", "-f"]).arg(conf).output().unwrap();
    super::assert_succeeded(&format!("squid -k parse -f {}", conf.display()), &output);
}

/// Debian's certificate generator (package squid-openssl).
pub const CERTGEN: &str = "/usr/lib/squid/security_file_certgen";

/// `openssl ARGS` in `dir`, failing the test with its output.
#[track_caller]
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    super::assert_succeeded(&format!("openssl {}", args.join(" ")), &output);
}

/// A test CA (`test-ca.pem`, `test-ca.key` in `dir`: the stand-in for the
/// public CAs of the hosts on a test's "internet") and its server
/// certificate for `names` (`api.pem`, `api.key`).
pub fn test_ca_and_server_certificate(dir: &Path, ca_subject: &str, names: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "test-ca.key",
            "-out",
            "test-ca.pem",
            "-days",
            "2",
            "-subj",
            ca_subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    let subject = format!("/CN={}", names[0]);
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "api.key", "-out", "api.csr", "-subj", &subject,
        ],
    );
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    fs::write(
        dir.join("api.ext"),
        format!("subjectAltName={}\nextendedKeyUsage=serverAuth\n", san.join(",")),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "api.csr",
            "-CA",
            "test-ca.pem",
            "-CAkey",
            "test-ca.key",
            "-CAcreateserial",
            "-out",
            "api.pem",
            "-days",
            "2",
            "-extfile",
            "api.ext",
        ],
    );
}

/// The appliance CA as modules/egress.nix makes it at first boot (the same
/// `openssl req`): the certificate at `cert`, the key at `key`.
pub fn appliance_ca(cert: &Path, key: &Path) {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    openssl(
        Path::new("/"),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=agent-appliance egress CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// The appliance CA's key readable by squid's group (Debian's `proxy`)
/// only, as the proxy that runs reads it.
pub fn key_for_squid(key: &Path) {
    let chgrp = Command::new("chgrp").arg("proxy").arg(key).output().unwrap();
    super::assert_succeeded("chgrp proxy (the appliance CA's key)", &chgrp);
    fs::set_permissions(key, fs::Permissions::from_mode(0o440)).unwrap();
}

/// squid's certificate database at `db`, as the unit makes it before squid
/// starts (security_file_certgen), owned by squid's user.
pub fn certificate_db(db: &Path) {
    let init = Command::new(CERTGEN)
        .arg("-c")
        .arg("-s")
        .arg(db)
        .args(["-M", "4MB"])
        .output()
        .unwrap();
    super::assert_succeeded("security_file_certgen -c", &init);
    let chown = Command::new("chown").args(["-R", "proxy"]).arg(db).output().unwrap();
    super::assert_succeeded("chown proxy (the certificate database)", &chown);
}
