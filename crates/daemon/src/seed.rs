//! The seed controller's endpoints, with the reference's behaviour:
//! `GET /health`, `GET /specs`, `GET /spec/{identity}` (posture auth) and
//! `GET /{repo}.git/...` (see [`super::repos`]).
//!
//! Path handling follows the reference (its goldens are the oracle): the
//! query string is ignored, trailing slashes are stripped (so `/spec/` is
//! an unknown endpoint), and identities are not URL-decoded. Unlike the
//! reference, an identity that is not a plain name (`../../secrets`) is
//! refused before any path is built: it is answered like an unknown spec.

use std::sync::Arc;

use super::auth::{RepoAuth, bearer};
use super::reply::{ApiError, Reply};
use super::repos::RepoSet;
use homestak_api::v1::{HealthResponse, SpecsResponse};
use homestak_core::site::{Site, spec};

/// What the seed endpoints need.
#[derive(Debug, Clone)]
pub struct Context {
    pub site: Arc<Site>,
    /// `None`: repos not initialised (the reference's state when no repo
    /// manager was set up).
    pub repos: Option<Arc<RepoSet>>,
    pub repo_auth: RepoAuth,
}

/// Which seed endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Specs,
    /// The identity, verbatim (not decoded).
    Spec(&'a str),
    /// A path the reference hands to its repo handler (it holds `.git/` or
    /// ends with `.git`), as normalised; the handler decides whether it is
    /// a valid `/{name}.git/{file}`.
    Repo(&'a str),
    /// Nothing here; the stripped path for the message.
    Unknown(&'a str),
}

/// The reference's path normalisation: drop the query, strip trailing
/// slashes.
pub fn normalise(target: &str) -> &str {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    path.trim_end_matches('/')
}

/// Routes a normalised path.
pub fn route(path: &str) -> Route<'_> {
    match path {
        "/health" => Route::Health,
        "/specs" => Route::Specs,
        _ => {
            if let Some(identity) = path.strip_prefix("/spec/") {
                return Route::Spec(identity);
            }
            // The reference's dispatch rule, not a parse: `/a/b.git/x` is a
            // repo request too, refused by the handler as an invalid path.
            if path.contains(".git/") || path.ends_with(".git") {
                Route::Repo(path)
            } else {
                Route::Unknown(path)
            }
        }
    }
}

/// Answers a seed `GET` (or `HEAD`) for `target` (path and query as sent).
/// `None` when the path is not a seed endpoint, so the caller can try the
/// reconciler API before answering "Unknown endpoint".
pub async fn handle(ctx: &Context, target: &str, authorization: Option<&str>) -> Option<Reply> {
    Some(match route(normalise(target)) {
        Route::Health => Reply::typed(&HealthResponse::ok()),
        Route::Specs => specs_list(&ctx.site),
        Route::Spec(identity) => spec_request(&ctx.site, identity, authorization),
        Route::Repo(path) => repo_request(ctx, path, authorization).await,
        Route::Unknown(_) => return None,
    })
}

/// The reference's answer for a path no endpoint claims.
pub fn unknown_endpoint(target: &str) -> Reply {
    ApiError::bad_path(format!("Unknown endpoint: {}", normalise(target))).reply()
}

/// `GET /specs`.
pub fn specs_list(site: &Site) -> Reply {
    Reply::typed(&SpecsResponse {
        specs: site.list_specs(),
    })
}

/// `GET /spec/{identity}`: the auth check, then the resolved spec without
/// its internal `access._posture`.
pub fn spec_request(site: &Site, identity: &str, authorization: Option<&str>) -> Reply {
    match spec_auth(site, identity, authorization) {
        Ok(resolved) => Reply::json(resolved.served()),
        Err(err) => err.reply(),
    }
}

/// The spec auth check. As in the reference it resolves the whole spec
/// first, so resolution errors come before token errors: an unknown spec
/// is 404 `E200`, any other resolution problem 500. Then the posture's
/// requirement: network trust needs nothing; a token posture needs
/// `Bearer <token>`, compared in constant time (`Requirement::accepts`):
/// 401 `E300` without one, 403 `E301` with a wrong one.
pub fn spec_auth(
    site: &Site,
    identity: &str,
    authorization: Option<&str>,
) -> Result<spec::ResolvedSpec, ApiError> {
    let resolved = site
        .resolve_spec(identity)
        .map_err(|err| resolve_error(identity, &err))?;
    let requirement = site
        .required_token(resolved.posture(), identity)
        .map_err(|err| {
            tracing::warn!(identity, error = %err, "spec auth misconfigured");
            ApiError::internal(err.message())
        })?;
    if matches!(requirement, homestak_core::site::auth::Requirement::None) {
        return Ok(resolved);
    }
    match bearer(authorization) {
        None => Err(ApiError::auth_required()),
        Some(token) if requirement.accepts(Some(token)) => Ok(resolved),
        Some(_) => {
            tracing::info!(identity, "spec request with an invalid token");
            Err(ApiError::invalid_token())
        }
    }
}

fn resolve_error(identity: &str, err: &spec::Error) -> ApiError {
    match err {
        spec::Error::NotFound { .. } => ApiError::not_found(err.message()),
        // Same answer as an unknown spec: the caller learns nothing more.
        spec::Error::InvalidIdentity { .. } => {
            tracing::info!(identity, "refused a spec identity that is not a plain name");
            ApiError::not_found(format!("Spec not found: {identity}"))
        }
        other => {
            tracing::warn!(identity, error = %other, "spec cannot be resolved");
            ApiError::new(500, other.code().unwrap_or("E500"), other.message())
        }
    }
}

/// The reference's repo request handler, for `path` as given (leading
/// `/`): repos must be initialised, then the repo token, then the path must
/// be `/{name}.git/{file}` ("Invalid path" otherwise, see
/// [`RepoSet::serve`]).
pub async fn repo_request(ctx: &Context, path: &str, authorization: Option<&str>) -> Reply {
    let Some(repos) = &ctx.repos else {
        return ApiError::internal("Repos not initialized").reply();
    };
    if let Err(err) = ctx.repo_auth.check(authorization) {
        return err.reply();
    }
    repos.serve(path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_reference() {
        assert_eq!(route(normalise("/health?probe=1")), Route::Health);
        assert_eq!(route(normalise("/specs/")), Route::Specs);
        assert_eq!(route(normalise("/spec/base/")), Route::Spec("base"));
        assert_eq!(route(normalise("/spec/")), Route::Unknown("/spec"));
        assert_eq!(route(normalise("/")), Route::Unknown(""));
        assert_eq!(
            route(normalise("/spec/..%2F..%2Fsecrets")),
            Route::Spec("..%2F..%2Fsecrets")
        );
        assert_eq!(
            route(normalise("/bootstrap.git/HEAD")),
            Route::Repo("/bootstrap.git/HEAD")
        );
        assert_eq!(
            route(normalise("/bootstrap.git/")),
            Route::Repo("/bootstrap.git")
        );
        // Whatever holds `.git/` or ends with `.git` goes to the repo
        // handler, which refuses what is not `/{name}.git/{file}`.
        for path in ["/a/b.git/HEAD", "/.git/HEAD", "/x/y.git", "/a.git/b.git"] {
            assert_eq!(route(normalise(path)), Route::Repo(path), "{path}");
        }
        assert_eq!(route(normalise("/v1/status")), Route::Unknown("/v1/status"));
        assert_eq!(
            route(normalise("/a.gitx/HEAD")),
            Route::Unknown("/a.gitx/HEAD")
        );
    }
}
