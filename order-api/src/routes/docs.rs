//! The API's browsable documentation: Swagger UI on the OpenAPI document
//! (`/api/v1/openapi.json`), at `/api/docs/`, with every file embedded in the
//! binary, so the page fetches nothing from outside the server.
//!
//! The Swagger UI files in `order-api/assets/docs/` are those of the npm
//! package `swagger-ui-dist`, byte for byte, at the version pinned in
//! `assets/docs/npm/package-lock.json`; `scripts/vendor-docs-ui.sh` re-creates
//! them (`--check` compares). `index.html` and `init.js` are this project's.
//!
//! These routes are not operations of the OpenAPI document, which describes
//! the API itself; [`ROUTES`] gives their metric labels.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};
use warp::http::StatusCode;
use warp::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// The paths served here, as `(method, path)` like [`super::ROUTES`], so
/// that metrics label them (`/api/docs/` is labelled `/api/docs`).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/docs"),
    ("GET", "/api/docs/init.js"),
    ("GET", "/api/docs/index.css"),
    ("GET", "/api/docs/swagger-ui.css"),
    ("GET", "/api/docs/swagger-ui-bundle.js"),
];

/// The page's policy: the browser itself refuses to load or send anything
/// anywhere but this server. Swagger UI needs no inline script or style;
/// `data:` images are its inline SVG icons and the empty favicon.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// How long browsers and proxies keep an asset. The page names each asset
/// with a digest of all of them, so a new build's page fetches them anew.
const ASSET_CACHE: &str = "public, max-age=86400";

/// One embedded file, served at `/api/docs/<name>`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

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

/// The page as written, with `{{version}}` where the assets' digest goes.
const PAGE_TEMPLATE: &str = include_str!("../../assets/docs/index.html");

/// The page as served.
static PAGE: LazyLock<String> =
    LazyLock::new(|| PAGE_TEMPLATE.replace("{{version}}", &assets_digest()));

/// The start of a SHA-256 of every asset: changes whenever one of them does.
fn assets_digest() -> String {
    let mut hasher = Sha256::new();
    for asset in ASSETS {
        hasher.update(asset.body);
    }
    let digest = format!("{:x}", hasher.finalize());
    digest[..16].to_owned()
}

/// `GET /api/docs/`, the page (`/api/docs` redirects there), and
/// `GET /api/docs/<asset>`; anything else under `/api/docs/` is rejected
/// as not found.
pub fn routes()
-> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let page = warp::path!("api" / "docs")
        .and(warp::get())
        .and(warp::path::full())
        .map(|path: FullPath| page(path.as_str()));
    let asset = warp::path!("api" / "docs" / String)
        .and(warp::get())
        .and_then(|name: String| async move { asset(&name).ok_or_else(warp::reject::not_found) });
    page.or(asset).unify()
}

/// The page at `…/docs/`; from `…/docs`, a redirect there. Its URLs are
/// relative to the folder, so the slash matters, and a relative `Location`
/// keeps any path prefix a gateway added.
fn page(path: &str) -> Response {
    if !path.ends_with('/') {
        let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
        let headers = response.headers_mut();
        headers.insert(LOCATION, HeaderValue::from_static("docs/"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE));
        return response;
    }
    let mut response = warp::reply::html(PAGE.as_str()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    // Revalidated on every visit: it names the current assets.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// An embedded file by name, if there is one.
fn asset(name: &str) -> Option<Response> {
    let asset = ASSETS.iter().find(|a| a.name == name)?;
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `src="…"` and `href="…"` value of the page.
    fn references(html: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for attribute in ["src=\"", "href=\""] {
            let mut rest = html;
            while let Some(start) = rest.find(attribute) {
                rest = &rest[start + attribute.len()..];
                let end = rest.find('"').expect("an unterminated attribute");
                found.push(&rest[..end]);
                rest = &rest[end..];
            }
        }
        found
    }

    #[test]
    fn the_page_references_only_local_paths() {
        let html = PAGE.as_str();
        assert!(!html.contains("{{"), "a placeholder is left: {html}");
        let refs = references(html);
        assert!(refs.len() >= 5, "{refs:?}");
        for r in refs {
            if r == "data:," {
                continue; // the empty favicon: no request at all
            }
            // Relative to /api/docs/, so that a gateway's path prefix is kept:
            // no scheme, no host, not even an absolute path.
            assert!(
                !r.contains(':') && !r.starts_with('/'),
                "{r} is not a relative path"
            );
            let path = r.split('?').next().unwrap_or(r);
            assert!(
                path == "../v1/openapi.json" || ASSETS.iter().any(|a| a.name == path),
                "{r} is not served here"
            );
        }
        // The script that starts Swagger UI names no other place either.
        let init = ASSETS.iter().find(|a| a.name == "init.js").unwrap().body;
        let init = std::str::from_utf8(init).expect("init.js is UTF-8");
        assert!(!init.contains("://") && !init.contains("http"), "{init}");
        assert!(init.contains("\"../v1/openapi.json\""), "{init}");
    }

    #[test]
    fn the_page_is_html_under_a_strict_policy_and_its_folder_is_canonical() {
        let redirect = page("/api/docs");
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[LOCATION], "docs/");

        let response = page("/api/docs/");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let policy = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.starts_with("default-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
    }

    #[test]
    fn assets_are_served_with_their_type_and_cached_for_a_day() {
        for a in ASSETS {
            let response = asset(a.name).unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[CONTENT_TYPE], a.content_type);
            assert_eq!(response.headers()[CACHE_CONTROL], "public, max-age=86400");
            assert!(!a.body.is_empty(), "{} is empty", a.name);
        }
        assert!(asset("../openapi.json").is_none());
        assert!(asset("swagger-ui.css.map").is_none());
    }

    #[test]
    fn every_docs_path_has_a_metric_label() {
        assert_eq!(super::super::template_of("GET", "/api/docs"), "/api/docs");
        assert_eq!(super::super::template_of("GET", "/api/docs/"), "/api/docs");
        for a in ASSETS {
            let path = format!("/api/docs/{}", a.name);
            assert!(ROUTES.contains(&("GET", path.as_str())), "{path}");
            assert_eq!(super::super::template_of("GET", &path), path);
        }
        assert_eq!(ROUTES.len(), ASSETS.len() + 1);
        assert_eq!(
            super::super::template_of("GET", "/api/docs/x.js"),
            "unmatched"
        );
    }
}
