//! Operator authentication: `Authorization: Bearer <api.admin_token>`,
//! compared in constant time.

use order_core::config::Secret;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Checks an `Authorization` header against the configured token.
///
/// # Errors
/// [`ApiError::Forbidden`] when no token is configured (operator endpoints
/// are off), [`ApiError::Unauthorized`] when the header is missing or wrong.
pub fn check(token: &Secret, header: Option<&str>) -> Result<(), ApiError> {
    if token.is_empty() {
        return Err(ApiError::Forbidden);
    }
    let presented = header
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_configured_token_is_forbidden_whatever_is_sent() {
        assert!(matches!(
            check(&Secret::default(), Some("Bearer x")),
            Err(ApiError::Forbidden)
        ));
    }

    #[test]
    fn the_right_token_passes_and_others_are_unauthorized() {
        let token = Secret::new("s3cret");
        assert!(check(&token, Some("Bearer s3cret")).is_ok());
        assert!(matches!(
            check(&token, Some("Bearer s3cre")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            check(&token, Some("s3cret")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(check(&token, None), Err(ApiError::Unauthorized)));
    }
}
