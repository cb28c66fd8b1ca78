//! No secret in the store.

#[allow(unused_imports)]
use super::*;

#[test]
fn no_secret_is_written_into_any_nix_file() {
    // The modules' Nix and the generated hosts' option values (the image
    // descriptions name packages only).
    let modules = module_files()
        .into_iter()
        .map(|file| (defined_paths(&read(&file)), file));
    let generated = generated_host_options()
        .into_iter()
        .map(|file| (json_option_paths(&file), file));
    for (paths, file) in modules.chain(generated) {
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
