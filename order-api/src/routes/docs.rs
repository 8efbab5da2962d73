//! The API's browsable documentation: Swagger UI on the OpenAPI document
//! (`/api/v1/openapi.json`), at `/api/docs/`, with every file embedded in the
//! binary, so the page fetches nothing from outside the server (served by
//! [`super::embedded`]).
//!
//! The Swagger UI files in `order-api/assets/docs/` are those of the npm
//! package `swagger-ui-dist`, byte for byte, at the version pinned in
//! `assets/docs/npm/package-lock.json`; `scripts/vendor-ui.sh docs`
//! re-creates them (`--check` compares). `index.html` and `init.js` are this
//! project's.
//!
//! These routes are not operations of the OpenAPI document, which describes
//! the API itself; [`ROUTES`] gives their metric labels.

use warp::reply::Response;
use warp::{Filter, Rejection};

use super::embedded::{Asset, CSS, JS, SAME_ORIGIN_POLICY, Site};

/// The paths served here, as `(method, path)` like [`super::ROUTES`], so
/// that metrics label them (`/api/docs/` is labelled `/api/docs`).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/docs"),
    ("GET", "/api/docs/{version}/init.js"),
    ("GET", "/api/docs/{version}/index.css"),
    ("GET", "/api/docs/{version}/swagger-ui.css"),
    ("GET", "/api/docs/{version}/swagger-ui-bundle.js"),
];

const ASSETS: &[Asset] = &[
    Asset {
        name: "init.js",
        content_type: JS,
        body: include_bytes!("../../assets/docs/init.js"),
    },
    Asset {
        name: "index.css",
        content_type: CSS,
        body: include_bytes!("../../assets/docs/index.css"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: CSS,
        body: include_bytes!("../../assets/docs/swagger-ui.css"),
    },
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: JS,
        body: include_bytes!("../../assets/docs/swagger-ui-bundle.js"),
    },
];

static SITE: Site = Site::new(
    "/api/docs",
    include_str!("../../assets/docs/index.html"),
    ASSETS,
    SAME_ORIGIN_POLICY,
);

/// `GET /api/docs/`, the page (`/api/docs` redirects there), and
/// `GET /api/docs/<version>/<asset>`; anything else under `/api/docs/` is
/// rejected as not found.
pub fn routes()
-> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    SITE.routes()
}

#[cfg(test)]
mod tests {
    use super::super::embedded::checks;
    use super::*;

    #[test]
    fn the_page_references_only_local_paths() {
        checks::page_references_only_local_paths(&SITE, &["../v1/openapi.json"]);
        // The script that starts Swagger UI names no other place either.
        let init = ASSETS.iter().find(|a| a.name == "init.js").unwrap().body;
        let init = std::str::from_utf8(init).expect("init.js is UTF-8");
        assert!(!init.contains("://") && !init.contains("http"), "{init}");
        assert!(init.contains("\"../v1/openapi.json\""), "{init}");
    }

    #[test]
    fn the_page_is_html_under_a_strict_policy_and_its_folder_is_canonical() {
        checks::page_is_html_under_a_strict_policy(&SITE);
    }

    #[test]
    fn assets_are_served_with_their_type_and_cached_for_a_day() {
        checks::assets_are_served_typed_and_cached(&SITE);
    }

    #[test]
    fn every_docs_path_has_a_metric_label() {
        checks::every_path_has_a_metric_label(&SITE, ROUTES);
    }
}
