//! No secret in the store.

#[allow(unused_imports)]
use super::*;

#[test]
fn no_secret_is_written_into_any_nix_file() {
    // The generated image descriptions are JSON data (no Nix bindings).
    let files = module_files();
    for file in files {
        let paths = defined_paths(&read(&file));
        for path in paths {
            let last = path.rsplit('.').next().unwrap().to_lowercase();
            assert!(
                ![
                    "privatekey",
                    "password",
                    "registration_shared_secret",
                    "macaroon_secret_key",
                    "presharedkey"
                ]
                .contains(&last.as_str()),
                "`{}` sets `{path}`: secrets are made on the host at first boot, never in the store",
                file.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
