//! The API's credentials as the harness holds them: the operator token and
//! the secret that signs end users' tokens.

/// The API's credentials: the operator token, and the HS256 secret its
/// end users' tokens are signed with.
#[derive(Debug, Clone)]
pub struct Auth {
    pub operator: String,
    pub secret: String,
}

impl Auth {
    pub fn new(operator: &str, run_id: &str) -> Self {
        Self {
            operator: operator.to_owned(),
            secret: format!(
                "chaos-jwt-secret-{run_id}-{}",
                uuid::Uuid::now_v7().simple()
            ),
        }
    }

    /// `Bearer <operator token>`.
    pub fn operator_bearer(&self) -> String {
        format!("Bearer {}", self.operator)
    }

    /// `Bearer <token of user>`, valid for an hour.
    pub fn bearer_of(&self, user: i64) -> String {
        let exp = chrono::Utc::now().timestamp() + 3600;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": user.to_string(), "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("an HS256 token signs");
        format!("Bearer {token}")
    }

    /// The bearer of the buyer of `order` (its stored JSON).
    pub fn user_bearer(&self, order: &serde_json::Value) -> String {
        self.bearer_of(order["user_id"].as_i64().unwrap_or(1))
    }
}
