//! `sandflow new NAME`: a plugin crate that tests, builds and runs as it is, so that an
//! author starts from a working bundle instead of assembling a manifest, a crate type and a
//! target by hand.

use crate::Failed;
use std::path::{Path, PathBuf};

/// What `sandflow new` takes.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The directory to create; its last part names the crate and its workflow
    path: PathBuf,
    /// The `sdk/` directory of a sandflow checkout, which the crate depends on [default:
    /// the one this sandflow was built from]
    #[arg(long, env = "SANDFLOW_SDK", value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// The files of a new plugin, `__NAME__` and `__SDK__` to be filled in.
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/plugin/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/plugin/lib.rs")),
    (
        ".cargo/config.toml",
        include_str!("../templates/plugin/config.toml"),
    ),
    (".gitignore", include_str!("../templates/plugin/gitignore")),
];

pub fn new(args: &NewArgs) -> Result<u8, Failed> {
    let name = crate_name(&args.path)?;
    let sdk = sdk_dir(args.sdk.as_deref())?;
    let sdk = sdk.to_str().ok_or_else(|| {
        Failed::input(format!(
            "the SDK's path {} is not UTF-8, which Cargo.toml cannot hold",
            sdk.display()
        ))
    })?;
    if args.path.exists() && !is_empty_dir(&args.path) {
        return Err(Failed::input(format!(
            "{} already exists: choose a new directory (sandflow new never overwrites)",
            args.path.display()
        )));
    }
    for (file, template) in FILES {
        let path = args.path.join(file);
        let text = template.replace("__NAME__", &name).replace("__SDK__", sdk);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        written.map_err(|e| Failed::input(format!("cannot write {}: {e}", path.display())))?;
    }
    let dir = args.path.display();
    let bundle = format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    );
    println!(
        "Created plugin `{name}` in {dir}: workflow `{name}` with tasks `name` and `greeting`.\n\
         \n\
         Next:\n  \
           cd {dir}\n  \
           cargo test        # the task bodies, natively: no wasm, no engine\n  \
           sandflow build    # the bundle, {bundle}\n  \
           sandflow run {bundle} --params '{{\"name\":\"Ada\"}}'"
    );
    Ok(0)
}

/// The crate's name: the directory's last part, if Cargo takes it as a package name.
fn crate_name(path: &Path) -> Result<String, Failed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(Failed::input(format!(
            "`{}` cannot name a crate: use ASCII letters, digits, `-` and `_`, starting \
             with a letter (e.g. `sandflow new my-workflow`)",
            path.display()
        )));
    }
    Ok(name.to_owned())
}

/// The SDK the crate depends on, as an absolute path: given, or the one beside the
/// command line's own sources (sandflow is built from a checkout; the SDK is not on
/// crates.io).
fn sdk_dir(given: Option<&Path>) -> Result<PathBuf, Failed> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let dir = given.unwrap_or(&built_from);
    let manifest = dir.join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest)
        .is_ok_and(|text| text.contains("name = \"sandflow-sdk\""));
    if !is_sdk {
        let hint = match given {
            Some(_) => "pass the `sdk/` directory of a sandflow checkout",
            None => {
                "this sandflow was built from sources no longer there: pass --sdk with \
                     the `sdk/` directory of a sandflow checkout"
            }
        };
        return Err(Failed::input(format!(
            "no sandflow-sdk crate at {}: {hint}",
            dir.display()
        )));
    }
    std::fs::canonicalize(dir)
        .map_err(|e| Failed::input(format!("cannot resolve {}: {e}", dir.display())))
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crate_is_named_by_its_directory_as_cargo_allows() {
        assert_eq!(crate_name(Path::new("a/b/my-flow_2")).unwrap(), "my-flow_2");
        for bad in ["2flow", "my flow", "", "..", "naïve", "-x"] {
            let error = crate_name(Path::new(bad)).expect_err(bad);
            assert!(error.message.contains("cannot name a crate"), "{bad}");
        }
    }

    #[test]
    fn the_sdk_must_be_sandflow_s() {
        assert!(sdk_dir(None).unwrap().join("src/testing.rs").is_file());
        let elsewhere = tempfile::tempdir().unwrap();
        let error = sdk_dir(Some(elsewhere.path())).unwrap_err();
        assert!(error.message.contains("no sandflow-sdk crate at"));
    }
}
