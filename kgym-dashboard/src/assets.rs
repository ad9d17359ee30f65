//! The embedded files: one table, each file with its content type and an
//! entity tag computed from its bytes (so browsers revalidate cheaply).

use std::sync::LazyLock;

/// One embedded file.
pub(crate) struct Asset {
    /// The path under `assets/` (and under the served asset prefix).
    pub path: &'static str,
    /// Its `Content-Type`.
    pub mime: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $mime:expr) => {
        Asset { path: $path, mime: $mime, body: include_bytes!(concat!("../assets/", $path)) }
    };
}

/// Every file under `assets/` (a test checks none is missing).
pub(crate) static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/auth.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/chart.js", JS),
    asset!("js/sse.js", JS),
    asset!("js/pages/jobs.js", JS),
    asset!("js/pages/job.js", JS),
    asset!("js/pages/results.js", JS),
    asset!("js/pages/workers.js", JS),
    asset!("js/pages/overview.js", JS),
];

/// The file at `path`, with its entity tag.
pub(crate) fn find(path: &str) -> Option<(&'static Asset, &'static str)> {
    let i = ASSETS.iter().position(|a| a.path == path)?;
    Some((&ASSETS[i], ETAGS[i].as_str()))
}

/// Entity tags in table order: FNV-1a of the bytes, quoted.
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| format!("\"{:016x}\"", fnv1a(a.body))).collect());

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn files_under(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_file_under_assets_is_embedded_once() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        files_under(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut table: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        table.sort();
        assert_eq!(table, on_disk, "assets/ and the ASSETS table differ");
    }

    #[test]
    fn nothing_is_fetched_from_another_origin() {
        // The dashboard works offline: no script, style, font or image from
        // a CDN. (SVG's namespace URI is a name, not a fetch.)
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            for (i, line) in text.lines().enumerate() {
                let l = line.replace("http://www.w3.org/2000/svg", "");
                for bad in ["http://", "https://", "//cdn", "url(//"] {
                    assert!(!l.contains(bad), "{}:{}: {bad} in {line:?}", a.path, i + 1);
                }
            }
        }
    }

    #[test]
    fn modules_import_only_embedded_files() {
        // A typo in an import path would only show in a browser; check the
        // table resolves every relative import.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            let dir = Path::new(a.path).parent().unwrap();
            // Static imports end in `from "./x.js";` (they may span lines).
            let specs = text.split(" from \"").skip(1).map(|rest| rest.split('"').next().unwrap_or_default());
            let mut n = 0;
            for spec in specs.filter(|s| s.starts_with('.')) {
                n += 1;
                let mut target = dir.to_path_buf();
                for part in spec.split('/') {
                    match part {
                        "." => {}
                        ".." => assert!(target.pop(), "{}: {spec} leaves assets/", a.path),
                        p => target.push(p),
                    }
                }
                let target = target.to_string_lossy().into_owned();
                assert!(find(&target).is_some(), "{} imports {spec} ({target}), which is not embedded", a.path);
            }
            if a.path == "js/main.js" {
                assert!(n >= 5, "main.js imports the pages: found {n} imports");
            }
        }
    }

    #[test]
    fn the_page_preloads_every_module() {
        let (shell, _) = find("index.html").unwrap();
        let shell = std::str::from_utf8(shell.body).unwrap();
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let link = format!("<link rel=\"modulepreload\" href=\"/ui/assets/{}\">", a.path);
            assert!(shell.contains(&link), "index.html does not preload {}", a.path);
        }
    }

    #[test]
    fn etags_differ_between_files_and_are_stable() {
        let (a, tag) = find("js/main.js").unwrap();
        assert_eq!(find("js/main.js").unwrap().1, tag);
        assert_ne!(find("app.css").unwrap().1, tag);
        assert_eq!(a.mime, JS);
        assert!(find("../Cargo.toml").is_none());
    }
}
