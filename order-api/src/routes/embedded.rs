//! Pages served from files embedded in the binary: the API docs
//! ([`super::docs`]) and the operator console ([`super::console`]). One
//! [`Site`] is one folder of files mounted at one path:
//!
//! - `GET <mount>` redirects to `<mount>/` (relative `Location`, so a
//!   gateway's path prefix is kept);
//! - `GET <mount>/` is the page, under the site's Content-Security-Policy,
//!   revalidated on every visit;
//! - `GET <mount>/<version>/<name>` is an asset, cached for a day. `<version>`
//!   is a digest of every asset of the site, so a new build's page names new
//!   URLs; any other version is not found, so a page of another build never
//!   gets this build's files under its own URLs (a rolling deploy). The
//!   version is a folder, not a query, so that the ES modules a script
//!   imports by relative path carry it too.
//!
//! The page is written with `{{version}}` where the digest goes, and names
//! its assets relatively (`{{version}}/app.js`).

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use warp::http::StatusCode;
use warp::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// JavaScript, classic or module.
pub const JS: &str = "text/javascript; charset=utf-8";
/// A stylesheet.
pub const CSS: &str = "text/css; charset=utf-8";

/// How long browsers and proxies keep an asset: its URL changes with it.
pub const ASSET_CACHE: &str = "public, max-age=86400";

/// The policy of every page served here: the browser itself refuses to
/// load or send anything anywhere but this server; no inline script or
/// style element or attribute (a script may still set an element's style,
/// as uPlot does; Swagger UI needs neither); `data:` only for images (inline
/// SVG icons, the empty favicon).
pub const SAME_ORIGIN_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file, served at `<mount>/<version>/<name>`.
#[derive(Debug)]
pub struct Asset {
    /// The file name (no slash).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// A page and its assets, mounted at one path.
#[derive(Debug)]
pub struct Site {
    /// Where it is served, without a trailing slash (`/api/docs`).
    mount: &'static str,
    /// The page as written, with `{{version}}` placeholders.
    template: &'static str,
    /// The files the page uses.
    assets: &'static [Asset],
    /// The page's Content-Security-Policy.
    policy: &'static str,
    /// Digest and page, computed on first use.
    rendered: OnceLock<(String, String)>,
}

impl Site {
    /// A site; nothing is computed until it is first served.
    #[must_use]
    pub const fn new(
        mount: &'static str,
        template: &'static str,
        assets: &'static [Asset],
        policy: &'static str,
    ) -> Self {
        Self {
            mount,
            template,
            assets,
            policy,
            rendered: OnceLock::new(),
        }
    }

    /// The start of a SHA-256 of every asset: changes whenever one does.
    pub fn version(&self) -> &str {
        &self.rendered().0
    }

    /// The page as served.
    pub fn page_html(&self) -> &str {
        &self.rendered().1
    }

    /// The embedded files.
    #[must_use]
    pub fn assets(&self) -> &'static [Asset] {
        self.assets
    }

    fn rendered(&self) -> &(String, String) {
        self.rendered.get_or_init(|| {
            let mut hasher = Sha256::new();
            for asset in self.assets {
                hasher.update(asset.name.as_bytes());
                hasher.update([0]);
                hasher.update(asset.body);
            }
            let digest = format!("{:x}", hasher.finalize());
            let version = digest[..16].to_owned();
            let page = self.template.replace("{{version}}", &version);
            (version, page)
        })
    }

    /// The response to `GET path`, if the path is this site's.
    #[must_use]
    pub fn serve(&self, path: &str) -> Option<Response> {
        let rest = path.strip_prefix(self.mount)?;
        if rest.is_empty() {
            return Some(self.redirect());
        }
        let rest = rest.strip_prefix('/')?;
        if rest.is_empty() {
            return Some(self.page());
        }
        let (version, name) = rest.split_once('/')?;
        if version != self.version() {
            return None;
        }
        let asset = self.assets.iter().find(|a| a.name == name)?;
        let mut response = asset.body.into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        Some(response)
    }

    /// From `<mount>` to `<mount>/`: the page's URLs are relative to the
    /// folder, so the slash matters.
    fn redirect(&self) -> Response {
        let folder = self.mount.rsplit('/').next().unwrap_or_default();
        let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
        let headers = response.headers_mut();
        if let Ok(location) = HeaderValue::from_str(&format!("{folder}/")) {
            headers.insert(LOCATION, location);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE));
        response
    }

    fn page(&self) -> Response {
        let mut response = warp::reply::html(self.page_html().to_owned()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(self.policy),
        );
        // Revalidated on every visit: it names the current assets.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        response
    }

    /// The site's routes; any other path under its mount is not found, and
    /// a method other than GET on one of its paths is refused (405).
    pub fn routes(
        &'static self,
    ) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
        warp::path::full()
            .and_then(move |path: FullPath| async move {
                self.serve(path.as_str())
                    .ok_or_else(warp::reject::not_found)
            })
            .and(warp::get())
    }
}

