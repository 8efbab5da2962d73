//! The operator console: a small single-page app at `/console/`, built on
//! the JSON API alone (it calls `../api/v1/…` with the operator's token),
//! with every file embedded in the binary (served by [`super::embedded`]),
//! so the page fetches nothing from outside the server.
//!
//! The app is plain ES modules and a hand-written stylesheet, no build step,
//! in `order-api/assets/console/`. Its one library, uPlot (the chart), is
//! the npm package `uplot`'s files byte for byte, at the version pinned in
//! `assets/console/npm/package-lock.json`; `scripts/vendor-ui.sh console`
//! re-creates them (`--check` compares).
//!
//! These routes are not operations of the OpenAPI document; [`ROUTES`]
//! gives their metric labels.

use warp::reply::Response;
use warp::{Filter, Rejection};

use super::embedded::{Asset, CSS, JS, SAME_ORIGIN_POLICY, Site};

/// The paths served here, as `(method, path)` like [`super::ROUTES`], so
/// that metrics label them (`/console/` is labelled `/console`).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/console"),
    ("GET", "/console/{version}/console.css"),
    ("GET", "/console/{version}/app.js"),
    ("GET", "/console/{version}/api.js"),
    ("GET", "/console/{version}/dom.js"),
    ("GET", "/console/{version}/overview.js"),
    ("GET", "/console/{version}/failures.js"),
    ("GET", "/console/{version}/orders.js"),
    ("GET", "/console/{version}/uPlot.iife.min.js"),
    ("GET", "/console/{version}/uPlot.min.css"),
];

const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: CSS,
        body: include_bytes!("../../assets/console/console.css"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_bytes!("../../assets/console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_bytes!("../../assets/console/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_bytes!("../../assets/console/dom.js"),
    },
    Asset {
        name: "overview.js",
        content_type: JS,
        body: include_bytes!("../../assets/console/overview.js"),
    },
    Asset {
        name: "failures.js",
        content_type: JS,
        body: include_bytes!("../../assets/console/failures.js"),
    },
    Asset {
        name: "orders.js",
        content_type: JS,
        body: include_bytes!("../../assets/console/orders.js"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: JS,
        body: include_bytes!("../../assets/console/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: CSS,
        body: include_bytes!("../../assets/console/uPlot.min.css"),
    },
];

static SITE: Site = Site::new(
    "/console",
    include_str!("../../assets/console/index.html"),
    ASSETS,
    SAME_ORIGIN_POLICY,
);

/// `GET /console/`, the page (`/console` redirects there), and
/// `GET /console/<version>/<asset>`; anything else under `/console/` is
/// rejected as not found.
pub fn routes()
-> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    SITE.routes()
}

#[cfg(test)]
mod tests {
    use super::super::embedded::checks;
    use super::*;

    /// The console's own files (not the vendored uPlot).
    fn own_scripts() -> impl Iterator<Item = (&'static str, &'static str)> {
        ASSETS
            .iter()
            .filter(|a| a.content_type == JS && !a.name.starts_with("uPlot"))
            .map(|a| (a.name, std::str::from_utf8(a.body).expect("UTF-8")))
    }

    #[test]
    fn the_page_references_only_local_paths() {
        checks::page_references_only_local_paths(&SITE, &["../api/docs/"]);
    }

    #[test]
    fn the_page_is_html_under_the_consoles_policy() {
        checks::page_is_html_under_a_strict_policy(&SITE);
        assert_eq!(
            SAME_ORIGIN_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
    }

    #[test]
    fn assets_are_served_with_their_type_and_cached_for_a_day() {
        checks::assets_are_served_typed_and_cached(&SITE);
    }

    #[test]
    fn every_console_path_has_a_metric_label() {
        checks::every_path_has_a_metric_label(&SITE, ROUTES);
    }

    #[test]
    fn the_scripts_name_no_other_place_and_never_write_html() {
        let mut imported = Vec::new();
        for (name, text) in own_scripts() {
            // Every URL relative to the page: no scheme, no host, no root.
            assert!(!text.contains("://"), "{name} names another place");
            assert!(
                !text.contains("fetch('/"),
                "{name} fetches an absolute path"
            );
            // Data (poison messages are an attacker's) only ever becomes
            // text: no HTML parsing sink at all.
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{name} uses {sink}");
            }
            // The token stays in the tab, never in a URL or localStorage.
            assert!(!text.contains("localStorage"), "{name} uses localStorage");
            for import in text.split("} from '").skip(1) {
                let path = import.split('\'').next().unwrap_or_default();
                imported.push(path.to_owned());
            }
        }
        // Modules import each other relatively, inside the versioned folder.
        assert!(!imported.is_empty());
        for path in imported {
            let name = path.strip_prefix("./").unwrap_or_else(|| panic!("{path}"));
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{path} is not served"
            );
        }
    }
}
