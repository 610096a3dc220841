//! `JwtAuth` against real Cognito tokens: a user pool, app client and users made in moto
//! through the cognito-idp JSON API, tokens from AdminInitiateAuth, keys from the pool's
//! JWKS endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../aws/tests/support/moto.rs"]
mod moto;

use std::sync::Arc;

use api::AuthError;
use api::auth::{JwksIssuer, JwtAuth};
use serde_json::{Value, json};

struct Cognito {
    http: reqwest::Client,
    endpoint: String,
}

impl Cognito {
    async fn new() -> Cognito {
        // Starting moto blocks for a moment; keep that off the runtime's thread.
        let endpoint = tokio::task::spawn_blocking(|| moto::endpoint().to_string())
            .await
            .unwrap();
        // The client needs a TLS provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Cognito {
            http: reqwest::Client::new(),
            endpoint,
        }
    }

    /// One cognito-idp action. Unsigned: moto routes these by `X-Amz-Target` alone.
    async fn call(&self, action: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "X-Amz-Target",
                format!("AWSCognitoIdentityProviderService.{action}"),
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{action}: {status}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// A user with a permanent password; returns its `sub`.
    async fn user(&self, pool: &str, name: &str, password: &str) -> String {
        self.call(
            "AdminCreateUser",
            json!({"UserPoolId": pool, "Username": name, "MessageAction": "SUPPRESS"}),
        )
        .await;
        self.call(
            "AdminSetUserPassword",
            json!({"UserPoolId": pool, "Username": name, "Password": password, "Permanent": true}),
        )
        .await;
        let user = self
            .call(
                "AdminGetUser",
                json!({"UserPoolId": pool, "Username": name}),
            )
            .await;
        user["UserAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["Name"] == "sub")
            .and_then(|a| a["Value"].as_str())
            .unwrap()
            .to_string()
    }

    /// The user's (ID token, access token).
    async fn sign_in(
        &self,
        pool: &str,
        client: &str,
        name: &str,
        password: &str,
    ) -> (String, String) {
        let auth = self
            .call(
                "AdminInitiateAuth",
                json!({
                    "UserPoolId": pool,
                    "ClientId": client,
                    "AuthFlow": "ADMIN_USER_PASSWORD_AUTH",
                    "AuthParameters": {"USERNAME": name, "PASSWORD": password},
                }),
            )
            .await;
        let result = &auth["AuthenticationResult"];
        (
            result["IdToken"].as_str().unwrap().to_string(),
            result["AccessToken"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test]
async fn accepts_moto_cognito_tokens_and_reads_sub_and_groups() {
    let cognito = Cognito::new().await;
    let pool = cognito
        .call(
            "CreateUserPool",
            json!({"PoolName": moto::unique("imgpipe")}),
        )
        .await["UserPool"]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let client_of = |name: String| {
        let cognito = &cognito;
        let pool = pool.clone();
        async move {
            cognito
                .call(
                    "CreateUserPoolClient",
                    json!({
                        "UserPoolId": pool,
                        "ClientName": name,
                        "ExplicitAuthFlows": ["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
                    }),
                )
                .await["UserPoolClient"]["ClientId"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let client = client_of(moto::unique("web")).await;
    let other_client = client_of(moto::unique("other")).await;

    let password = "Correct-Horse-9";
    let alice = cognito.user(&pool, "alice", password).await;
    let root = cognito.user(&pool, "root", password).await;
    cognito
        .call(
            "CreateGroup",
            json!({"UserPoolId": pool, "GroupName": "admin"}),
        )
        .await;
    cognito
        .call(
            "AdminAddUserToGroup",
            json!({"UserPoolId": pool, "Username": "root", "GroupName": "admin"}),
        )
        .await;

    let issuer = JwksIssuer {
        jwks_url: format!("{}/{pool}/.well-known/jwks.json", cognito.endpoint),
        issuer: format!("https://cognito-idp.us-east-1.amazonaws.com/{pool}"),
        audiences: vec![client.clone()],
    };
    assert_eq!(
        issuer.issuer,
        JwksIssuer::cognito("us-east-1", &pool, vec![]).issuer,
        "the issuer moto signs with is the one `cognito` builds"
    );
    let auth = Arc::new(JwtAuth::new().with_jwks(issuer));

    let (id_token, access_token) = cognito.sign_in(&pool, &client, "alice", password).await;
    for token in [&id_token, &access_token] {
        let caller = auth.verify(token).await.unwrap();
        assert_eq!(caller.sub, alice);
        assert!(!caller.admin);
    }

    let (id_token, access_token) = cognito.sign_in(&pool, &client, "root", password).await;
    for token in [&id_token, &access_token] {
        let caller = auth.verify(token).await.unwrap();
        assert_eq!(caller.sub, root);
        assert!(caller.admin, "in the admin group");
    }

    // Tokens of an app client the API was not configured for are refused.
    let (id_token, access_token) = cognito
        .sign_in(&pool, &other_client, "alice", password)
        .await;
    for token in [&id_token, &access_token] {
        assert!(
            matches!(auth.verify(token).await, Err(AuthError::Invalid(_))),
            "other client"
        );
    }
}