/// Checks every site must pass, called from each site's tests.
#[cfg(test)]
pub mod checks {
    use super::*;

    /// Every `src="…"` and `href="…"` value of a page.
    pub fn references(html: &str) -> Vec<&str> {
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

    /// The page names only its own assets (at the current version) and the
    /// paths in `others`, all relative, so that a gateway's path prefix is
    /// kept; it has no inline script or style.
    pub fn page_references_only_local_paths(site: &Site, others: &[&str]) {
        let html = site.page_html();
        assert!(!html.contains("{{"), "a placeholder is left: {html}");
        assert!(
            !html.contains(" style="),
            "an inline style attribute: {html}"
        );
        assert!(!html.contains("<style"), "an inline stylesheet: {html}");
        let scripts = html.matches("<script").count();
        let with_src = html.matches("<script src=\"").count()
            + html.matches("<script type=\"module\" src=\"").count();
        assert_eq!(scripts, with_src, "an inline script: {html}");
        let refs = references(html);
        assert!(refs.len() >= 2, "{refs:?}");
        for r in refs {
            if r == "data:," || r.starts_with('#') {
                continue; // the empty favicon, or a place in the page: no request
            }
            // No scheme, no host, not even an absolute path.
            assert!(
                !r.contains(':') && !r.starts_with('/'),
                "{r} is not a relative path"
            );
            if others.contains(&r) {
                continue;
            }
            let name = r
                .strip_prefix(site.version())
                .and_then(|n| n.strip_prefix('/'))
                .unwrap_or_else(|| panic!("{r} does not name the current version"));
            assert!(
                site.assets.iter().any(|a| a.name == name),
                "{r} is not served here"
            );
        }
    }

    /// The redirect, the page's type and its strict policy.
    pub fn page_is_html_under_a_strict_policy(site: &Site) {
        let redirect = site.serve(site.mount).unwrap();
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        let folder = site.mount.rsplit('/').next().unwrap();
        assert_eq!(redirect.headers()[LOCATION], format!("{folder}/").as_str());

        let response = site.serve(&format!("{}/", site.mount)).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
        let policy = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.starts_with("default-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("object-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }

    /// Every asset at its versioned URL, typed and cached for a day; nothing
    /// at another version, outside the folder or unlisted.
    pub fn assets_are_served_typed_and_cached(site: &Site) {
        for a in site.assets {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(!a.name.contains('/'), "{}", a.name);
            let path = format!("{}/{}/{}", site.mount, site.version(), a.name);
            let response = site.serve(&path).unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[CONTENT_TYPE], a.content_type);
            assert_eq!(response.headers()[CACHE_CONTROL], ASSET_CACHE);
            let stale = format!("{}/0000000000000000/{}", site.mount, a.name);
            assert!(site.serve(&stale).is_none(), "{stale}");
            let unversioned = format!("{}/{}", site.mount, a.name);
            assert!(site.serve(&unversioned).is_none(), "{unversioned}");
        }
        let v = site.version();
        for path in [
            format!("{}/{v}/../openapi.json", site.mount),
            format!("{}/{v}/nothing.js", site.mount),
            format!("{}/{v}/", site.mount),
            format!("{}x/", site.mount),
        ] {
            assert!(site.serve(&path).is_none(), "{path}");
        }
    }

    /// `routes` labels the page and every asset, and only them.
    pub fn every_path_has_a_metric_label(site: &Site, routes: &[(&str, &str)]) {
        use super::super::template_of;
        let mount = site.mount;
        assert_eq!(template_of("GET", mount), mount);
        assert_eq!(template_of("GET", &format!("{mount}/")), mount);
        for a in site.assets {
            let template = format!("{mount}/{{version}}/{}", a.name);
            assert!(routes.contains(&("GET", template.as_str())), "{template}");
            let path = format!("{mount}/{}/{}", site.version(), a.name);
            assert_eq!(template_of("GET", &path), template);
        }
        assert_eq!(routes.len(), site.assets.len() + 1);
        assert_eq!(template_of("GET", &format!("{mount}/x.js")), "unmatched");
    }
}
